"""Shared fixtures: the real samples copied into test/data (see each SOURCE.md)."""

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent
NUSCENES_COUNTS = {  # SOURCE.md: depth > 0.1 m and inside 1600x900
    "CAM_FRONT": 3067,
    "CAM_FRONT_RIGHT": 3079,
    "CAM_FRONT_LEFT": 3704,
    "CAM_BACK": 4826,
    "CAM_BACK_LEFT": 4097,
    "CAM_BACK_RIGHT": 3379,
}


@pytest.fixture(scope="session")
def nuscenes_keyframe():
    from xkd_ros.data import load_keyframe

    return load_keyframe(DATA / "nuscenes_demo")


@pytest.fixture(scope="session")
def rellis_frame():
    from xkd_ros.data import load_rellis3d_frame

    return load_rellis3d_frame(DATA / "rellis3d_000104")


def assert_rigs_close(read, original, atol: float = 0.0) -> None:
    """Same cameras, frames, sizes and lens models; K, D and T_cam_lidar equal within `atol`."""
    assert read.names == original.names
    assert read.lidar_frame == original.lidar_frame
    for a, b in zip(read, original, strict=True):
        assert (a.frame_id, a.intrinsics.width, a.intrinsics.height) == (
            b.frame_id,
            b.intrinsics.width,
            b.intrinsics.height,
        )
        assert a.intrinsics.distortion_model == b.intrinsics.distortion_model
        np.testing.assert_allclose(a.intrinsics.K, b.intrinsics.K, rtol=0, atol=atol)
        np.testing.assert_allclose(a.intrinsics.D, b.intrinsics.D, rtol=0, atol=atol)
        np.testing.assert_allclose(a.T_cam_lidar, b.T_cam_lidar, rtol=0, atol=atol)
