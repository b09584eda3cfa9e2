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

from xkd_ros.geometry.camera import CameraIntrinsics
from xkd_ros.geometry.lidar import LidarProfile
from xkd_ros.geometry.rig import CameraCalibration, Rig

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


@dataclass(frozen=True, eq=False)
class CameraHits:
    """The points one camera sees (`project_visible`): indices into the cloud (ascending), pixel coordinates
    (k, 2) float32 and depths (k,) float32, the same values `Projection.visible` gives for that camera."""

    camera: str
    index: np.ndarray
    uv: np.ndarray
    depth: np.ndarray


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to points (N, 3); float32 in and out keeps big clouds cheap.

    Written out per coordinate rather than as a matrix product: BLAS spreads an (N, 3) x (3, 3) product over
    threads, which on a busy machine made a 145,000-point cloud take 30 ms instead of 1.5.
    """
    T = _transform(T, points)
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    return np.stack([_coordinate(T, i, x, y, z) for i in range(3)], axis=1)


def _transform(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """T in the points' float64, else float32."""
    return np.asarray(T, dtype=points.dtype if points.dtype == np.float64 else np.float32)


def _coordinate(T: np.ndarray, i: int, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Coordinate i of transformed points, elementwise: the same bits for a point in any subset."""
    return x * T[i, 0] + y * T[i, 1] + z * T[i, 2] + T[i, 3]


def _points(points: np.ndarray) -> np.ndarray:
    """x, y, z of (N, >=3) points, float64 kept, anything else as float32."""
    xyz = np.asarray(points)[:, :3]
    return xyz if xyz.dtype == np.float64 else xyz.astype(np.float32, copy=False)


def _occlusion_test(occlusion: str | None, occlusion_cell: int | None) -> str | None:
    if occlusion is None:
        return "cell" if occlusion_cell else None
    if occlusion not in OCCLUSION_TESTS:
        raise ValueError(f"occlusion: expected one of {OCCLUSION_TESTS} or None, got {occlusion!r}")
    if occlusion == "footprint" and occlusion_cell:
        raise ValueError("occlusion_cell: only the 'cell' occlusion test has cells")
    return occlusion


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

    Every point gets a depth and, in front of a camera, pixel coordinates; `project_visible` gives only the
    points each camera sees, the same ones, at a fraction of the cost.
    """
    occlusion = _occlusion_test(occlusion, occlusion_cell)
    xyz = _points(points)
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    n, m = len(xyz), len(rig)
    uv = np.full((m, n, 2), np.nan, dtype=np.float32)
    depth = np.empty((m, n), dtype=np.float32)
    mask = np.zeros((m, n), dtype=bool)
    hits = []
    for i, camera in enumerate(rig):
        T = _transform(camera.T_cam_lidar, xyz)
        along = _coordinate(T, 2, x, y, z)
        depth[i] = along
        front = np.flatnonzero(along > min_depth)
        fx, fy, fz = x[front], y[front], z[front]
        right, down = _coordinate(T, 0, fx, fy, fz), _coordinate(T, 1, fx, fy, fz)
        uv[i, front], seen = camera.intrinsics.project_coordinates(right, down, along[front], min_depth)
        index = front[seen]
        mask[i, index] = True
        hits.append(CameraHits(camera.name, index, uv[i, index], depth[i, index]))
    finite = int(np.count_nonzero(np.isfinite(depth[0]))) if m else 0
    for i, keep in enumerate(
        _unoccluded(xyz, hits, rig, occlusion, occlusion_cell, occlusion_tolerance, finite)
    ):
        if keep is not None:
            mask[i, hits[i].index[~keep]] = False
    return Projection(tuple(rig.names), uv, depth, mask)


def project_visible(
    points: np.ndarray,
    rig: Rig,
    min_depth: float = 0.1,
    occlusion_cell: int | None = None,
    occlusion_tolerance: float = 0.5,
    occlusion: str | None = None,
) -> list[CameraHits]:
    """The points each camera of `rig` sees, in rig order: `project_points`' mask, pixel coordinates and
    depths, bit for bit (arguments as there), without the (M, N) arrays of every point in every camera.

    Only the points in front of a camera and inside its horizontal field of view (a cheap test on one
    transformed coordinate, `_horizontal_bounds`) are projected: on a 262,144-point scan into six cameras that
    is a fifth of them.
    """
    occlusion = _occlusion_test(occlusion, occlusion_cell)
    xyz = _points(points)
    x, y, z = np.ascontiguousarray(xyz.T)  # three contiguous rows: a third of the time of strided columns
    hits, finite = [], 0
    for i, camera in enumerate(rig):
        camera_hits, along = _camera_hits(camera, x, y, z, min_depth)
        hits.append(camera_hits)
        if i == 0:
            finite = int(np.count_nonzero(np.isfinite(along.astype(np.float32, copy=False))))
    kept = _unoccluded(xyz, hits, rig, occlusion, occlusion_cell, occlusion_tolerance, finite)
    return [
        hit if keep is None else CameraHits(hit.camera, hit.index[keep], hit.uv[keep], hit.depth[keep])
        for hit, keep in zip(hits, kept, strict=True)
    ]


def _camera_hits(
    camera: CameraCalibration, x: np.ndarray, y: np.ndarray, z: np.ndarray, min_depth: float
) -> tuple[CameraHits, np.ndarray]:
    """The points (coordinates x, y, z, contiguous) inside `camera`'s image, before any occlusion test, and
    the depth of every point."""
    T = _transform(camera.T_cam_lidar, x)
    along = _coordinate(T, 2, x, y, z)
    right = _coordinate(T, 0, x, y, z)
    candidate = along > min_depth
    bounds = _horizontal_bounds(camera.intrinsics, right.dtype)
    if bounds is not None:
        candidate &= right >= along * bounds[0]
        candidate &= right <= along * bounds[1]
    candidate = np.flatnonzero(candidate)
    x, y, z, depth, right = x[candidate], y[candidate], z[candidate], along[candidate], right[candidate]
    down = _coordinate(T, 1, x, y, z)
    uv, seen = camera.intrinsics.project_coordinates(right, down, depth, min_depth)
    index = candidate[seen]
    return CameraHits(camera.name, index, uv[seen], depth[seen].astype(np.float32, copy=False)), along


def _horizontal_bounds(intrinsics: CameraIntrinsics, dtype: np.dtype) -> tuple[np.number, np.number] | None:
    """(low, high): a point in front of a pinhole camera with camera-frame x and depth d lands inside its
    image only if d * low <= x <= d * high; None for a lens with distortion or skew (no such test).

    The bounds reach a margin of a pixel (and 1e-4 of the image's width and centre) past the image's edges:
    `CameraIntrinsics.project` computes u = fx x / d + cx with a relative error of a few 1e-7, this test
    d * low in `dtype` with one rounding, both far inside that margin, so no point the projection would place
    inside the image is left out (a point left in is only projected and tested exactly).
    """
    K = intrinsics.K
    if not intrinsics.is_pinhole or K[0, 1] != 0:
        return None
    margin = 1 + 1e-4 * (intrinsics.width + abs(K[0, 2]))
    low = (-K[0, 2] - margin) / K[0, 0]
    high = (intrinsics.width - K[0, 2] + margin) / K[0, 0]
    return dtype.type(low), dtype.type(high)


def _unoccluded(
    xyz: np.ndarray,
    hits: list[CameraHits],
    rig: Rig,
    occlusion: str | None,
    occlusion_cell: int | None,
    tolerance: float,
    finite: int,
) -> list[np.ndarray | None]:
    """Per camera, which of its hits the occlusion test keeps (bool over `hits[i].index`); None: all."""
    if occlusion == "cell":
        return [
            nearest_in_cell(hit.uv, hit.depth, camera.intrinsics.width, occlusion_cell or 8, tolerance)
            for hit, camera in zip(hits, rig, strict=True)
        ]
    if occlusion == "footprint":
        seen = [
            _Seen(camera.T_cam_lidar, camera.intrinsics.K, hit) for hit, camera in zip(hits, rig, strict=True)
        ]
        return hidden_behind_footprints(xyz, seen, rig.lidar, tolerance, finite)
    return [None] * len(hits)


def nearest_in_cell(uv: np.ndarray, depth: np.ndarray, width: int, cell: int, tolerance: float) -> np.ndarray:
    """Of points inside an image (pixels uv (k, 2), depths (k,)), those within `tolerance` of the nearest
    one in their pixel cell."""
    cols = -(-width // cell)
    cell_of = (uv[:, 1] // cell).astype(np.int64) * cols + (uv[:, 0] // cell).astype(np.int64)
    nearest = np.full(int(cell_of.max()) + 1 if len(uv) else 0, np.inf, dtype=np.float32)
    np.minimum.at(nearest, cell_of, depth)
    return depth <= nearest[cell_of] + tolerance


@dataclass(frozen=True, eq=False)
class _Seen:
    """One camera's part in the footprint test: its pose and K and the points inside its image."""

    T_cam_lidar: np.ndarray
    K: np.ndarray
    hits: CameraHits


def _around(grid: np.ndarray) -> np.ndarray:
    """The minimum of each cell's 3 x 3 neighbourhood (the outermost rows and columns only partly)."""
    across = grid.copy()
    np.minimum(across[:, 1:], grid[:, :-1], out=across[:, 1:])
    np.minimum(across[:, :-1], grid[:, 1:], out=across[:, :-1])
    around = across.copy()
    np.minimum(around[1:], across[:-1], out=around[1:])
    np.minimum(around[:-1], across[1:], out=around[:-1])
    return around


def _take(a: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Columns `index` of a (3, n) array: a[:, index], which numpy does five times slower."""
    return np.take(a, index, axis=1)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of (3, n) arrays (structure of arrays: three contiguous rows are fast)."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def hidden_behind_footprints(
    xyz: np.ndarray,
    cameras: list[_Seen],
    lidar: LidarProfile,
    tolerance: float,
    finite: int,
) -> list[np.ndarray]:
    """For each camera, which of its hits it still sees (bool over them): not hidden by a nearer LiDAR
    sample's footprint. `finite`: the number of points of the sweep with finite coordinates.

    All cameras are done in one pass. Each camera's image is cut into cells of one LiDAR angular spacing
    (the beam spacing of `lidar` down, a full turn over the points per beam across); the nearest point of
    a cell is its sample. A sample's footprint spans two axes, towards the samples of the cells above or
    below and left or right (the nearer of each pair: the other may be across an edge), FOOTPRINT_SHARE of
    the way. A point is hidden when a sample of its own or the 8 neighbouring cells is nearer by more than
    `tolerance`, the point lies more than `tolerance` behind that sample's plane (the camera on the other
    side) and the line of sight to the point crosses the plane inside the footprint.
    """
    counts = [len(seen.hits.index) for seen in cameras]
    all_kept = [np.ones(count, dtype=bool) for count in counts]
    if not sum(counts):
        return all_kept
    if lidar.elevations_deg:
        spacing_down = float(np.deg2rad(np.median(-np.diff(lidar.beam_elevations_deg()))))
    else:
        spacing_down = float(np.deg2rad(lidar.fov_up_deg - lidar.fov_down_deg) / lidar.beams)
    spacing_across = 2 * np.pi * lidar.beams / max(finite, 1)

    # The cells of all cameras in one grid: each camera's block of rows, padded by two empty cells all round,
    # below the previous camera's, all blocks as wide as the widest; a cell's neighbours are +-1, +-columns.
    starts = np.cumsum([0, *counts])
    blocks = []
    for seen in cameras:
        width = max(1.0, seen.K[0, 0] * spacing_across)  # pixels; a cell is at least one
        height = max(1.0, seen.K[1, 1] * spacing_down)
        uv = seen.hits.uv
        blocks.append(((uv[:, 0] / width).astype(np.int64) + 2, (uv[:, 1] / height).astype(np.int64) + 2))
    columns = max(int(u.max(initial=0)) for u, _ in blocks) + 3
    cells, rows = [], 0
    for u, v in blocks:
        cells.append((v + rows) * columns + u)
        rows += int(v.max(initial=0)) + 3
    base = rows * columns
    cell = np.concatenate(cells)
    point = np.concatenate([seen.hits.index for seen in cameras])
    z = np.concatenate([seen.hits.depth for seen in cameras])
    # (3, n) LiDAR frame, structure of arrays
    P = np.stack([np.take(xyz[:, i], point) for i in range(3)]).astype(np.float32, copy=False)
    centres = np.stack([-seen.T_cam_lidar[:3, :3].T @ seen.T_cam_lidar[:3, 3] for seen in cameras])
    centres = centres.astype(np.float32).T  # (3, cameras): camera centres in the LiDAR frame

    nearest = np.full(base, np.inf, dtype=np.float32)
    np.minimum.at(nearest, cell, z)
    sample = np.full(base, -1, dtype=np.int64)  # per cell, the entry of its nearest point
    at_nearest = np.flatnonzero(z == nearest[cell])
    sample[cell[at_nearest]] = at_nearest

    # Candidate pairs: each point against the samples of its 3 x 3 cells that are nearer by the tolerance,
    # looked for only at the points with one (the 3 x 3 minimum of the grid is nearer): about half.
    reach = z - tolerance
    candidate = np.flatnonzero(np.take(_around(nearest.reshape(rows, columns)).ravel(), cell) < reach)
    cell_c, reach_c = cell[candidate], reach[candidate]
    pair_point, pair_cell = [], []
    for dv in (-1, 0, 1):
        for du in (-1, 0, 1):
            other = cell_c + (dv * columns + du)
            near = np.flatnonzero(np.take(nearest, other) < reach_c)
            pair_point.append(candidate[near])
            pair_cell.append(other[near])
    pair_point = np.concatenate(pair_point)
    pair_cell = np.concatenate(pair_cell)
    if not len(pair_point):
        return all_kept
    used = np.zeros(base, dtype=bool)
    used[pair_cell] = True
    used_cells = np.flatnonzero(used)
    slot = np.empty(base, dtype=np.int64)
    slot[used_cells] = np.arange(len(used_cells))
    pair_sample = slot[pair_cell]

    # Footprints of the samples in use.
    s = sample[used_cells]
    Q = _take(P, s)
    centre = _take(centres, np.searchsorted(starts[1:], s, side="right"))
    distance = np.sqrt(_dot(Q, Q))

    def half_axis(step: int, spacing: float) -> tuple[np.ndarray, np.ndarray]:
        """Towards the nearer of the two neighbouring samples along `step`, FOOTPRINT_SHARE of the way there,
        and whether there was one."""
        ahead, behind = sample[used_cells + step], sample[used_cells - step]
        forward, backward = _take(P, ahead) - Q, Q - _take(P, behind)
        size_ahead, size_behind = _dot(forward, forward), _dot(backward, backward)
        limit = np.square(distance * (spacing * MAX_STRETCH))
        ok_ahead = (ahead >= 0) & (size_ahead > 0) & (size_ahead <= limit)
        ok_behind = (behind >= 0) & (size_behind > 0) & (size_behind <= limit)
        use_ahead = ok_ahead & ~(ok_behind & (size_behind < size_ahead))
        return np.where(use_ahead, forward, backward) * FOOTPRINT_SHARE, ok_ahead | ok_behind

    along_beams, found_down = half_axis(columns, spacing_down)
    along_rows, found_across = half_axis(1, spacing_across)
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
    Pk = _take(P, pair_point)
    behind_plane = _dot(_take(normal, k), Pk) - plane[k]
    side = camera_side[k]
    behind = np.flatnonzero(np.where(side > 0, behind_plane < -tolerance, behind_plane > tolerance))
    k, Pk, side, behind_plane = k[behind], _take(Pk, behind), side[behind], behind_plane[behind]
    crossing = side / (side - behind_plane)
    centre_k = _take(centre, k)
    offset = centre_k + crossing * (Pk - centre_k) - _take(Q, k)
    inside = (np.abs(_dot(offset, _take(a_dual, k))) <= 1) & (np.abs(_dot(offset, _take(b_dual, k))) <= 1)
    kept = np.ones(len(z), dtype=bool)
    kept[pair_point[behind[inside]]] = False
    return [kept[starts[c] : starts[c + 1]] for c in range(len(cameras))]
