"""Data: the `Frame` type, readers of data sets and recordings, and `open_frames` over them.

Readers import what they need when used: the synthetic generator's ray caster (the `data` extra) never
loads on a vehicle.
"""

from xkd_ros.data.frame import Frame
from xkd_ros.data.kitti import KittiObjectDataset
from xkd_ros.data.nuscenes import NuScenesDataset, load_keyframe
from xkd_ros.data.pcd import PcdDataset
from xkd_ros.data.rellis3d import load_rellis3d_frame, load_rellis3d_rig
from xkd_ros.data.semantickitti import SemanticKittiDataset
from xkd_ros.data.sources import open_frames

__all__ = [
    "Frame",
    "KittiObjectDataset",
    "NuScenesDataset",
    "PcdDataset",
    "SemanticKittiDataset",
    "load_keyframe",
    "load_rellis3d_frame",
    "load_rellis3d_rig",
    "open_frames",
]
