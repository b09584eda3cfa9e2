"""`python -m xkd_ros.projection_demo`: the nuScenes keyframe from ROS messages to points in six cameras.

Turns the keyframe into the messages a vehicle publishes (PointCloud2, the cameras' JPEG CompressedImages,
CameraInfo), reads them back through xkd_ros.msgs, rebuilds the rig from CameraInfo plus the extrinsics in
config/nuscenes.rig.yaml, projects the scan into every camera with the occlusion test and writes a PNG.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import cv2

from xkd_ros.data import load_keyframe
from xkd_ros.data.messages import frame_to_messages
from xkd_ros.data.render import render_cameras
from xkd_ros.geometry import Rig, project_points
from xkd_ros.msgs import CvBridge, read_points_numpy, rig_from_camera_infos

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SAMPLE = REPO / "test/data/nuscenes_demo"
DEFAULT_RIG = REPO / "config/nuscenes.rig.yaml"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE, help="nuScenes keyframe folder")
    parser.add_argument(
        "--rig", type=Path, default=DEFAULT_RIG, help="rig YAML giving each camera's T_cam_lidar"
    )
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for the PNG and summary")
    parser.add_argument(
        "--occlusion",
        choices=("footprint", "cell", "none"),
        default="footprint",
        help="occlusion test (docs/geometry.md); footprint is the pipeline's",
    )
    args = parser.parse_args(argv)

    frame = load_keyframe(args.sample)
    messages = frame_to_messages(frame, image_format="jpeg")
    timings = {}

    start = time.perf_counter()
    xyz = read_points_numpy(messages.cloud, field_names=["x", "y", "z"])
    timings["read_cloud_ms"] = (time.perf_counter() - start) * 1e3

    start = time.perf_counter()
    bridge = CvBridge()
    images = {name: bridge.compressed_imgmsg_to_cv2(msg, "rgb8") for name, msg in messages.images.items()}
    timings["decode_images_ms"] = (time.perf_counter() - start) * 1e3

    calibrated = Rig.load(args.rig)  # the extrinsics and the LiDAR profile; K and D come from CameraInfo
    extrinsics = {camera.name: camera.T_cam_lidar for camera in calibrated}
    from_infos = rig_from_camera_infos(
        messages.camera_infos, extrinsics, lidar_frame=messages.cloud.header.frame_id
    )
    rig = dataclasses.replace(from_infos, lidar=calibrated.lidar)
    start = time.perf_counter()
    occlusion = None if args.occlusion == "none" else args.occlusion
    projection = project_points(xyz, rig, min_depth=0.1, occlusion=occlusion)
    timings["project_ms"] = (time.perf_counter() - start) * 1e3

    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "nuscenes_projection.png"
    cv2.imwrite(str(png), render_cameras(images, projection))
    summary = {
        "sample": frame.name,
        "points": int(messages.cloud.width * messages.cloud.height),
        "cloud_bytes": len(messages.cloud.data),
        "points_per_camera": projection.counts(),
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "image": str(png),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{frame.name}: {summary['points']} points, {len(images)} cameras")
    for name, count in summary["points_per_camera"].items():
        print(f"  {name:<16} {count:>6} points seen")
    print("  " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
