"""Rigid transforms (4x4), quaternions, pose interpolation and LiDAR-to-camera motion compensation."""

from __future__ import annotations

import numpy as np


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform, without a general matrix inverse."""
    T = np.asarray(T, dtype=np.float64)
    inverse = np.eye(4)
    inverse[:3, :3] = T[:3, :3].T
    inverse[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return inverse


def rotation_from_quaternion(q: np.ndarray) -> np.ndarray:
    """3x3 rotation of a quaternion given as (w, x, y, z); normalised first."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def quaternion_from_rotation(R: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a 3x3 rotation, with w >= 0 (Shepperd's method, stable near 180 degrees)."""
    R = np.asarray(R, dtype=np.float64)
    trace = np.trace(R)
    candidates = [trace, R[0, 0], R[1, 1], R[2, 2]]
    k = int(np.argmax(candidates))
    if k == 0:
        s = np.sqrt(1 + trace) * 2
        q = [s / 4, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif k == 1:
        s = np.sqrt(1 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        q = [(R[2, 1] - R[1, 2]) / s, s / 4, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif k == 2:
        s = np.sqrt(1 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, s / 4, (R[1, 2] + R[2, 1]) / s]
    else:
        s = np.sqrt(1 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, s / 4]
    q = np.asarray(q)
    return q if q[0] >= 0 else -q


def transform_from_quaternion(q_wxyz: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 transform [R(q) t; 0 0 0 1]."""
    T = np.eye(4)
    T[:3, :3] = rotation_from_quaternion(q_wxyz)
    T[:3, 3] = translation
    return T


def interpolate_pose(t: float, t0: float, T0: np.ndarray, t1: float, T1: np.ndarray) -> np.ndarray:
    """Pose at time t between (t0, T0) and (t1, T1): linear in translation, slerp in rotation.

    Extrapolates (at constant velocity) when t lies outside [t0, t1], which a camera exposed slightly
    after the last odometry message needs.
    """
    if t1 == t0:
        return np.asarray(T0, dtype=np.float64).copy()
    alpha = (t - t0) / (t1 - t0)
    q0, q1 = quaternion_from_rotation(T0[:3, :3]), quaternion_from_rotation(T1[:3, :3])
    if q0 @ q1 < 0:
        q1 = -q1
    angle = np.arccos(np.clip(q0 @ q1, -1.0, 1.0))
    if angle < 1e-9:
        q = q0
    else:
        q = (np.sin((1 - alpha) * angle) * q0 + np.sin(alpha * angle) * q1) / np.sin(angle)
    translation = (1 - alpha) * np.asarray(T0)[:3, 3] + alpha * np.asarray(T1)[:3, 3]
    return transform_from_quaternion(q, translation)


def compensate_lidar_to_camera(
    T_cam_lidar: np.ndarray,
    T_world_body_at_scan: np.ndarray,
    T_world_body_at_image: np.ndarray,
    T_body_lidar: np.ndarray | None = None,
) -> np.ndarray:
    """LiDAR-to-camera transform that accounts for the vehicle moving between scan time and image time.

    The nuScenes convention: lidar -> body(t_scan) -> world -> body(t_image) -> camera. `T_cam_lidar` is the
    static calibration; `T_world_body_*` are the ego poses (odometry) at the two stamps; `T_body_lidar`
    places the LiDAR on the body (identity when the poses are the LiDAR's own).
    """
    T_body_lidar = np.eye(4) if T_body_lidar is None else np.asarray(T_body_lidar, dtype=np.float64)
    motion = invert_transform(T_world_body_at_image) @ np.asarray(T_world_body_at_scan, dtype=np.float64)
    return np.asarray(T_cam_lidar) @ invert_transform(T_body_lidar) @ motion @ T_body_lidar
