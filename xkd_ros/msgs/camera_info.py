"""sensor_msgs/CameraInfo <-> CameraIntrinsics, and a rig built from CameraInfo plus extrinsics."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sensor_msgs.msg import CameraInfo

from xkd_ros.geometry import CalibrationError, CameraCalibration, CameraIntrinsics, Rig
from xkd_ros.geometry.camera import as_matrix
from xkd_ros.msgs.fields import whole_number


def _whole(value: object, field: str) -> int:
    """A size or offset as a non-negative int; hand-made and deserialised messages are not type-checked."""
    number = whole_number(value)
    if number is None:
        raise CalibrationError(f"CameraInfo.{field}: expected a non-negative integer, got {value!r}")
    return number


def camera_info_to_intrinsics(msg: CameraInfo) -> CameraIntrinsics:
    """Intrinsics of the image as published: binning and region of interest are folded into K and the size.

    Raises CalibrationError naming the CameraInfo field that is malformed (for instance an all-zero `k`,
    which a driver publishes for an uncalibrated camera).
    """
    K = as_matrix(msg.k, (3, 3), "CameraInfo.k").copy()
    P = as_matrix(msg.p, (3, 4), "CameraInfo.p").copy()
    R = as_matrix(msg.r, (3, 3), "CameraInfo.r")
    try:
        D = np.asarray(msg.d, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise CalibrationError(f"CameraInfo.d: expected numbers, got {msg.d!r}") from None
    width, height = _whole(msg.width, "width"), _whole(msg.height, "height")
    roi = msg.roi
    roi_width, roi_height = _whole(roi.width, "roi.width"), _whole(roi.height, "roi.height")
    if roi_width and roi_height and (roi_width, roi_height) != (width, height):
        x_offset, y_offset = _whole(roi.x_offset, "roi.x_offset"), _whole(roi.y_offset, "roi.y_offset")
        K[0, 2] -= x_offset
        K[1, 2] -= y_offset
        P[0, 2] -= x_offset
        P[1, 2] -= y_offset
        width, height = roi_width, roi_height
    bin_x = max(_whole(msg.binning_x, "binning_x"), 1)
    bin_y = max(_whole(msg.binning_y, "binning_y"), 1)
    K[0] /= bin_x
    K[1] /= bin_y
    P[0] /= bin_x
    P[1] /= bin_y
    try:
        return CameraIntrinsics(
            width=width // bin_x,
            height=height // bin_y,
            K=K,
            D=D,
            distortion_model=msg.distortion_model,
            R=R,
            P=P,
        )
    except CalibrationError as error:
        field, _, reason = str(error).partition(": ")
        reason = " ".join(reason.split())  # one line, also where the reason prints a matrix
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
