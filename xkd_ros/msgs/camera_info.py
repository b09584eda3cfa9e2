"""sensor_msgs/CameraInfo <-> CameraIntrinsics, and a rig built from CameraInfo plus extrinsics."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sensor_msgs.msg import CameraInfo

from xkd_ros.geometry import CalibrationError, CameraCalibration, CameraIntrinsics, Rig

_FIELD_SIZES = {"k": 9, "r": 9, "p": 12}


def camera_info_to_intrinsics(msg: CameraInfo) -> CameraIntrinsics:
    """Intrinsics of the image as published: binning and region of interest are folded into K and the size.

    Raises CalibrationError naming the CameraInfo field that is malformed (for instance an all-zero `k`,
    which a driver publishes for an uncalibrated camera).
    """
    for name, size in _FIELD_SIZES.items():
        if len(getattr(msg, name)) != size:
            raise CalibrationError(
                f"CameraInfo.{name}: expected {size} numbers, got {len(getattr(msg, name))}"
            )
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3).copy()
    P = np.asarray(msg.p, dtype=np.float64).reshape(3, 4).copy()
    width, height = int(msg.width), int(msg.height)
    roi = msg.roi
    if roi.width and roi.height and (roi.width, roi.height) != (width, height):
        K[0, 2] -= roi.x_offset
        K[1, 2] -= roi.y_offset
        P[0, 2] -= roi.x_offset
        P[1, 2] -= roi.y_offset
        width, height = int(roi.width), int(roi.height)
    bin_x, bin_y = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
    K[0] /= bin_x
    K[1] /= bin_y
    P[0] /= bin_x
    P[1] /= bin_y
    try:
        return CameraIntrinsics(
            width=width // bin_x,
            height=height // bin_y,
            K=K,
            D=np.asarray(msg.d, dtype=np.float64),
            distortion_model=msg.distortion_model,
            R=np.asarray(msg.r, dtype=np.float64),
            P=P,
        )
    except CalibrationError as error:
        field, _, reason = str(error).partition(": ")
        raise CalibrationError(f"CameraInfo.{field.lower()}: {reason}") from None


def intrinsics_to_camera_info(intrinsics: CameraIntrinsics, header: object | None = None) -> CameraInfo:
    """A CameraInfo message for `intrinsics` (no binning, full-image region of interest)."""
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = intrinsics.width, intrinsics.height
    msg.distortion_model = intrinsics.distortion_model
    msg.d = intrinsics.D.tolist()
    msg.k = intrinsics.K.ravel().tolist()
    msg.r = intrinsics.R.ravel().tolist()
    msg.p = intrinsics.P.ravel().tolist()
    return msg


def rig_from_camera_infos(
    camera_infos: Mapping[str, CameraInfo], T_cam_lidar: Mapping[str, np.ndarray], lidar_frame: str = "lidar"
) -> Rig:
    """A rig from each camera's CameraInfo and its LiDAR-to-camera extrinsics, in `camera_infos` order."""
    missing = sorted(set(camera_infos) - set(T_cam_lidar))
    if missing:
        raise CalibrationError(f"T_cam_lidar: no extrinsics for camera(s) {missing}")
    cameras = []
    for name, info in camera_infos.items():
        try:
            intrinsics = camera_info_to_intrinsics(info)
            cameras.append(CameraCalibration(name, intrinsics, T_cam_lidar[name], info.header.frame_id))
        except CalibrationError as error:
            raise CalibrationError(f"camera {name}: {error}") from None
    return Rig.from_cameras(cameras, lidar_frame)
