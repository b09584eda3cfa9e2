"""Benchmark of the shared pre-processing path (xkd_ros.preprocess.prepare_frame).

Run: `.venv/bin/python bench/bench_preprocess.py [--repeat N] [--json out/bench_preprocess.json]`.
Reports the median of N runs (default 20) for the nuScenes keyframe (34,688 points, 26,659 beyond the
HDL-32E profile's 1 m min range; six 1600x900 images; 32x512 range image from the ring channel) and the
RELLIS-3D scan (131,072 points of an Ouster OS1-64, one 1920x1200 image, 64x512 and 64x2048 range images with
rows from the reader's ring channel, and by elevation without it), with the parts that make them up. The
range image's height and row binning, the intensity scale and the min range are the frames' rigs'
(rig.lidar), the cameras those of the rig with an image.
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from timing import median_ms, write_json

from xkd_ros.data import load_keyframe, load_rellis3d_frame
from xkd_ros.geometry import Rig, project_points
from xkd_ros.preprocess import PreprocessConfig, prepare, prepare_frame, resize_image

DATA = Path(__file__).resolve().parent.parent / "test/data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results: dict[str, float] = {}

    nuscenes = load_keyframe(DATA / "nuscenes_demo")
    config = PreprocessConfig()
    results["nuscenes_prepare_ms"] = median_ms(lambda: prepare_frame(nuscenes, config), args.repeat)
    # every point valid, as pre-processing took the keyframe before the rig's min range: the same work
    every_point = Rig(
        nuscenes.rig.cameras, nuscenes.rig.lidar_frame, replace(nuscenes.rig.lidar, min_range=0)
    )
    results["nuscenes_prepare_min_range_0_ms"] = median_ms(
        lambda: prepare(nuscenes.points, nuscenes.channels, nuscenes.images, every_point, config), args.repeat
    )
    lidar_only = replace(nuscenes, images={})  # M = 0: no camera image
    results["nuscenes_lidar_only_ms"] = median_ms(lambda: prepare_frame(lidar_only, config), args.repeat)
    rig = nuscenes.compensated_rig()
    results["nuscenes_project_occlusion_ms"] = median_ms(
        lambda: project_points(nuscenes.points, rig, config.min_depth, occlusion=config.occlusion),
        args.repeat,
    )
    width, height = config.image_width, config.image_height
    results["nuscenes_resize_6_images_ms"] = median_ms(
        lambda: [resize_image(image, width, height) for image in nuscenes.images.values()], args.repeat
    )

    rellis = load_rellis3d_frame(DATA / "rellis3d_000104")
    without_ring = replace(rellis, points=rellis.points[:, :4].copy(), channels=rellis.channels[:4])
    for width in (512, 2048):
        config = PreprocessConfig(range_width=width)
        results[f"rellis_64x{width}_prepare_ms"] = median_ms(
            lambda c=config: prepare_frame(rellis, c), args.repeat
        )
    results["rellis_64x2048_by_elevation_ms"] = median_ms(
        lambda c=config: prepare_frame(without_ring, c), args.repeat
    )

    results = {k: round(v, 2) for k, v in results.items()}
    environment = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "cv2_threads": cv2.getNumThreads(),
        "machine": platform.machine(),
        "repeat": args.repeat,
    }
    for name, value in results.items():
        print(f"{name:34s} {value:8.2f}")
    print(environment)
    write_json(args.json, {"results": results, "environment": environment})


if __name__ == "__main__":
    main()
