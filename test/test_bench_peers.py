"""bench/bench_peers.py compares like with like: on the nuScenes keyframe's cloud, each PointCloud2 row's two
sides (ours and sensor_msgs_py, ../shared/peers; skipped, saying why, without it) give the same values, and
its comparison notices a difference. The timings themselves are the benchmark's, never asserted here."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from conftest import DATA, REPO

from xkd_ros.data import load_keyframe
from xkd_ros.data.messages import frame_to_messages

PEERS = REPO.parent / "shared" / "peers"


@pytest.fixture(scope="module")
def bench():
    if not (PEERS / "sensor_msgs_py" / "point_cloud2.py").is_file():
        pytest.skip(f"needs ../shared/peers/sensor_msgs_py ({PEERS} is absent)")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO / "bench"))
        yield importlib.import_module("bench_peers")


@pytest.fixture(scope="module")
def cloud():
    return frame_to_messages(load_keyframe(DATA / "nuscenes_demo"), "raw").cloud


def test_every_point_cloud_row_gives_what_sensor_msgs_py_gives(bench, cloud):
    pairs = bench.cloud_pairs(bench.load_peer_point_cloud2(), cloud)
    assert len(pairs) == 7
    for pair in pairs:
        assert bench.same_values(pair.ours(), pair.peer()), f"{pair.name}: ours and sensor_msgs_py differ"


def test_the_comparison_notices_one_changed_value(bench, cloud):
    theirs = bench.load_peer_point_cloud2()
    points = np.array(theirs.read_points(cloud))
    changed = points.copy()
    changed["intensity"][-1] += 1
    assert bench.same_values(points, points.copy())
    assert not bench.same_values(points, changed)
    rebuilt = theirs.create_cloud(cloud.header, list(cloud.fields), changed)
    assert not bench.same_values(bench.ours.create_cloud(cloud.header, list(cloud.fields), points), rebuilt)
    listed = theirs.read_points_list(cloud)
    assert bench.same_values(bench.ours.read_points_list(cloud)[:3], listed[:3])
    assert not bench.same_values(bench.ours.read_points_list(cloud)[:3], listed[1:4])
