"""A RELLIS-3D frame: Ouster OS1-64 scan (SemanticKITTI format), labels, the Basler image and calibration.

The camera is treated as an undistorted pinhole: the plumb_bob coefficients quoted by the source repository
lower the agreement between point labels and the 2-D label image (77.3% -> 67.6%, see SOURCE.md).

The LiDAR's profile (`LIDAR_PROFILE`) is what the data shows, not the OS1 preset alone: the scans are
organised column by column (2048 columns of 64 beams, beam 0 the highest), so the reader adds the `ring`
channel the files leave out (top_down, as Ouster numbers its beams); the beams span +17.0..-16.4 deg in
even 0.53 deg steps (the first-generation OS1-64's 33.2 deg, not the 45 deg of the preset's later OS1),
which binned by elevation give each point its ring's row; the intensity is the sensor's 16-bit signal /
65536 and reaches 0.0115 (754 counts; 99th percentile 0.0085), taken as its full-strength return.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from xkd_ros.data.files import read_label_file, read_rgb, read_scan_bin
from xkd_ros.data.frame import INTENSITY, RING, Frame
from xkd_ros.geometry import CameraCalibration, CameraIntrinsics, LidarProfile, Rig
from xkd_ros.geometry.transforms import invert_transform, transform_from_quaternion

FILE_CHANNELS = ("x", "y", "z", INTENSITY)
CHANNELS = (*FILE_CHANNELS, RING)
CAMERA = "pylon_camera"
CLASSES = "rellis3d"
TRANSFORM_KEY = "os1_cloud_node-pylon_camera_node"
LIDAR_PROFILE = LidarProfile.from_dict(
    # mount_height measured on frame 000104: its labelled grass and concrete 3-10 m away lie 1.24 and 1.37 m
    # below the LiDAR (median), on gently sloping ground
    {
        "sensor": "ouster_os1_64",
        "fov_up_deg": 17.3,
        "fov_down_deg": -16.7,
        "intensity_scale": 0.0115,
        "mount_height": 1.3,
    }
)


def load_rellis3d_rig(folder: str | Path, width: int = 1920, height: int = 1200) -> Rig:
    """The one-camera rig from camera_info.txt (fx fy cx cy) and transforms.yaml (camera pose in LiDAR),
    with the OS1-64's profile `LIDAR_PROFILE`."""
    folder = Path(folder)
    fx, fy, cx, cy = (float(v) for v in (folder / "camera_info.txt").read_text().split())
    pose = yaml.safe_load((folder / "transforms.yaml").read_text())[TRANSFORM_KEY]
    q = [pose["q"][k] for k in "wxyz"]
    t = [pose["t"][k] for k in "xyz"]
    T_cam_lidar = invert_transform(transform_from_quaternion(q, t))
    intrinsics = CameraIntrinsics(width=width, height=height, K=[[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    return Rig.from_cameras(
        [CameraCalibration(CAMERA, intrinsics, T_cam_lidar)], lidar_frame="os1_lidar", lidar=LIDAR_PROFILE
    )


def read_rellis3d_scan(path: Path) -> np.ndarray:
    """(N, 5) x, y, z, intensity, ring of an organised OS1-64 scan (N = 64 x columns, column by column)."""
    scan = read_scan_bin(path, len(FILE_CHANNELS))
    if len(scan) % LIDAR_PROFILE.beams:
        raise ValueError(
            f"{path}: {len(scan)} points is not a whole number of {LIDAR_PROFILE.beams}-beam columns: "
            "not an organised OS1-64 scan"
        )
    ring = np.tile(np.arange(LIDAR_PROFILE.beams, dtype=np.float32), len(scan) // LIDAR_PROFILE.beams)
    return np.column_stack([scan, ring])


def load_rellis3d_frame(folder: str | Path, scan: str = "000104") -> Frame:
    """Scan (with its ring), labels (mapped to the rellis3d class set) and the RGB image whose name carries
    its stamp."""
    folder = Path(folder)
    points = read_rellis3d_scan(folder / f"{scan}.bin")
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
