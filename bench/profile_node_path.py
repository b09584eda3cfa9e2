"""The node's per-scan path in a loop, without DDS, for a sampling profiler: PointCloud2 and six Image (or
CompressedImage) messages of the nuScenes keyframe -> arrays -> Segmenter.segment -> labelled PointCloud2.

Run: .venv/bin/py-spy record --format raw --pid PID -o out/bench/node_path.folded -- \
         .venv/bin/python bench/profile_node_path.py [--seconds 30] [--transport raw|jpeg]
     .venv/bin/python bench/profile_summary.py out/bench/node_path.folded
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from xkd_ros.data import load_keyframe
from xkd_ros.data.messages import frame_to_messages, points_from_cloud, rgb_from_image
from xkd_ros.msgs import create_labeled_cloud
from xkd_ros.pipeline import Segmenter

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--transport", choices=("raw", "jpeg"), default="raw")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    frame = load_keyframe(REPO / "test/data/nuscenes_demo")
    segmenter = Segmenter.from_model(REPO / "models/xkd_synthetic.onnx", threads=args.threads)
    messages = frame_to_messages(frame, args.transport)
    colors = segmenter.classes.colors
    scans, end = 0, time.monotonic() + args.seconds
    while time.monotonic() < end:
        points, channels = points_from_cloud(messages.cloud, "cloud")
        images = {camera: rgb_from_image(msg) for camera, msg in messages.images.items()}
        result = segmenter.segment(points, channels, images, frame.rig)
        create_labeled_cloud(
            messages.cloud.header, points[:, :3], points[:, 3], result.labels, result.confidence, colors
        )
        scans += 1
    print(f"{scans} scans in {args.seconds:g} s: {1e3 * args.seconds / scans:.1f} ms a scan")


if __name__ == "__main__":
    main()
