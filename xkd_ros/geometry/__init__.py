"""Camera geometry: intrinsics and lens models, the rig calibration, projection and motion compensation."""

from xkd_ros.geometry.camera import DISTORTION_MODELS, CalibrationError, CameraIntrinsics
from xkd_ros.geometry.lidar import SENSOR_PRESETS, LidarProfile, intensity_mismatch
from xkd_ros.geometry.projection import (
    CameraHits,
    Projection,
    project_points,
    project_visible,
    transform_points,
)
from xkd_ros.geometry.rig import CameraCalibration, Rig
from xkd_ros.geometry.transforms import (
    compensate_lidar_to_camera,
    interpolate_pose,
    invert_transform,
    transform_from_quaternion,
)

__all__ = [
    "DISTORTION_MODELS",
    "SENSOR_PRESETS",
    "CalibrationError",
    "CameraCalibration",
    "CameraHits",
    "CameraIntrinsics",
    "LidarProfile",
    "Projection",
    "Rig",
    "compensate_lidar_to_camera",
    "intensity_mismatch",
    "interpolate_pose",
    "invert_transform",
    "project_points",
    "project_visible",
    "transform_from_quaternion",
    "transform_points",
]
