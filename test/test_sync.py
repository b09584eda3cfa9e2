"""Scan-referenced multi-camera collector, driven by a simulated clock (fast and deterministic)."""

import pytest

from xkd_ros.sync import Collector, SyncConfig, SyncedSet

# Camera stamp minus LiDAR stamp of the committed nuScenes keyframe (test/data/nuscenes_demo, file names).
NUSCENES_OFFSETS = {
    "CAM_FRONT": -0.035491,
    "CAM_FRONT_RIGHT": -0.027612,
    "CAM_FRONT_LEFT": -0.043107,
    "CAM_BACK": -0.010426,
    "CAM_BACK_LEFT": -0.000528,
    "CAM_BACK_RIGHT": -0.020058,
}
NUSCENES = SyncConfig(cameras=tuple(NUSCENES_OFFSETS), camera_offsets=NUSCENES_OFFSETS)
TWO = SyncConfig(cameras=("left", "right"))


def feed(collector: Collector, scan: float, now: float, cameras=("left", "right"), offset=0.0) -> None:
    """A scan and one on-stamp image per camera, all arriving at ``now``."""
    for camera in cameras:
        collector.add_image(camera, scan + offset, f"{camera}@{scan}", now)
    collector.add_scan(scan, f"scan@{scan}", now)


def test_all_cameras_on_time_fire_with_the_last_image_and_respect_nuscenes_offsets():
    collector = Collector(NUSCENES)
    scan, now = 1532402927.647951, 100.0
    # The previous camera frames (12 Hz, 83 ms earlier) are buffered too and must not be taken.
    for camera, offset in NUSCENES_OFFSETS.items():
        collector.add_image(camera, scan + offset - 0.083, "previous", now - 0.05)
    cameras = list(NUSCENES_OFFSETS)
    # Cameras lead the LiDAR stamp: four images are in before the scan, two arrive over the network later.
    for camera in cameras[:4]:
        collector.add_image(camera, scan + NUSCENES_OFFSETS[camera] + 0.001, camera, now - 0.01)
    collector.add_scan(scan, "cloud", now)
    assert collector.poll(now) is None
    collector.add_image(cameras[4], scan + NUSCENES_OFFSETS[cameras[4]], cameras[4], now + 0.02)
    assert collector.poll(now + 0.02) is None
    collector.add_image(cameras[5], scan + NUSCENES_OFFSETS[cameras[5]], cameras[5], now + 0.03)
    synced = collector.poll(now + 0.03)
    assert isinstance(synced, SyncedSet)
    assert synced.stamp == scan
    assert synced.scan == "cloud"
    assert synced.missing == ()
    assert synced.waited == pytest.approx(0.03)  # before the 0.1 s timeout
    assert {camera: payload for camera, (_, payload) in synced.images.items()} == {c: c for c in cameras}
    assert list(synced.images) == cameras
    assert collector.stats.matched == dict.fromkeys(cameras, 1)
    assert collector.poll(now + 1.0) is None


def test_offsets_pick_the_closest_image_to_the_expected_stamp():
    config = SyncConfig(cameras=("front", "back"), camera_offsets={"front": -0.040})
    collector = Collector(config)
    # 30 Hz cameras: several images fall within the threshold of the scan.
    for stamp in (9.955, 9.962, 9.993, 10.027):
        collector.add_image("front", stamp, stamp, now=0.0)
        collector.add_image("back", stamp, stamp, now=0.0)
    collector.add_scan(10.0, "cloud", now=0.0)
    synced = collector.poll(0.0)
    assert synced is not None
    assert synced.images == {"front": (9.962, 9.962), "back": (9.993, 9.993)}


def test_late_camera_is_missing_when_the_timeout_expires_and_its_image_then_goes_unused():
    collector = Collector(TWO)
    collector.add_image("left", 5.0, "L", now=0.01)
    collector.add_scan(5.0, "cloud", now=0.02)
    assert collector.poll(0.1) is None
    synced = collector.poll(0.12)
    assert synced is not None
    assert synced.missing == ("right",)
    assert synced.images == {"left": (5.0, "L")}
    assert synced.waited == pytest.approx(0.1)
    collector.add_image("right", 5.0, "R", now=0.2)  # too late: the set already fired
    assert collector.poll(0.3) is None
    assert collector.stats.matched == {"left": 1, "right": 0}


def test_a_dead_camera_never_blocks_the_sets():
    collector = Collector(TWO)
    for k in range(5):
        now = k * 0.1
        collector.add_image("left", now, k, now)
        collector.add_scan(now, k, now)
        assert collector.poll(now) is None
        synced = collector.poll(now + 0.1)
        assert synced is not None
        assert (synced.scan, synced.missing) == (k, ("right",))
    assert collector.stats.sets_emitted == 5
    assert collector.stats.scans_dropped == 0


def test_image_outside_the_threshold_is_not_used():
    collector = Collector(TWO)
    collector.add_image("left", 1.0, "L", now=0.0)
    collector.add_image("right", 1.06, "too late a stamp", now=0.0)
    collector.add_scan(1.0, "cloud", now=0.0)
    collector.add_image("right", 0.94, "too early a stamp", now=0.01)
    assert collector.poll(0.05) is None
    synced = collector.poll(0.1)
    assert synced is not None
    assert synced.missing == ("right",)


def test_images_before_and_after_their_scan_are_both_matched_and_later_ones_improve_the_match():
    collector = Collector(TWO)
    collector.add_image("left", 2.03, "left, before", now=0.0)
    collector.add_scan(2.0, "cloud", now=0.01)
    collector.add_image("left", 2.001, "left, after and closer", now=0.02)
    collector.add_image("right", 1.99, "right, after", now=0.03)
    synced = collector.poll(0.03)
    assert synced is not None
    assert synced.images == {"left": (2.001, "left, after and closer"), "right": (1.99, "right, after")}


def test_duplicate_scans_and_images_are_ignored_and_counted():
    collector = Collector(TWO)
    collector.add_image("left", 1.0, "first", now=0.0)
    collector.add_image("left", 1.0, "again", now=0.0)
    collector.add_scan(1.0, "cloud", now=0.0)
    collector.add_scan(1.0, "pending again", now=0.01)
    collector.add_image("right", 1.0, "R", now=0.01)
    synced = collector.poll(0.01)
    assert synced is not None
    assert (synced.scan, synced.images["left"][1]) == ("cloud", "first")
    collector.add_scan(1.0, "emitted again", now=0.02)
    assert collector.poll(0.5) is None
    assert (collector.stats.scans_duplicate, collector.stats.images_duplicate) == (2, 1)
    assert collector.stats.scans_received == 3
    assert collector.stats.images_received == 3
    assert collector.stats.scans_dropped == 2


def test_out_of_order_scans_are_ordered_by_stamp():
    collector = Collector(TWO)
    collector.add_scan(0.2, "second", now=0.0)
    collector.add_scan(0.1, "first", now=0.01)
    for camera in TWO.cameras:
        collector.add_image(camera, 0.1, camera, now=0.02)
    synced = collector.poll(0.02)
    assert synced is not None
    assert synced.scan == "first"  # the newer scan is not ready yet, so it stays pending
    for camera in TWO.cameras:
        collector.add_image(camera, 0.2, camera, now=0.03)
    synced = collector.poll(0.03)
    assert synced is not None
    assert synced.scan == "second"
    collector.add_scan(0.15, "older than the last set", now=0.04)
    assert collector.poll(1.0) is None
    assert (collector.stats.scans_backward, collector.stats.scans_superseded) == (1, 0)


def test_backlog_emits_only_the_newest_ready_set():
    collector = Collector(TWO)
    for k in range(3):
        feed(collector, scan=1.0 + 0.1 * k, now=0.01 * k)
    collector.add_scan(1.3, "not ready", now=0.03)
    synced = collector.poll(0.04)
    assert synced is not None
    assert synced.stamp == pytest.approx(1.2)
    assert collector.stats.scans_superseded == 2
    assert collector.stats.sets_emitted == 1
    synced = collector.poll(0.13)  # the newer pending scan survived the backlog and times out
    assert synced is not None
    assert (synced.scan, synced.missing) == ("not ready", ("left", "right"))


def test_pending_overflow_drops_the_oldest_scans():
    collector = Collector(SyncConfig(cameras=("cam",), max_pending_scans=4))
    for k in range(6):
        collector.add_scan(0.1 * k, k, now=0.001 * k)
    collector.add_scan(0.15, "older than every pending scan", now=0.006)
    assert collector.stats.scans_overflowed == 3
    collector.add_image("cam", 0.1, "image", now=0.007)  # the scan at 0.1 was pushed out
    assert collector.poll(0.007) is None
    synced = collector.poll(0.2)
    assert synced is not None
    assert synced.scan == 5
    assert collector.stats.scans_superseded == 3  # 0.2, 0.3 and 0.4 were overtaken by 0.5
    assert collector.stats.scans_dropped == 6


def test_looping_bag_resets_and_the_next_scan_syncs_at_once():
    collector = Collector(TWO)
    now = 0.0
    for k in range(20):
        now = 0.1 * k
        feed(collector, scan=1000.0 + 0.1 * k, now=now)
        assert collector.poll(now) is not None
    # The bag loops: its first images come in ahead of its first scan, on a clock that keeps going.
    now += 0.1
    for camera in TWO.cameras:
        collector.add_image(camera, 1000.0, camera, now)
    collector.add_scan(1000.0, "looped", now)
    synced = collector.poll(now)
    assert synced is not None
    assert (synced.scan, synced.missing) == ("looped", ())
    assert collector.stats.resets == 1
    feed(collector, scan=1000.1, now=now + 0.1)
    assert collector.poll(now + 0.1).stamp == 1000.1


def test_clock_jumping_back_resets_pending_scans():
    collector = Collector(TWO)
    collector.add_scan(50.0, "before the jump", now=50.0)
    assert collector.poll(50.05) is None
    # Sim time restarts with the bag: the old scan's deadline means nothing now.
    feed(collector, scan=0.0, now=0.0)
    synced = collector.poll(0.0)
    assert synced is not None
    assert (synced.scan, synced.missing) == ("scan@0.0", ())
    assert collector.stats.resets == 1
    assert collector.poll(0.2) is None


def test_reset_forgets_scans_and_images_but_keeps_statistics():
    collector = Collector(TWO)
    collector.add_image("left", 1.0, "L", now=5.0)
    collector.add_scan(1.0, "cloud", now=5.0)
    collector.reset()
    assert collector.poll(0.0) is None  # an earlier clock is fine after a reset
    collector.add_scan(1.0, "again", now=0.0)
    collector.add_image("right", 1.0, "R", now=0.0)
    synced = collector.poll(0.1)
    assert synced is not None
    assert (synced.scan, synced.missing) == ("again", ("left",))
    assert (collector.stats.scans_received, collector.stats.resets) == (2, 1)


def test_unknown_camera_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'CAM_TOP'"):
        Collector(NUSCENES).add_image("CAM_TOP", 0.0, None, now=0.0)


def test_config_offsets_are_frozen_copies():
    offsets = {"a": -0.01}
    config = SyncConfig(cameras=["a", "b"], camera_offsets=offsets)
    offsets["a"] = 1.0
    assert config.cameras == ("a", "b")
    assert (config.offset("a"), config.offset("b")) == (-0.01, 0.0)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"cameras": ("a", "a")}, "cameras"),
        ({"cameras": ("a", "")}, "cameras"),
        ({"camera_offsets": {"z": 0.0}}, "camera_offsets"),
        ({"camera_offsets": {"a": float("nan")}}, "camera_offsets"),
        ({"match_threshold": 0.0}, "match_threshold"),
        ({"timeout": -0.1}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"image_buffer": 0}, "image_buffer"),
        ({"image_buffer": 2.5}, "image_buffer"),
        ({"max_pending_scans": True}, "max_pending_scans"),
        ({"max_time_jump": 0.0}, "max_time_jump"),
    ],
)
def test_config_validation_names_the_field(changes, field):
    with pytest.raises(ValueError, match=f"SyncConfig.{field}"):
        SyncConfig(**{"cameras": ("a",), **changes})


def test_without_cameras_every_scan_is_ready_as_it_arrives():
    """A LiDAR-only rig: nothing to wait for, no timeout spent."""
    collector = Collector(SyncConfig(cameras=(), timeout=0.5))
    collector.add_scan(10.0, "scan", now=100.0)
    synced = collector.poll(100.0)
    assert synced is not None
    assert synced.scan == "scan"
    assert synced.images == {}
    assert synced.missing == ()


def assert_every_scan_accounted_for(collector: Collector) -> None:
    stats = collector.stats
    assert stats.scans_received == stats.sets_emitted + stats.scans_dropped + collector.pending, stats


def test_stamps_left_at_zero_are_counted_as_duplicates_not_silently_lost():
    """A driver that never sets its stamps: one set, every other scan counted where /diagnostics shows it."""
    collector = Collector(TWO)
    emitted = 0
    for k in range(4):
        now = 0.1 * k
        feed(collector, scan=0.0, now=now)
        emitted += collector.poll(now) is not None
        assert_every_scan_accounted_for(collector)
    assert emitted == 1
    stats = collector.stats
    assert (stats.scans_received, stats.sets_emitted, stats.scans_duplicate) == (4, 1, 3)
    assert (stats.images_received, stats.images_duplicate) == (8, 6)
    assert stats.scans_dropped == 3


def test_a_small_backward_jump_is_counted_apart_from_superseded_scans():
    collector = Collector(TWO)
    feed(collector, scan=10.0, now=0.0)
    feed(collector, scan=10.1, now=0.01)
    assert collector.poll(0.01).stamp == 10.1  # 10.0 is superseded by the newer set
    collector.add_scan(9.95, "back by 150 ms", now=0.02)  # within max_time_jump: no reset, dropped
    assert collector.poll(0.5) is None
    stats = collector.stats
    assert (stats.scans_superseded, stats.scans_backward, stats.resets) == (1, 1, 0)
    assert stats.scans_dropped == 2
    assert_every_scan_accounted_for(collector)


@pytest.mark.parametrize("cause", ["reset", "clock back", "stamp jump"])
def test_pending_scans_thrown_away_by_a_reset_are_counted(cause):
    collector = Collector(TWO)
    collector.add_scan(100.0, "a", now=50.0)
    collector.add_scan(100.1, "b", now=50.01)
    assert collector.pending == 2
    if cause == "reset":
        collector.reset()
    elif cause == "clock back":
        assert collector.poll(1.0) is None
    else:
        collector.add_scan(50.0, "the bag looped", now=50.02)
    stats = collector.stats
    assert (stats.scans_lost_on_reset, stats.resets) == (2, 1)
    assert stats.scans_dropped == 2
    assert_every_scan_accounted_for(collector)


def test_stats_fields_are_the_ones_the_node_publishes():
    from dataclasses import fields

    from xkd_ros.sync import SyncStats

    assert [f.name for f in fields(SyncStats)] == [
        "scans_received",
        "sets_emitted",
        "scans_superseded",
        "scans_overflowed",
        "scans_duplicate",
        "scans_backward",
        "scans_lost_on_reset",
        "images_received",
        "images_duplicate",
        "resets",
        "matched",
    ]
