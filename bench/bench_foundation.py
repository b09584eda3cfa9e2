"""Benchmark of the foundation: PointCloud2 <-> numpy, Image/CompressedImage <-> numpy, projection.

Run: `make bench` (or `.venv/bin/python bench/bench_foundation.py [--repeat N] [--json out/bench.json]`).
Reports the median of N runs of each case; the cloud cases are compared with the per-point Python loop that
sensor_msgs_py's read_points_list and ROS 1's struct-based create_cloud amount to. Figures go in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import struct
from pathlib import Path

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, PointField
from std_msgs.msg import Header
from timing import median_ms, write_json

from xkd_ros.data import load_keyframe
from xkd_ros.geometry import CameraIntrinsics, Rig, project_points
from xkd_ros.msgs import CvBridge, create_cloud, read_points_list, read_points_numpy

DATA = Path(__file__).resolve().parent.parent / "test/data"
FIELDS = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")]
FIELDS.append(PointField(name="intensity", offset=12, datatype=PointField.FLOAT32, count=1))


def loop_read(cloud) -> list[tuple]:
    """The per-point Python path: one struct.unpack_from per point."""
    step, data, unpack = cloud.point_step, cloud.data, struct.Struct("<4f").unpack_from
    return [unpack(data, offset) for offset in range(0, cloud.width * cloud.height * step, step)]


def loop_create(points: np.ndarray) -> bytearray:
    """The per-point Python path of ROS 1's create_cloud: one struct.pack_into per point."""
    pack = struct.Struct("<4f").pack_into
    buffer = bytearray(16 * len(points))
    for offset, point in zip(range(0, len(buffer), 16), points.tolist(), strict=True):
        pack(buffer, offset, *point)
    return buffer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results: dict[str, float] = {}

    # A real organised Ouster OS1-64 scan: 64 x 2048 = 131,072 points, x y z intensity float32.
    scan = np.fromfile(DATA / "rellis3d_000104/000104.bin", dtype=np.float32).reshape(-1, 4)
    structured = scan.view([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")]).ravel()
    cloud = create_cloud(Header(frame_id="os1"), FIELDS, structured)
    results["cloud_read_numpy_ms"] = median_ms(lambda: read_points_numpy(cloud), args.repeat)
    results["cloud_read_numpy_copy_ms"] = median_ms(lambda: read_points_numpy(cloud).copy(), args.repeat)
    results["cloud_read_list_ms"] = median_ms(lambda: read_points_list(cloud), max(3, args.repeat // 5))
    results["cloud_read_loop_ms"] = median_ms(lambda: loop_read(cloud), max(3, args.repeat // 5))
    results["cloud_create_ms"] = median_ms(
        lambda: create_cloud(cloud.header, FIELDS, structured), args.repeat
    )
    results["cloud_create_unstructured_ms"] = median_ms(
        lambda: create_cloud(cloud.header, FIELDS, scan), args.repeat
    )
    results["cloud_create_loop_ms"] = median_ms(lambda: loop_create(scan), max(3, args.repeat // 5))

    # Six 1600x900 camera images of the nuScenes keyframe.
    frame = load_keyframe(DATA / "nuscenes_demo")
    bridge = CvBridge()
    rgb = list(frame.images.values())
    messages = [bridge.cv2_to_imgmsg(image, "rgb8") for image in rgb]
    jpegs = [
        CompressedImage(format="jpeg", data=p.read_bytes()) for p in sorted(DATA.glob("nuscenes_demo/*.jpg"))
    ]
    results["images6_to_msg_ms"] = median_ms(
        lambda: [bridge.cv2_to_imgmsg(i, "rgb8") for i in rgb], args.repeat
    )
    results["images6_from_msg_ms"] = median_ms(
        lambda: [bridge.imgmsg_to_cv2(m) for m in messages], args.repeat
    )
    results["images6_from_msg_bgr8_ms"] = median_ms(
        lambda: [bridge.imgmsg_to_cv2(m, "bgr8") for m in messages], args.repeat
    )
    results["jpeg6_decode_rgb8_ms"] = median_ms(
        lambda: [bridge.compressed_imgmsg_to_cv2(m, "rgb8") for m in jpegs], args.repeat
    )
    results["jpeg6_encode_ms"] = median_ms(
        lambda: [bridge.cv2_to_compressed_imgmsg(i) for i in rgb], args.repeat
    )

    # 131,072 points around the nuScenes car (its 34,688 points resampled with 5 cm jitter), six cameras.
    rng = np.random.default_rng(0)
    xyz = frame.xyz[rng.integers(0, len(frame.xyz), 131_072)] + rng.normal(0, 0.05, (131_072, 3)).astype(
        np.float32
    )
    rig = frame.rig
    distorted = Rig.from_cameras(
        [
            type(c)(
                c.name,
                CameraIntrinsics(
                    c.intrinsics.width, c.intrinsics.height, c.intrinsics.K, D=[-0.1, 0.05, 0.001, 0.001, 0.0]
                ),
                c.T_cam_lidar,
            )
            for c in rig
        ]
    )
    results["project6_ms"] = median_ms(lambda: project_points(xyz, rig), args.repeat)
    results["project6_occlusion_ms"] = median_ms(
        lambda: project_points(xyz, rig, occlusion="footprint"), args.repeat
    )
    results["project6_plumb_bob_ms"] = median_ms(lambda: project_points(xyz, distorted), args.repeat)

    results["speedup_read_vs_loop"] = results["cloud_read_loop_ms"] / results["cloud_read_numpy_copy_ms"]
    results["speedup_read_vs_read_points_list"] = (
        results["cloud_read_list_ms"] / results["cloud_read_numpy_copy_ms"]
    )
    results["speedup_create_vs_loop"] = results["cloud_create_loop_ms"] / results["cloud_create_ms"]

    print(
        f"# {platform.processor() or platform.machine()}, numpy {np.__version__}, opencv {cv2.__version__}, "
        f"median of {args.repeat}"
    )
    for name, value in results.items():
        unit = "x" if name.startswith("speedup") else "ms"
        print(f"{name:<34} {value:>10.3f} {unit}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
