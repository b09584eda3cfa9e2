"""Benchmark of the shared pre-processing path (xkd_ros.preprocess.prepare_frame).

Run: `.venv/bin/python bench/bench_preprocess.py [--repeat N] [--json out/bench_preprocess.json]`.
Reports the median of N runs (default 20) for the nuScenes keyframe (34,688 points, six 1600x900 images,
32x512 range image from the ring channel) and the RELLIS-3D scan (131,072 points of an Ouster OS1-64, one
1920x1200 image, rows by elevation at 64x512 and 64x2048), with the parts that make them up.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import cv2
import numpy as np
from timing import median_ms, write_json

from xkd_ros.data import load_keyframe, load_rellis3d_frame
from xkd_ros.geometry import project_points
from xkd_ros.preprocess import PreprocessConfig, prepare_frame, resize_image

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
    lidar_only = PreprocessConfig(cameras=())
    results["nuscenes_lidar_only_ms"] = median_ms(lambda: prepare_frame(nuscenes, lidar_only), args.repeat)
    rig = nuscenes.compensated_rig()
    results["nuscenes_project_occlusion_ms"] = median_ms(
        lambda: project_points(nuscenes.points, rig, config.min_depth, config.occlusion_cell), args.repeat
    )
    width, height = config.image_width, config.image_height
    results["nuscenes_resize_6_images_ms"] = median_ms(
        lambda: [resize_image(image, width, height) for image in nuscenes.images.values()], args.repeat
    )

    rellis = load_rellis3d_frame(DATA / "rellis3d_000104")
    cameras = tuple(rellis.rig.names)
    # Fields of view that cover the scan's elevations, -16.44 .. 17.02 degrees.
    for width in (512, 2048):
        config = PreprocessConfig(
            range_height=64, range_width=width, fov_up_deg=17.1, fov_down_deg=-16.6, cameras=cameras
        )
        results[f"rellis_64x{width}_prepare_ms"] = median_ms(
            lambda c=config: prepare_frame(rellis, c), args.repeat
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
