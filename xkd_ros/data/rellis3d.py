"""A RELLIS-3D frame: Ouster OS1-64 scan (SemanticKITTI format), labels, the Basler image and calibration.

The camera is treated as an undistorted pinhole: the plumb_bob coefficients quoted by the source repository
lower the agreement between point labels and the 2-D label image (77.3% -> 67.6%, see SOURCE.md).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from xkd_ros.data.files import read_label_file, read_rgb, read_scan_bin
from xkd_ros.data.frame import Frame
from xkd_ros.geometry import CameraCalibration, CameraIntrinsics, Rig
from xkd_ros.geometry.transforms import invert_transform, transform_from_quaternion

CHANNELS = ("x", "y", "z", "intensity")
CAMERA = "pylon_camera"
CLASSES = "rellis3d"
TRANSFORM_KEY = "os1_cloud_node-pylon_camera_node"


def load_rellis3d_rig(folder: str | Path, width: int = 1920, height: int = 1200) -> Rig:
    """The one-camera rig from camera_info.txt (fx fy cx cy) and transforms.yaml (camera pose in LiDAR)."""
    folder = Path(folder)
    fx, fy, cx, cy = (float(v) for v in (folder / "camera_info.txt").read_text().split())
    pose = yaml.safe_load((folder / "transforms.yaml").read_text())[TRANSFORM_KEY]
    q = [pose["q"][k] for k in "wxyz"]
    t = [pose["t"][k] for k in "xyz"]
    T_cam_lidar = invert_transform(transform_from_quaternion(q, t))
    intrinsics = CameraIntrinsics(width=width, height=height, K=[[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    return Rig.from_cameras([CameraCalibration(CAMERA, intrinsics, T_cam_lidar)], lidar_frame="os1_lidar")


def load_rellis3d_frame(folder: str | Path, scan: str = "000104") -> Frame:
    """Scan, labels (mapped to the rellis3d class set) and the RGB image whose name carries its stamp."""
    folder = Path(folder)
    points = read_scan_bin(folder / f"{scan}.bin", len(CHANNELS))
    labels = read_label_file(folder / f"{scan}.label", len(points), CLASSES)
    image_file = next(folder.glob(f"frame{scan}-*.jpg"))
    rgb = read_rgb(image_file)
    stamp = float(image_file.stem.split("-")[1].replace("_", "."))
    rig = load_rellis3d_rig(folder, width=rgb.shape[1], height=rgb.shape[0])
    return Frame(
        points=points,
        channels=CHANNELS,
        rig=rig,
        images={CAMERA: rgb},
        labels=labels,
        classes=CLASSES,
        stamp=stamp,
        image_stamps={CAMERA: stamp},
        name=f"rellis3d/{scan}",
    )
