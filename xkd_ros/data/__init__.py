"""Data: the `Frame` type and readers of real samples (nuScenes, RELLIS-3D)."""

from xkd_ros.data.frame import Frame
from xkd_ros.data.nuscenes import load_keyframe
from xkd_ros.data.rellis3d import load_rellis3d_frame, load_rellis3d_rig

__all__ = ["Frame", "load_keyframe", "load_rellis3d_frame", "load_rellis3d_rig"]
