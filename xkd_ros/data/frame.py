"""`Frame`: one LiDAR scan with the camera images around it, the one currency of training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xkd_ros.geometry import CameraCalibration, Rig, compensate_lidar_to_camera

# Channel names readers use for per-point values beyond x, y, z.
INTENSITY, RING, TIME = "intensity", "ring", "time"


@dataclass
class Frame:
    """A scan, its labels if known, and the rig's images taken around it.

    points: (N, C) float32, columns named by `channels` (x, y, z first; then e.g. intensity, ring, time,
        where time is seconds relative to `stamp`).
    labels: (N,) uint8 training ids of the class set `classes` (config/classes/<classes>.yaml), 255 = ignore.
    images: camera name -> RGB (H, W, 3) uint8, the size of that camera in `rig`.
    rig: the static calibration and the LiDAR's profile (rig.lidar: beams, ring order, intensity scale, min
        range), which pre-processing follows. Where the poses are known, `compensated_rig()` folds in the
        ego motion between the scan and each image; readers whose calibration already includes it (the
        mmdetection3d nuScenes export) leave the poses out.
    pose: T_world_lidar at `stamp`; image_poses: T_world_lidar at each image's stamp. Stamps are seconds.
    """

    points: np.ndarray
    channels: tuple[str, ...]
    rig: Rig
    images: dict[str, np.ndarray] = field(default_factory=dict)
    labels: np.ndarray | None = None
    classes: str | None = None
    stamp: float = 0.0
    image_stamps: dict[str, float] = field(default_factory=dict)
    pose: np.ndarray | None = None
    image_poses: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        where = self.name or "frame"
        if self.points.ndim != 2 or self.points.shape[1] != len(self.channels):
            raise ValueError(
                f"{where}: points: shape {self.points.shape} does not match channels {self.channels}"
            )
        if self.points.dtype != np.float32:
            raise ValueError(f"{where}: points: expected float32, got {self.points.dtype}")
        if tuple(self.channels[:3]) != ("x", "y", "z"):
            raise ValueError(f"{where}: channels: must start with x, y, z, got {self.channels}")
        if self.labels is not None:
            if self.labels.shape != (len(self.points),) or self.labels.dtype != np.uint8:
                got = f"{self.labels.shape} {self.labels.dtype}"
                raise ValueError(f"{where}: labels: expected ({len(self.points)},) uint8, got {got}")
            if self.classes is None:
                raise ValueError(f"{where}: labels given without the name of their class set (classes)")
        for camera, image in self.images.items():
            if camera not in self.rig.cameras:
                raise ValueError(f"{where}: images: camera {camera!r} is not in the rig {self.rig.names}")
            intrinsics = self.rig[camera].intrinsics
            if image.shape != (intrinsics.height, intrinsics.width, 3) or image.dtype != np.uint8:
                raise ValueError(
                    f"{where}: images.{camera}: expected ({intrinsics.height}, {intrinsics.width}, 3) uint8, "
                    f"got {image.shape} {image.dtype}"
                )

    @property
    def xyz(self) -> np.ndarray:
        return self.points[:, :3]

    def channel(self, name: str) -> np.ndarray:
        """One per-point channel by name."""
        try:
            return self.points[:, self.channels.index(name)]
        except ValueError:
            raise KeyError(f"{self.name or 'frame'}: no channel {name!r} in {self.channels}") from None

    def compensated_rig(self) -> Rig:
        """The rig with each camera's T_cam_lidar moved to its image stamp, where both poses are known."""
        if self.pose is None or not self.image_poses:
            return self.rig
        cameras = []
        for camera in self.rig:
            T = camera.T_cam_lidar
            if camera.name in self.image_poses:
                T = compensate_lidar_to_camera(T, self.pose, self.image_poses[camera.name])
            cameras.append(CameraCalibration(camera.name, camera.intrinsics, T, camera.frame_id))
        return self.rig.with_cameras(cameras)
