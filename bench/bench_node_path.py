"""Each stage of the node's path, for a nuScenes-size scan (34,688 points, six 1600x900 cameras) and a
128-beam-size one (262,144 points): message decode, image decode, pre-processing (range image, image resize,
projection), inference, post-processing and the labelled cloud's encoding. Median of N runs, 2 threads.

projection_occlusion_ms is what pre-processing runs (`project_visible`: only the points each camera sees);
projection_occlusion_all_points_ms is `project_points` (every point in every camera, for the ratio).
The bench process keeps freed memory as segment_node does (xkd_ros.memory.keep_freed_memory: fewer page
faults per scan, docs/geometry.md); --default-malloc leaves glibc as it is, for the ratio.

Run: .venv/bin/python bench/bench_node_path.py [--repeat 20] [--default-malloc]
     [--json out/bench/node_path.json]
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from timing import median_ms, write_json

from xkd_ros.classes import load_class_set
from xkd_ros.data import load_keyframe
from xkd_ros.data.messages import frame_to_messages, points_from_cloud, rgb_from_image
from xkd_ros.geometry import project_points, project_visible
from xkd_ros.memory import keep_freed_memory
from xkd_ros.msgs import create_labeled_cloud
from xkd_ros.pipeline import Segmenter
from xkd_ros.preprocess import decode_reduction, prepare, resize_image

REPO = Path(__file__).resolve().parent.parent


def scan_of_size(frame, points: int, seed: int = 0):
    """The keyframe's points resampled to `points` with 5 cm jitter (x, y, z, intensity: no ring, so rows
    come from elevation as for any 128-beam sensor binned to the model's 32 rows)."""
    rng = np.random.default_rng(seed)
    chosen = frame.points[rng.integers(0, len(frame.points), points), :4].copy()
    chosen[:, :3] += rng.normal(0, 0.05, (points, 3)).astype(np.float32)
    return chosen, ("x", "y", "z", "intensity")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--model", type=Path, default=REPO / "models/xkd_synthetic.onnx")
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc malloc as it is")
    args = parser.parse_args()
    kept = not args.default_malloc and keep_freed_memory()
    cv2.setNumThreads(args.threads)
    frame = load_keyframe(REPO / "test/data/nuscenes_demo")
    segmenter = Segmenter.from_model(args.model, threads=args.threads)
    config, colors = segmenter.preprocess, load_class_set(segmenter.classes.name).colors
    raw = frame_to_messages(frame, "raw")
    jpeg = frame_to_messages(frame, "jpeg")
    rig = frame.rig
    pool = ThreadPoolExecutor(min(len(rig.cameras), os.cpu_count() or 1))
    results: dict[str, dict[str, float]] = {}
    for name, (points, channels) in {
        "nuscenes_34688": (frame.points, frame.channels),
        "beams128_262144": scan_of_size(frame, 262_144),
    }.items():
        cloud = raw.cloud if name.startswith("nuscenes") else None
        images = {camera: rgb_from_image(msg) for camera, msg in raw.images.items()}
        stages = {}
        if cloud is not None:
            stages["cloud_decode_ms"] = median_ms(lambda c=cloud: points_from_cloud(c, "cloud"), args.repeat)
        stages["image_decode_rgb8_ms"] = median_ms(
            lambda: [rgb_from_image(m) for m in raw.images.values()], args.repeat
        )
        stages["image_decode_jpeg_ms"] = median_ms(  # one after the other, whole: before
            lambda: [rgb_from_image(m) for m in jpeg.images.values()], max(3, args.repeat // 4)
        )
        stages["image_decode_jpeg_node_ms"] = median_ms(  # as segment_node: reduced scale, thread pool
            lambda: list(
                pool.map(
                    lambda item: rgb_from_image(item[1], decode_reduction(rig[item[0]].intrinsics, config)),
                    jpeg.images.items(),
                )
            ),
            max(3, args.repeat // 4),
        )
        stages["preprocess_lidar_only_ms"] = median_ms(
            lambda points=points, channels=channels: prepare(points, channels, {}, rig, config), args.repeat
        )
        stages["image_resize_ms"] = median_ms(
            lambda images=images: [
                resize_image(i, config.image_width, config.image_height) for i in images.values()
            ],
            args.repeat,
        )
        stages["image_resize_inter_area_ms"] = median_ms(  # what resize_image replaced, for the ratio
            lambda images=images: [
                cv2.resize(i, (config.image_width, config.image_height), interpolation=cv2.INTER_AREA)
                for i in images.values()
            ],
            args.repeat,
        )
        stages["projection_occlusion_ms"] = median_ms(
            lambda points=points: project_visible(points[:, :3], rig, occlusion=config.occlusion),
            args.repeat,
        )
        stages["projection_occlusion_all_points_ms"] = median_ms(
            lambda points=points: project_points(points[:, :3], rig, occlusion=config.occlusion),
            args.repeat,
        )
        stages["preprocess_ms"] = median_ms(
            lambda points=points, channels=channels, images=images: prepare(
                points, channels, images, rig, config
            ),
            args.repeat,
        )
        inputs = prepare(points, channels, images, rig, config).feed(segmenter.backend.input_names)
        stages["inference_ms"] = median_ms(lambda inputs=inputs: segmenter.backend.infer(inputs), args.repeat)
        result = segmenter.segment(points, channels, images, rig)
        stages["postprocess_ms"] = result.timings["postprocess_ms"]
        stages["cloud_encode_ms"] = median_ms(
            lambda points=points, result=result: create_labeled_cloud(
                raw.cloud.header, points[:, :3], points[:, 3], result.labels, result.confidence, colors
            ),
            args.repeat,
        )
        stages["all_but_inference_rgb8_ms"] = (
            stages.get("cloud_decode_ms", 0)
            + stages["image_decode_rgb8_ms"]
            + stages["preprocess_ms"]
            + stages["postprocess_ms"]
            + stages["cloud_encode_ms"]
        )
        results[name] = stages
    memory = ", freed memory kept" if kept else ", default malloc"
    print(
        f"# node path stages, {args.model.name}, {args.threads} threads{memory}, median of {args.repeat}"
        f" (JPEG: {args.repeat // 4})"
    )
    for name, stages in results.items():
        print(f"## {name}")
        for stage, value in stages.items():
            print(f"{stage:<36} {value:8.2f} ms")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
