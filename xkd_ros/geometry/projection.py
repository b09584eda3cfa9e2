"""Vectorised projection of LiDAR points into every camera of a rig, with an optional occlusion test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xkd_ros.geometry.rig import Rig


@dataclass(frozen=True, eq=False)
class Projection:
    """Where each of N points lands in each of M cameras.

    uv: (M, N, 2) float32 pixel coordinates (x right, y down), NaN behind a camera.
    depth: (M, N) float32 distance along each camera's optical axis.
    mask: (M, N) bool, the point is seen: in front, inside the image, and not occluded when that was tested.
    """

    cameras: tuple[str, ...]
    uv: np.ndarray
    depth: np.ndarray
    mask: np.ndarray

    def visible(self, camera: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Indices, pixel coordinates and depths of the points that `camera` sees."""
        index = self.cameras.index(camera)
        points = np.flatnonzero(self.mask[index])
        return points, self.uv[index, points], self.depth[index, points]

    def counts(self) -> dict[str, int]:
        """Number of points each camera sees."""
        return dict(zip(self.cameras, self.mask.sum(axis=1).tolist(), strict=True))


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to points (N, 3); float32 in and out keeps big clouds cheap."""
    T = np.asarray(T, dtype=points.dtype if points.dtype == np.float64 else np.float32)
    return points @ T[:3, :3].T + T[:3, 3]


def project_points(
    points: np.ndarray,
    rig: Rig,
    min_depth: float = 0.1,
    occlusion_cell: int | None = None,
    occlusion_tolerance: float = 0.5,
) -> Projection:
    """Project LiDAR-frame points (N, >=3; x, y, z first) into all cameras of `rig`.

    With `occlusion_cell` (pixels), a point is kept only if it is within `occlusion_tolerance` metres of the
    nearest point that falls into the same cell: LiDAR and camera sit apart, so the camera must not be
    credited with points hidden behind a closer surface.
    """
    xyz = np.asarray(points)[:, :3]
    if xyz.dtype != np.float64:
        xyz = xyz.astype(np.float32, copy=False)
    n, m = len(xyz), len(rig)
    uv = np.empty((m, n, 2), dtype=np.float32)
    depth = np.empty((m, n), dtype=np.float32)
    mask = np.empty((m, n), dtype=bool)
    for i, camera in enumerate(rig):
        points_cam = transform_points(camera.T_cam_lidar, xyz)
        uv[i], mask[i] = camera.intrinsics.project(points_cam, min_depth)
        depth[i] = points_cam[:, 2]
        if occlusion_cell:
            mask[i] &= nearest_in_cell(
                uv[i], depth[i], mask[i], camera.intrinsics.width, occlusion_cell, occlusion_tolerance
            )
    return Projection(tuple(rig.names), uv, depth, mask)


def nearest_in_cell(
    uv: np.ndarray, depth: np.ndarray, mask: np.ndarray, width: int, cell: int, tolerance: float
) -> np.ndarray:
    """Mask of the masked points within `tolerance` of the nearest masked point in their pixel cell."""
    seen = np.flatnonzero(mask)
    cols = -(-width // cell)
    cell_of = (uv[seen, 1] // cell).astype(np.int64) * cols + (uv[seen, 0] // cell).astype(np.int64)
    nearest = np.full(int(cell_of.max()) + 1 if len(seen) else 0, np.inf, dtype=np.float32)
    np.minimum.at(nearest, cell_of, depth[seen])
    keep = np.zeros_like(mask)
    keep[seen] = depth[seen] <= nearest[cell_of] + tolerance
    return keep
