"""A RELLIS-3D frame: Ouster OS1-64 scan (SemanticKITTI format), labels, the Basler image and calibration.

The camera is treated as an undistorted pinhole: the plumb_bob coefficients quoted by the source repository
lower the agreement between point labels and the 2-D label image (77.3% -> 67.6%, see SOURCE.md).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from xkd_ros.data.classes import load_class_set
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
    points = np.fromfile(folder / f"{scan}.bin", dtype=np.float32).reshape(-1, len(CHANNELS))
    label_file = folder / f"{scan}.label"
    raw = np.fromfile(label_file, dtype=np.uint32) & 0xFFFF  # SemanticKITTI format: instance in the high bits
    if len(raw) != len(points):
        raise ValueError(f"{label_file}: {len(raw)} labels for the {len(points)} points of {scan}.bin")
    labels = load_class_set(CLASSES).map_raw(raw, source=str(label_file))
    image_file = next(folder.glob(f"frame{scan}-*.jpg"))
    rgb = cv2.cvtColor(cv2.imread(str(image_file), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
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
