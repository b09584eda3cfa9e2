"""A nuScenes keyframe as exported by mmdetection3d (info.json + LIDAR_TOP .pcd.bin + six camera JPEGs).

`lidar2cam` in that export already folds in the ego motion between the LiDAR and each camera stamp, so the
rig built from it projects this keyframe's points without further motion compensation.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from xkd_ros.data.frame import Frame
from xkd_ros.geometry import CameraCalibration, CameraIntrinsics, Rig

CHANNELS = ("x", "y", "z", "intensity", "ring")


def load_keyframe(folder: str | Path, decode_images: bool = True) -> Frame:
    """Read the keyframe in `folder`; images are decoded to RGB unless `decode_images` is False."""
    folder = Path(folder)
    sample = json.loads((folder / "info.json").read_text())["sample"]
    lidar_file = folder / Path(sample["lidar_points"]["lidar_path"]).name
    points = np.fromfile(lidar_file, dtype=np.float32).reshape(-1, len(CHANNELS))
    cameras, images, image_stamps = [], {}, {}
    for name, entry in sample["images"].items():
        image_file = folder / Path(entry["img_path"]).name
        bgr = cv2.imread(str(image_file), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{image_file}: missing or not an image")
        height, width = bgr.shape[:2]
        intrinsics = CameraIntrinsics(width=width, height=height, K=entry["cam2img"])
        cameras.append(CameraCalibration(name, intrinsics, entry["lidar2cam"], frame_id=name))
        if decode_images:
            images[name] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        image_stamps[name] = float(entry["timestamp"])
    return Frame(
        points=points,
        channels=CHANNELS,
        rig=Rig.from_cameras(cameras, lidar_frame="LIDAR_TOP"),
        images=images,
        stamp=float(sample["timestamp"]),
        image_stamps=image_stamps,
        name=f"nuscenes/{sample['token']}",
    )
