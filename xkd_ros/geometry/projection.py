"""Vectorised projection of LiDAR points into every camera of a rig, with an optional occlusion test.

The LiDAR and a camera sit apart, so a camera can be credited with points it cannot see: a post hides a
strip of the wall behind it from the camera, which the LiDAR sees past. Two tests remove such points:

- "footprint": each LiDAR sample stands for a small patch of surface, its footprint, reaching (nearly)
  half-way to the neighbouring samples; a point is hidden when the camera's line of sight to it passes
  through the footprint of a nearer sample and the point lies behind that patch's plane.
  The patch's plane comes from the neighbouring samples, so the road, seen at a grazing angle, hides nothing
  of itself: a farther ring of it lies on the plane of the nearer one, not behind it.
- "cell" (the earlier test): a point is hidden when it is more than a tolerance behind the nearest point in
  its square pixel cell. Cheap, but it cannot tell a grazing road from an occluder: on a KITTI-like rig it
  drops a third of the road at 10-40 m (docs/geometry.md has the measurement of both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xkd_ros.geometry.lidar import LidarProfile
from xkd_ros.geometry.rig import Rig

OCCLUSION_TESTS = ("footprint", "cell")
# A footprint reaches this share of the way to the nearer neighbouring sample on each side: a hair short of
# half-way, so that a line of sight that grazes a surface between two of its samples (real ground is not
# flat to the centimetre) does not count as one through it. Tuned by measurement (docs/geometry.md).
FOOTPRINT_SHARE = 0.45
# A neighbour farther than this many angular spacings (a surface met at 2 degrees grazing incidence) is
# taken for another surface; without one the footprint is that of a surface facing the LiDAR.
MAX_STRETCH = float(1 / np.sin(np.deg2rad(2.0)))
# Range noise along the LiDAR beam (2 cm, 2.5 sigma) is seen sideways by a camera that looks at the sample
# from another direction: footprints grow by it times the sine of the angle between the two lines of sight.
RANGE_JITTER_M = 0.05


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
    """Apply a 4x4 rigid transform to points (N, 3); float32 in and out keeps big clouds cheap.

    Written out per coordinate rather than as a matrix product: BLAS spreads an (N, 3) x (3, 3) product over
    threads, which on a busy machine made a 145,000-point cloud take 30 ms instead of 1.5.
    """
    T = np.asarray(T, dtype=points.dtype if points.dtype == np.float64 else np.float32)
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    return np.stack([x * T[i, 0] + y * T[i, 1] + z * T[i, 2] + T[i, 3] for i in range(3)], axis=1)


def project_points(
    points: np.ndarray,
    rig: Rig,
    min_depth: float = 0.1,
    occlusion_cell: int | None = None,
    occlusion_tolerance: float = 0.5,
    occlusion: str | None = None,
) -> Projection:
    """Project LiDAR-frame points (N, >=3; x, y, z first) into all cameras of `rig`.

    occlusion: "footprint" hides a point behind the surface patch of a nearer LiDAR sample (module
        docstring; the patch sizes follow `rig.lidar` and assume the points are one whole sweep);
        "cell" keeps a point only if it is within `occlusion_tolerance` of the nearest point in its
        `occlusion_cell` (pixels, default 8) square cell; None: "cell" when `occlusion_cell` is given, else
        no occlusion test.
    occlusion_tolerance: metres a point may lie behind the occluding surface (footprint) or behind the
        nearest point of its cell (cell) and still count as seen: range noise and rough ground.
    """
    if occlusion is None:
        occlusion = "cell" if occlusion_cell else None
    elif occlusion not in OCCLUSION_TESTS:
        raise ValueError(f"occlusion: expected one of {OCCLUSION_TESTS} or None, got {occlusion!r}")
    elif occlusion == "footprint" and occlusion_cell:
        raise ValueError("occlusion_cell: only the 'cell' occlusion test has cells")
    xyz = np.asarray(points)[:, :3]
    if xyz.dtype != np.float64:
        xyz = xyz.astype(np.float32, copy=False)
    n, m = len(xyz), len(rig)
    uv = np.empty((m, n, 2), dtype=np.float32)
    depth = np.empty((m, n), dtype=np.float32)
    mask = np.empty((m, n), dtype=bool)
    seen_by: list[_Seen] = []
    for i, camera in enumerate(rig):
        points_cam = transform_points(camera.T_cam_lidar, xyz)
        uv[i], mask[i] = camera.intrinsics.project(points_cam, min_depth)
        depth[i] = points_cam[:, 2]
        if occlusion == "cell":
            mask[i] &= nearest_in_cell(
                uv[i], depth[i], mask[i], camera.intrinsics.width, occlusion_cell or 8, occlusion_tolerance
            )
        elif occlusion == "footprint":
            seen_by.append(_Seen(camera.T_cam_lidar, camera.intrinsics.K, np.flatnonzero(mask[i]), uv[i]))
    if occlusion == "footprint":
        hidden = hidden_behind_footprints(xyz, depth, seen_by, rig.lidar, occlusion_tolerance)
        for i, index in enumerate(hidden):
            mask[i, index] = False
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


@dataclass(frozen=True, eq=False)
class _Seen:
    """One camera's part in the footprint test: its pose and K, the points inside its image, their pixels."""

    T_cam_lidar: np.ndarray
    K: np.ndarray
    index: np.ndarray
    uv: np.ndarray


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of (3, n) arrays (structure of arrays: three contiguous rows are fast)."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def hidden_behind_footprints(
    xyz: np.ndarray,
    depth: np.ndarray,
    cameras: list[_Seen],
    lidar: LidarProfile,
    tolerance: float,
) -> list[np.ndarray]:
    """For each camera, the indices of the points it cannot see for a nearer LiDAR sample's footprint.

    All cameras are done in one pass. Each camera's image is cut into cells of one LiDAR angular spacing
    (the beam spacing of `lidar` down, a full turn over the points per beam across); the nearest point of
    a cell is its sample. A sample's footprint spans two axes, towards the samples of the cells above or
    below and left or right (the nearer of each pair: the other may be across an edge), FOOTPRINT_SHARE of
    the way. A point is hidden when a sample of its own or the 8 neighbouring cells is nearer by more than
    `tolerance`, the point lies more than `tolerance` behind that sample's plane (the camera on the other
    side) and the line of sight to the point crosses the plane inside the footprint.
    """
    counts = [len(seen.index) for seen in cameras]
    empty = [np.zeros(0, dtype=np.int64) for _ in cameras]
    if not sum(counts):
        return empty
    finite = int(np.count_nonzero(np.isfinite(depth[0])))  # a NaN coordinate gives a NaN depth
    if lidar.elevations_deg:
        spacing_down = float(np.deg2rad(np.median(-np.diff(lidar.beam_elevations_deg()))))
    else:
        spacing_down = float(np.deg2rad(lidar.fov_up_deg - lidar.fov_down_deg) / lidar.beams)
    spacing_across = 2 * np.pi * lidar.beams / max(finite, 1)

    # The cells of all cameras in one index space, each camera's grid padded by two empty cells all round.
    cells, strides, camera_of = [], [], []
    base = 0
    for c, seen in enumerate(cameras):
        width = max(1.0, seen.K[0, 0] * spacing_across)  # pixels; a cell is at least one
        height = max(1.0, seen.K[1, 1] * spacing_down)
        uv = seen.uv[seen.index]
        u = (uv[:, 0] / width).astype(np.int64) + 2
        v = (uv[:, 1] / height).astype(np.int64) + 2
        columns = int(u.max(initial=0)) + 3
        cells.append(base + v * columns + u)
        strides.append(np.full(len(u), columns, dtype=np.int64))
        camera_of.append(np.full(len(u), c, dtype=np.int64))
        base += columns * (int(v.max(initial=0)) + 3)
    cell = np.concatenate(cells)
    stride = np.concatenate(strides)
    camera = np.concatenate(camera_of)
    point = np.concatenate([seen.index for seen in cameras])
    z = np.concatenate([depth[c, seen.index] for c, seen in enumerate(cameras)])
    P = np.ascontiguousarray(xyz[point].T, dtype=np.float32)  # (3, n) LiDAR frame, structure of arrays
    centres = np.stack([-seen.T_cam_lidar[:3, :3].T @ seen.T_cam_lidar[:3, 3] for seen in cameras])
    centres = centres.astype(np.float32).T  # (3, cameras): camera centres in the LiDAR frame

    nearest = np.full(base, np.inf, dtype=np.float32)
    np.minimum.at(nearest, cell, z)
    sample = np.full(base, -1, dtype=np.int64)  # per cell, the entry of its nearest point
    at_nearest = np.flatnonzero(z == nearest[cell])
    sample[cell[at_nearest]] = at_nearest

    # Candidate pairs: each point against the samples of its 3 x 3 cells that are nearer by the tolerance.
    pair_point, pair_cell = [], []
    for dv in (-1, 0, 1):
        for du in (-1, 0, 1):
            other = cell + dv * stride + du
            near = np.flatnonzero(nearest[other] < z - tolerance)
            pair_point.append(near)
            pair_cell.append(other[near])
    pair_point = np.concatenate(pair_point)
    pair_cell = np.concatenate(pair_cell)
    if not len(pair_point):
        return empty
    used = np.zeros(base, dtype=bool)
    used[pair_cell] = True
    used_cells = np.flatnonzero(used)
    slot = np.empty(base, dtype=np.int64)
    slot[used_cells] = np.arange(len(used_cells))
    pair_sample = slot[pair_cell]

    # Footprints of the samples in use.
    s = sample[used_cells]
    Q = P[:, s]
    centre = centres[:, camera[s]]
    distance = np.sqrt(_dot(Q, Q))
    cell_stride = stride[s]

    def half_axis(step: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
        """Towards the nearer of the two neighbouring samples along `step`, FOOTPRINT_SHARE of the way there,
        and whether there was one."""
        ahead, behind = sample[used_cells + step], sample[used_cells - step]
        forward, backward = P[:, ahead] - Q, Q - P[:, behind]
        size_ahead, size_behind = _dot(forward, forward), _dot(backward, backward)
        limit = np.square(distance * (spacing * MAX_STRETCH))
        ok_ahead = (ahead >= 0) & (size_ahead > 0) & (size_ahead <= limit)
        ok_behind = (behind >= 0) & (size_behind > 0) & (size_behind <= limit)
        use_ahead = ok_ahead & ~(ok_behind & (size_behind < size_ahead))
        return np.where(use_ahead, forward, backward) * FOOTPRINT_SHARE, ok_ahead | ok_behind

    along_beams, found_down = half_axis(cell_stride, spacing_down)
    along_rows, found_across = half_axis(np.ones_like(cell_stride), spacing_across)
    # Where no neighbour qualifies, the footprint of a surface facing the LiDAR, one angular spacing across.
    ray = Q / np.maximum(distance, 1e-9)
    flat = np.maximum(np.hypot(Q[0], Q[1]), 1e-9)
    across = np.stack([-Q[1] / flat, Q[0] / flat, np.zeros_like(flat)])
    down = _cross(across, ray)
    a = np.where(found_down, along_beams, down * (distance * (spacing_down * FOOTPRINT_SHARE)))
    b = np.where(found_across, along_rows, across * (distance * (spacing_across * FOOTPRINT_SHARE)))
    to_camera = Q - centre
    seen_apart = np.sqrt(_dot(_cross(Q, to_camera), _cross(Q, to_camera)))
    grow = RANGE_JITTER_M * seen_apart / np.maximum(distance * np.sqrt(_dot(to_camera, to_camera)), 1e-9)
    for axis in (a, b):
        size = np.sqrt(_dot(axis, axis))
        axis *= (size + grow) / np.maximum(size, 1e-9)
    normal = _cross(a, b)
    size = np.sqrt(_dot(normal, normal))
    flat_patch = ~(size > 1e-12)
    normal = np.where(flat_patch, ray, normal / np.where(flat_patch, 1, size))
    aa, bb, ab = _dot(a, a), _dot(b, b), _dot(a, b)
    det = aa * bb - ab * ab
    det = np.where(det > 1e-20, det, np.inf)
    a_dual = (bb * a - ab * b) / det  # a_dual . (alpha a + beta b) = alpha
    b_dual = (aa * b - ab * a) / det
    plane = _dot(normal, Q)
    camera_side = _dot(normal, centre) - plane

    # The pair test: behind the sample's plane, and the line of sight crosses the plane in its footprint.
    k = pair_sample
    Pk = P[:, pair_point]
    behind_plane = _dot(normal[:, k], Pk) - plane[k]
    side = camera_side[k]
    behind = np.flatnonzero(np.where(side > 0, behind_plane < -tolerance, behind_plane > tolerance))
    k, Pk, side, behind_plane = k[behind], Pk[:, behind], side[behind], behind_plane[behind]
    crossing = side / (side - behind_plane)
    offset = centre[:, k] + crossing * (Pk - centre[:, k]) - Q[:, k]
    inside = (np.abs(_dot(offset, a_dual[:, k])) <= 1) & (np.abs(_dot(offset, b_dual[:, k])) <= 1)
    hidden_entries = pair_point[behind[inside]]
    hidden = np.zeros(len(z), dtype=bool)
    hidden[hidden_entries] = True
    starts = np.cumsum([0, *counts])
    return [point[starts[c] : starts[c + 1]][hidden[starts[c] : starts[c + 1]]] for c in range(len(cameras))]
