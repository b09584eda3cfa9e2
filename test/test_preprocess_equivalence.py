"""prepare's LiDAR inputs (point_features, point_valid, point_index, range_image) are what 8aa9d85 made,
bit for bit, after issue 13's changes to _point_features and _range_pixels (invalid points zeroed through
an index, not a mask or np.where): on the nuScenes keyframe (rows from its ring), the 262,144-point scan of
bench/bench_node_path.py (rows by elevation, 23 % invalid points), an elevation table and NaN points.

The reference is a copy of those two functions at 8aa9d85 (old_*); _range_image is unchanged and fed by them.
"""

import dataclasses

import numpy as np
import pytest

from xkd_ros.geometry import LidarProfile
from xkd_ros.preprocess import POINT_FEATURES, PreprocessConfig, _range_image, prepare

CONFIG = PreprocessConfig()
CHANNELS = ("x", "y", "z", "intensity")


# ---------------------------------------------------- 8aa9d85's preprocess.py (reference)


def old_point_features(
    points: np.ndarray, intensity_column: int, lidar: LidarProfile, config: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 5) x, y, z + mount_height (height above the ground), intensity / intensity_scale, clipped range
    (zeros for invalid points); unclipped range; validity."""
    n = len(points)
    features = np.empty((n, len(POINT_FEATURES)), dtype=np.float32)
    features[:, :3] = points[:, :3]
    squared = np.einsum("ij,ij->i", features[:, :3], features[:, :3])  # NaN propagates; inf overflows to inf
    # A division, not a product with 1/scale: a 0..1 scan and the same scan in 0..255 (scale 255) give
    # bit-identical features.
    np.divide(points[:, intensity_column], np.float32(lidar.intensity_scale), out=features[:, 3])
    valid = np.isfinite(squared) & (squared > np.float32(lidar.min_range) ** 2)
    if lidar.mount_height:
        features[:, 2] += np.float32(lidar.mount_height)
    if not valid.all():
        features[~valid] = 0
        squared[~valid] = 0
    distance = np.sqrt(squared)
    np.minimum(distance, np.float32(config.max_range), out=features[:, 4])
    intensity = features[:, 3]
    intensity[~np.isfinite(intensity)] = 0
    return features, distance, valid


def old_range_pixels(
    points: np.ndarray,
    channels: tuple[str, ...],
    valid: np.ndarray,
    lidar: LidarProfile,
    config: PreprocessConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column (int64) of every point; invalid points are binned as if at the origin."""
    h, w = lidar.beams, config.range_width
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    if not valid.all():
        x, y, z = (np.where(valid, c, np.float32(0)) for c in (x, y, z))
    azimuth = np.arctan2(y, x)
    cols = np.floor((0.5 - azimuth * np.float32(0.5 / np.pi)) * np.float32(w)).astype(np.int64)
    np.clip(cols, 0, w - 1, out=cols)
    if "ring" in channels:
        ring = points[:, channels.index("ring")]
        bad = valid & ~((ring >= 0) & (ring < h))  # NaN rings included
        if bad.any():
            raise ValueError(
                f"ring: values must lie in [0, lidar.beams={h}), got {ring[bad].min()}..{ring[bad].max()} "
                f"for {int(bad.sum())} points; set the rig's lidar.beams (or lidar.sensor) to the scanner's"
            )
        if not valid.all():  # invalid points keep a usable ring, the others row 0 (clipped)
            ring = np.where(np.isfinite(ring), ring, np.float32(0))
        rows = np.floor(ring).astype(np.int64)
        if lidar.ring_order == "bottom_up":
            np.subtract(h - 1, rows, out=rows)
        np.clip(rows, 0, h - 1, out=rows)
    elif lidar.elevations_deg:
        # Nearest beam: rows are cut halfway between neighbouring beams' elevations (ascending here).
        pitch = np.arctan2(z, np.hypot(x, y))
        elevations = np.deg2rad(lidar.beam_elevations_deg()[::-1])
        cuts = ((elevations[:-1] + elevations[1:]) / 2).astype(np.float32)
        rows = (h - 1) - np.searchsorted(cuts, pitch).astype(np.int64)
    else:
        pitch = np.arctan2(z, np.hypot(x, y))
        up, fov = np.deg2rad(lidar.fov_up_deg), np.deg2rad(lidar.fov_up_deg - lidar.fov_down_deg)
        rows = np.floor((np.float32(up) - pitch) * np.float32(h / fov)).astype(np.int64)
        np.clip(rows, 0, h - 1, out=rows)
    return rows, cols


# ----------------------------------------------------------------------------------------------- the tests


def scan_of_size(frame, points: int, seed: int = 0) -> np.ndarray:
    """bench/bench_node_path.py's 128-beam-size scan: the keyframe's points resampled with 5 cm jitter."""
    rng = np.random.default_rng(seed)
    chosen = frame.points[rng.integers(0, len(frame.points), points), :4].copy()
    chosen[:, :3] += rng.normal(0, 0.05, (points, 3)).astype(np.float32)
    return chosen


def assert_lidar_inputs_as_before(points, channels, rig):
    inputs = prepare(points, channels, {}, rig, CONFIG)
    points = points.astype(np.float32)
    features, distance, valid = old_point_features(points, channels.index("intensity"), rig.lidar, CONFIG)
    rows, cols = old_range_pixels(points, channels, valid, rig.lidar, CONFIG)
    np.testing.assert_array_equal(inputs.point_features, features)
    np.testing.assert_array_equal(inputs.point_valid, valid)
    np.testing.assert_array_equal(inputs.point_index, np.column_stack([rows, cols]))
    pixel = rows * CONFIG.range_width + cols
    np.testing.assert_array_equal(
        inputs.range_image, _range_image(features, distance, valid, pixel, rig.lidar, CONFIG)
    )
    assert 0 < valid.sum() < len(valid)  # both kinds of point are there
    return inputs


def test_keyframe_with_ring_as_before(nuscenes_keyframe):
    frame = nuscenes_keyframe
    assert_lidar_inputs_as_before(frame.points, tuple(frame.channels), frame.rig)


@pytest.mark.parametrize("table", [False, True])
def test_262k_scan_by_elevation_as_before(nuscenes_keyframe, table):
    rig = nuscenes_keyframe.rig
    if table:  # rows from a beam table (nearest beam) instead of the even field of view
        lidar = dataclasses.replace(rig.lidar, elevations_deg=tuple(np.linspace(10.67, -30.67, 32)))
        rig = dataclasses.replace(rig, lidar=lidar)
    inputs = assert_lidar_inputs_as_before(scan_of_size(nuscenes_keyframe, 262_144), CHANNELS, rig)
    assert inputs.point_valid.mean() < 0.9


def test_nan_points_as_before(nuscenes_keyframe):
    points = nuscenes_keyframe.points[:, :4].copy()
    points[::13, 1] = np.nan
    points[1::17, 3] = np.nan  # intensity only: the point stays valid, its intensity becomes 0
    points[2::19] = 0  # an organised cloud's "no return"
    inputs = assert_lidar_inputs_as_before(points, CHANNELS, nuscenes_keyframe.rig)
    assert (inputs.point_features[1::17, POINT_FEATURES.index("intensity")] == 0).all()
