"""Shared fixtures: the real samples copied into test/data (see each SOURCE.md)."""

from pathlib import Path

import numpy as np
import pytest

from xkd_ros.ros_env import reserve_domain_id, ros_environment

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


DDS_VARIABLES = ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE")


def _joined(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in DDS_VARIABLES:
        monkeypatch.setenv(name, env[name])
    monkeypatch.delenv("ROS_LOCALHOST_ONLY", raising=False)


@pytest.fixture
def ros_env(monkeypatch):
    """A ROS domain reserved for this test (no other process uses it meanwhile), loopback discovery and the
    large-data Fast DDS profile; this process joins it (os.environ, restored afterwards) and the returned
    environment is for the subprocesses it starts."""
    with reserve_domain_id() as domain_id:
        env = ros_environment(domain_id)
        _joined(monkeypatch, env)
        yield env


@pytest.fixture(scope="module")
def module_ros_env():
    """ros_env for module-scoped fixtures (a node process shared by the tests of one file)."""
    with reserve_domain_id() as domain_id, pytest.MonkeyPatch.context() as monkeypatch:
        env = ros_environment(domain_id)
        _joined(monkeypatch, env)
        yield env


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
    assert read.lidar == original.lidar
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
