"""project_points and project_visible (and prepare's camera inputs, built on project_visible) give what the
implementation of 8aa9d85 gave, bit for bit: on the nuScenes keyframe, on a 262,144-point scan (the
128-beam size of bench/bench_node_path.py), with each occlusion test, lens model, skew, float64 input, NaN
points and points placed on the image edges (where project_visible's horizontal pre-test must keep them).

The reference is a copy of 8aa9d85's xkd_ros/geometry/projection.py (old_*): the projection of every point
into every camera, the occlusion tests on those (M, N) arrays; CameraIntrinsics.project is unchanged.
"""

from dataclasses import dataclass

import numpy as np
import pytest

from xkd_ros.geometry import (
    CameraCalibration,
    CameraIntrinsics,
    LidarProfile,
    Rig,
    project_points,
    project_visible,
)
from xkd_ros.geometry.projection import FOOTPRINT_SHARE, MAX_STRETCH, OCCLUSION_TESTS, RANGE_JITTER_M
from xkd_ros.preprocess import PreprocessConfig, prepare

OCCLUSIONS = ({"occlusion": "footprint"}, {"occlusion_cell": 8}, {"occlusion": "cell"}, {})


# ---------------------------------------------------- 8aa9d85's projection.py (reference)


def old_transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    T = np.asarray(T, dtype=points.dtype if points.dtype == np.float64 else np.float32)
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    return np.stack([x * T[i, 0] + y * T[i, 1] + z * T[i, 2] + T[i, 3] for i in range(3)], axis=1)


def old_project_points(
    points: np.ndarray,
    rig: Rig,
    min_depth: float = 0.1,
    occlusion_cell: int | None = None,
    occlusion_tolerance: float = 0.5,
    occlusion: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8aa9d85: uv, depth, mask of every point in every camera."""
    if occlusion is None:
        occlusion = "cell" if occlusion_cell else None
    elif occlusion not in OCCLUSION_TESTS:
        raise ValueError("occlusion")
    elif occlusion == "footprint" and occlusion_cell:
        raise ValueError("occlusion_cell: only the 'cell' occlusion test has cells")
    xyz = np.asarray(points)[:, :3]
    if xyz.dtype != np.float64:
        xyz = xyz.astype(np.float32, copy=False)
    n, m = len(xyz), len(rig)
    uv = np.empty((m, n, 2), dtype=np.float32)
    depth = np.empty((m, n), dtype=np.float32)
    mask = np.empty((m, n), dtype=bool)
    seen_by: list[OldSeen] = []
    for i, camera in enumerate(rig):
        points_cam = old_transform_points(camera.T_cam_lidar, xyz)
        uv[i], mask[i] = camera.intrinsics.project(points_cam, min_depth)
        depth[i] = points_cam[:, 2]
        if occlusion == "cell":
            mask[i] &= old_nearest_in_cell(
                uv[i], depth[i], mask[i], camera.intrinsics.width, occlusion_cell or 8, occlusion_tolerance
            )
        elif occlusion == "footprint":
            seen_by.append(OldSeen(camera.T_cam_lidar, camera.intrinsics.K, np.flatnonzero(mask[i]), uv[i]))
    if occlusion == "footprint":
        hidden = old_hidden_behind_footprints(xyz, depth, seen_by, rig.lidar, occlusion_tolerance)
        for i, index in enumerate(hidden):
            mask[i, index] = False
    return uv, depth, mask


def old_nearest_in_cell(
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
class OldSeen:
    """One camera's part in the footprint test: its pose and K, the points inside its image, their pixels."""

    T_cam_lidar: np.ndarray
    K: np.ndarray
    index: np.ndarray
    uv: np.ndarray


def old_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of (3, n) arrays (structure of arrays: three contiguous rows are fast)."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def old_cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def old_hidden_behind_footprints(
    xyz: np.ndarray,
    depth: np.ndarray,
    cameras: list[OldSeen],
    lidar: LidarProfile,
    tolerance: float,
) -> list[np.ndarray]:
    """8aa9d85: per camera, the indices of the points hidden by a nearer sample's footprint."""
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
    distance = np.sqrt(old_dot(Q, Q))
    cell_stride = stride[s]

    def half_axis(step: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
        """Towards the nearer of the two neighbouring samples along `step`, FOOTPRINT_SHARE of the way there,
        and whether there was one."""
        ahead, behind = sample[used_cells + step], sample[used_cells - step]
        forward, backward = P[:, ahead] - Q, Q - P[:, behind]
        size_ahead, size_behind = old_dot(forward, forward), old_dot(backward, backward)
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
    down = old_cross(across, ray)
    a = np.where(found_down, along_beams, down * (distance * (spacing_down * FOOTPRINT_SHARE)))
    b = np.where(found_across, along_rows, across * (distance * (spacing_across * FOOTPRINT_SHARE)))
    to_camera = Q - centre
    seen_apart = np.sqrt(old_dot(old_cross(Q, to_camera), old_cross(Q, to_camera)))
    grow = RANGE_JITTER_M * seen_apart / np.maximum(distance * np.sqrt(old_dot(to_camera, to_camera)), 1e-9)
    for axis in (a, b):
        size = np.sqrt(old_dot(axis, axis))
        axis *= (size + grow) / np.maximum(size, 1e-9)
    normal = old_cross(a, b)
    size = np.sqrt(old_dot(normal, normal))
    flat_patch = ~(size > 1e-12)
    normal = np.where(flat_patch, ray, normal / np.where(flat_patch, 1, size))
    aa, bb, ab = old_dot(a, a), old_dot(b, b), old_dot(a, b)
    det = aa * bb - ab * ab
    det = np.where(det > 1e-20, det, np.inf)
    a_dual = (bb * a - ab * b) / det  # a_dual . (alpha a + beta b) = alpha
    b_dual = (aa * b - ab * a) / det
    plane = old_dot(normal, Q)
    camera_side = old_dot(normal, centre) - plane

    # The pair test: behind the sample's plane, and the line of sight crosses the plane in its footprint.
    k = pair_sample
    Pk = P[:, pair_point]
    behind_plane = old_dot(normal[:, k], Pk) - plane[k]
    side = camera_side[k]
    behind = np.flatnonzero(np.where(side > 0, behind_plane < -tolerance, behind_plane > tolerance))
    k, Pk, side, behind_plane = k[behind], Pk[:, behind], side[behind], behind_plane[behind]
    crossing = side / (side - behind_plane)
    offset = centre[:, k] + crossing * (Pk - centre[:, k]) - Q[:, k]
    inside = (np.abs(old_dot(offset, a_dual[:, k])) <= 1) & (np.abs(old_dot(offset, b_dual[:, k])) <= 1)
    hidden_entries = pair_point[behind[inside]]
    hidden = np.zeros(len(z), dtype=bool)
    hidden[hidden_entries] = True
    starts = np.cumsum([0, *counts])
    return [point[starts[c] : starts[c + 1]][hidden[starts[c] : starts[c + 1]]] for c in range(len(cameras))]


# ----------------------------------------------------------------------------------------------- the tests


def scan_of_size(frame, points: int, seed: int = 0) -> np.ndarray:
    """bench/bench_node_path.py's 128-beam-size scan: the keyframe's points resampled with 5 cm jitter."""
    rng = np.random.default_rng(seed)
    chosen = frame.points[rng.integers(0, len(frame.points), points), :4].copy()
    chosen[:, :3] += rng.normal(0, 0.05, (points, 3)).astype(np.float32)
    return chosen


@pytest.fixture(scope="module")
def big_scan(nuscenes_keyframe):
    return scan_of_size(nuscenes_keyframe, 262_144)


def assert_same_as_8aa9d85(points, rig, **options):
    uv, depth, mask = old_project_points(points, rig, **options)
    projection = project_points(points, rig, **options)
    np.testing.assert_array_equal(projection.uv, uv)  # NaN where NaN
    np.testing.assert_array_equal(projection.depth, depth)
    np.testing.assert_array_equal(projection.mask, mask)
    hits = project_visible(points, rig, **options)
    assert [hit.camera for hit in hits] == rig.names
    for i, hit in enumerate(hits):
        index = np.flatnonzero(mask[i])
        np.testing.assert_array_equal(hit.index, index)
        np.testing.assert_array_equal(hit.uv, uv[i, index])
        np.testing.assert_array_equal(hit.depth, depth[i, index])
        assert hit.uv.dtype == hit.depth.dtype == np.float32
    return mask


@pytest.mark.parametrize("options", OCCLUSIONS)
def test_keyframe_as_before(nuscenes_keyframe, options):
    mask = assert_same_as_8aa9d85(nuscenes_keyframe.points, nuscenes_keyframe.rig, **options)
    assert mask.sum() > 20_000


@pytest.mark.parametrize("options", OCCLUSIONS[:2])
def test_262k_scan_as_before(nuscenes_keyframe, big_scan, options):
    mask = assert_same_as_8aa9d85(big_scan, nuscenes_keyframe.rig, **options)
    assert mask.sum() > 150_000


def test_float64_and_nan_points_as_before(nuscenes_keyframe):
    points = nuscenes_keyframe.points[:, :3].astype(np.float64)
    points[::97] = np.nan
    points[1::89, 1] = np.nan
    for options in OCCLUSIONS:
        assert_same_as_8aa9d85(points, nuscenes_keyframe.rig, **options)


def camera(name, yaw_deg, K, model="plumb_bob", D=(), width=1280, height=720, lift=0.0):
    yaw = np.deg2rad(yaw_deg)
    # camera optical frame (z forward, x right, y down) looking along yaw in the LiDAR frame (x fwd, z up)
    forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    R = np.stack([right, [0.0, 0.0, -1.0], forward])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ np.array([0.5, 0.2, lift])
    intrinsics = CameraIntrinsics(width=width, height=height, K=K, D=list(D), distortion_model=model)
    return CameraCalibration(name, intrinsics, T)


def odd_rig():
    K = [[800.0, 0, 640], [0, 810.0, 360], [0, 0, 1]]
    return Rig.from_cameras(
        [
            camera("pinhole", 0, K),
            camera("skewed", 60, [[800.0, 3.0, 600], [0, 810.0, 380], [0, 0, 1]]),
            camera("plumb_bob", 120, K, "plumb_bob", [-0.3, 0.12, 0.001, -0.002, -0.02]),
            camera("fisheye", 180, K, "equidistant", [0.05, -0.01, 0.003, -0.001]),
            camera("off_centre", 240, [[400.0, 0, -200], [0, 400.0, -100], [0, 0, 1]], width=300, height=200),
            camera("far_below", 300, K, lift=-40.0),  # 40 m below the cloud: sees nothing of it
        ],
        lidar=LidarProfile(beams=64, fov_up_deg=3.0, fov_down_deg=-25.0),
    )


def test_lens_models_skew_and_a_blind_camera_as_before():
    rng = np.random.default_rng(1)
    points = rng.uniform([-60, -60, -3], [60, 60, 4], (60_000, 3)).astype(np.float32)
    for options in OCCLUSIONS:
        mask = assert_same_as_8aa9d85(points, odd_rig(), **options)
        assert mask[:-1].any(axis=1).all()
        assert not mask[-1].any()


def test_points_on_the_image_edges_are_kept_as_before():
    # Points that project onto the first and last pixel columns (and a hair outside) of rotated cameras,
    # near and far: where project_visible's horizontal pre-test must not drop what the projection keeps.
    rig = odd_rig().with_cameras([odd_rig()["pinhole"], odd_rig()["off_centre"]])
    rng = np.random.default_rng(2)
    points = []
    for calibration in rig:
        intrinsics, n = calibration.intrinsics, 20_000
        u = rng.choice(
            [0.0, 1e-4, -1e-4, intrinsics.width - 1e-4, intrinsics.width, intrinsics.width + 1e-4], n
        )
        u = u + rng.normal(0, 1e-3, n) * rng.integers(0, 2, n)
        v = rng.uniform(0, intrinsics.height, n)
        depth = np.exp(rng.uniform(np.log(0.1), np.log(300.0), n))
        K = intrinsics.K
        y = (v - K[1, 2]) / K[1, 1]
        x = (u - K[0, 2] - K[0, 1] * y) / K[0, 0]
        in_camera = np.stack([x * depth, y * depth, depth, np.ones(n)])
        points.append((np.linalg.inv(calibration.T_cam_lidar) @ in_camera)[:3].T)
    points = np.concatenate(points).astype(np.float32)
    mask = assert_same_as_8aa9d85(points, rig)
    assert 0.2 < mask.any(axis=0).mean() < 0.8  # both sides of the edges are there


def test_empty_and_single_point_clouds_as_before():
    for points in (np.empty((0, 3), np.float32), np.array([[10.0, 0.0, 0.0]], np.float32)):
        for options in OCCLUSIONS:
            assert_same_as_8aa9d85(points, odd_rig(), **options)


def old_camera_inputs(points, valid, rig, config):
    """8aa9d85's point_uv and point_visible (preprocess._cameras) from its projection."""
    n, m = len(points), len(rig)
    point_uv = np.zeros((n, m, 2), dtype=np.float32)
    point_visible = np.zeros((n, m), dtype=np.float32)
    subset = np.flatnonzero(valid)
    uv, _, mask = old_project_points(
        points[subset, :3], rig, config.min_depth, None, config.occlusion_tolerance, config.occlusion
    )
    for j, calibration in enumerate(rig):
        seen = np.flatnonzero(mask[j])
        target = subset[seen]
        width, height = calibration.intrinsics.width, calibration.intrinsics.height
        point_uv[target, j, 0] = (uv[j, seen, 0] + np.float32(0.5)) * np.float32(2 / width) - 1
        point_uv[target, j, 1] = (uv[j, seen, 1] + np.float32(0.5)) * np.float32(2 / height) - 1
        point_visible[target, j] = 1
    return point_uv, point_visible


def test_prepare_camera_inputs_as_before(nuscenes_keyframe, big_scan):
    frame, config = nuscenes_keyframe, PreprocessConfig()
    images = {name: np.zeros((450, 800, 3), np.uint8) for name in frame.rig.names}
    for points in (frame.points[:, :4], big_scan):
        inputs = prepare(points, ("x", "y", "z", "intensity"), images, frame.rig, config)
        point_uv, point_visible = old_camera_inputs(points, inputs.point_valid, frame.rig, config)
        np.testing.assert_array_equal(inputs.point_uv, point_uv)
        np.testing.assert_array_equal(inputs.point_visible, point_visible)
        assert point_visible.sum() > 0.5 * len(points)
    assert not inputs.point_valid.all()  # the last scan has invalid points: they keep their place
