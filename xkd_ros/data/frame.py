"""`Frame`: one LiDAR scan with the camera images around it, the one currency of training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xkd_ros.geometry import Rig


@dataclass
class Frame:
    """A scan, its per-point labels if known, and the rig's images (RGB, HxWx3 uint8) keyed by camera name.

    `points` is (N, C) float32 whose columns are named by `channels` (x, y, z first). Stamps are seconds.
    """

    points: np.ndarray
    channels: tuple[str, ...]
    rig: Rig
    images: dict[str, np.ndarray] = field(default_factory=dict)
    labels: np.ndarray | None = None
    stamp: float = 0.0
    image_stamps: dict[str, float] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        if self.points.ndim != 2 or self.points.shape[1] != len(self.channels):
            raise ValueError(f"points: shape {self.points.shape} does not match channels {self.channels}")
        if self.channels[:3] != ("x", "y", "z"):
            raise ValueError(f"channels: must start with x, y, z, got {self.channels}")
        if self.labels is not None and len(self.labels) != len(self.points):
            raise ValueError(f"labels: {len(self.labels)} labels for {len(self.points)} points")
        unknown = sorted(set(self.images) - set(self.rig.names))
        if unknown:
            raise ValueError(f"images: camera(s) {unknown} are not in the rig {self.rig.names}")

    @property
    def xyz(self) -> np.ndarray:
        return self.points[:, :3]
