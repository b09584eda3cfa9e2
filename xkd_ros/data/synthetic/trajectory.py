"""The ego vehicle's drive along the street: an analytic pose for any instant, so that every LiDAR firing and
every camera exposure can be placed exactly where the car was at that moment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EgoTrajectory:
    """Constant speed along world +x in a lane at `lane_y`, swaying sideways by `weave_m` with `period_s`.

    The sway turns the car (yaw follows the direction of travel), so poses differ in rotation as well as
    translation. Poses are T_world_lidar: the LiDAR at `height_m` above the road, x forward, z up.
    """

    speed_mps: float
    lane_y: float
    weave_m: float
    period_s: float
    phase: float
    height_m: float

    def poses(self, seconds: np.ndarray) -> np.ndarray:
        """T_world_lidar (n, 4, 4) at `seconds` (n,) since the drive started."""
        seconds = np.asarray(seconds, dtype=np.float64).reshape(-1)
        omega = 2 * np.pi / self.period_s
        angle = omega * seconds + self.phase
        lateral_speed = self.weave_m * omega * np.cos(angle)
        yaw = np.arctan2(lateral_speed, self.speed_mps)
        cos, sin = np.cos(yaw), np.sin(yaw)
        T = np.zeros((len(seconds), 4, 4))
        T[:, 0, 0], T[:, 0, 1], T[:, 1, 0], T[:, 1, 1] = cos, -sin, sin, cos
        T[:, 2, 2] = T[:, 3, 3] = 1.0
        T[:, 0, 3] = self.speed_mps * seconds
        T[:, 1, 3] = self.lane_y + self.weave_m * np.sin(angle)
        T[:, 2, 3] = self.height_m
        return T

    def pose(self, seconds: float) -> np.ndarray:
        """T_world_lidar (4, 4) at one instant."""
        return self.poses(np.array([seconds]))[0]
