"""Data: the `Frame` type, class sets, readers of data sets and recordings, and `open_frames` over them.

Readers import what they need when used: the synthetic generator's ray caster (the `data` extra) never
loads on a vehicle.
"""

from xkd_ros.data.classes import IGNORE_INDEX, ClassSet, load_class_set
from xkd_ros.data.frame import Frame
from xkd_ros.data.kitti import KittiObjectDataset
from xkd_ros.data.nuscenes import NuScenesDataset, load_keyframe
from xkd_ros.data.pcd import PcdDataset
from xkd_ros.data.rellis3d import load_rellis3d_frame, load_rellis3d_rig
from xkd_ros.data.semantickitti import SemanticKittiDataset
from xkd_ros.data.sources import open_frames

__all__ = [
    "IGNORE_INDEX",
    "ClassSet",
    "Frame",
    "KittiObjectDataset",
    "NuScenesDataset",
    "PcdDataset",
    "SemanticKittiDataset",
    "load_class_set",
    "load_keyframe",
    "load_rellis3d_frame",
    "load_rellis3d_rig",
    "open_frames",
]
