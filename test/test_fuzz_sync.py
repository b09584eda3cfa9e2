"""Fuzzing the collector: any sequence of scans, images, polls and resets, with any finite stamps and a clock
that mostly runs forward but may jump back, never raises (but ValueError for non-finite input or an unknown
camera), never loses a scan uncounted and never emits a set it should not.

Deterministic (derandomize) and bounded, so it runs in CI like any other test.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xkd_ros.sync import Collector, SyncConfig

CAMERAS = ("front", "left", "right")
NON_FINITE = (math.nan, math.inf, -math.inf)


def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """One of the strategies, each `weight` times as likely (st.one_of draws its branches alike)."""
    strategies = [strategy for _, strategy in choices]
    indices = [index for index, (weight, _) in enumerate(choices) for _ in range(weight)]
    return st.sampled_from(indices).flatmap(strategies.__getitem__)


# Most stamps lie on one short timeline (scans and cameras every 50 ms, images jittered), so that sets form,
# duplicates and small backward jumps happen; some are anything finite, a few are not finite at all.
grid = st.integers(0, 12).map(lambda k: 1000.0 + 0.05 * k)
jitter = weighted((2, st.just(0.0)), (1, st.floats(-0.02, 0.02)))
scan_stamps = weighted((25, grid), (1, st.floats(allow_nan=False, allow_infinity=False)))
image_stamps = weighted(
    (25, st.tuples(grid, jitter).map(sum)), (1, st.floats(allow_nan=False, allow_infinity=False))
)


def or_not_finite(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return weighted((40, strategy), (1, st.sampled_from(NON_FINITE)))


# The clock: small steps forward, sometimes none, now and then a jump back (sim time restarting), anywhere,
# or not finite.
clock_steps = weighted(
    (40, st.floats(0.0, 0.08)),
    (10, st.just(0.0)),
    (1, st.floats(-100.0, -1e-6)),
    (1, st.floats(-1e6, 1e6)),
    (1, st.sampled_from(NON_FINITE)),
)

configs = st.builds(
    lambda cameras, offsets, threshold, timeout, buffer, pending, jump: SyncConfig(
        cameras=cameras,
        camera_offsets=dict(zip(cameras, offsets, strict=False)),
        match_threshold=threshold,
        timeout=timeout,
        image_buffer=buffer,
        max_pending_scans=pending,
        max_time_jump=jump,
    ),
    cameras=st.integers(1, 3).map(lambda n: CAMERAS[:n]),
    offsets=st.lists(
        weighted((3, st.sampled_from((0.0, -0.05, 0.05))), (1, st.floats(-0.1, 0.1))), max_size=len(CAMERAS)
    ),
    threshold=st.floats(0.001, 0.03),
    timeout=st.floats(0.0, 0.3),
    buffer=st.integers(1, 4),
    pending=st.integers(1, 4),
    jump=st.floats(0.01, 5.0),
)

operations = st.lists(
    weighted(
        (10, st.tuples(st.just("scan"), or_not_finite(scan_stamps), clock_steps)),
        (20, st.tuples(st.just("image"), st.sampled_from(CAMERAS), or_not_finite(image_stamps), clock_steps)),
        (1, st.tuples(st.just("image"), st.just("unknown"), image_stamps, clock_steps)),
        (15, st.tuples(st.just("poll"), clock_steps)),
        (1, st.tuples(st.just("reset"))),
    ),
    min_size=10,
    max_size=120,
)


@settings(
    max_examples=500,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(config=configs, ops=operations)
def test_collector_survives_any_input_and_accounts_for_every_scan(config, ops):
    collector = Collector(config)
    now = 0.0
    last_stamp: float | None = None  # of the last set emitted since the last reset
    resets_then = 0
    for op in ops:
        kind, args = op[0], op[1:]
        step = args[-1] if kind in ("scan", "image", "poll") else 0.0
        clock = now + step if math.isfinite(step) else step
        invalid = (
            not math.isfinite(clock)
            or (kind in ("scan", "image") and not math.isfinite(args[-2]))
            or (kind == "image" and args[0] not in config.cameras)
        )
        before = collector.stats.scans_received
        synced = None
        try:
            if kind == "scan":
                collector.add_scan(args[0], f"scan@{args[0]}", clock)
            elif kind == "image":
                collector.add_image(args[0], args[1], f"{args[0]}@{args[1]}", clock)
            elif kind == "poll":
                synced = collector.poll(clock)
            else:
                collector.reset()
        except ValueError:
            assert invalid, op
            assert collector.stats.scans_received == before  # refused input leaves no trace
        else:
            assert not invalid, op
            if kind != "reset":
                now = clock
        stats = collector.stats
        accounted = stats.sets_emitted + stats.scans_dropped + collector.pending
        assert stats.scans_received == accounted, (op, stats)
        assert 0 <= collector.pending <= config.max_pending_scans
        if stats.resets != resets_then:
            resets_then, last_stamp = stats.resets, None
        if synced is None:
            continue
        assert set(synced.images) | set(synced.missing) == set(config.cameras)
        assert not set(synced.images) & set(synced.missing)
        for camera, (image_stamp, image) in synced.images.items():
            target = synced.stamp + config.offset(camera)
            assert abs(image_stamp - target) <= config.match_threshold, (camera, image_stamp, synced.stamp)
            assert image == f"{camera}@{image_stamp}"
        assert synced.scan == f"scan@{synced.stamp}"
        if last_stamp is not None:
            assert synced.stamp > last_stamp, "sets went back in time without a reset"
        last_stamp = synced.stamp
    assert sum(collector.stats.matched.values()) <= collector.stats.sets_emitted * len(config.cameras)


@pytest.mark.parametrize("value", NON_FINITE)
def test_non_finite_input_is_a_value_error_naming_it(value):
    collector = Collector(SyncConfig(cameras=("front",)))
    with pytest.raises(ValueError, match="scan stamp"):
        collector.add_scan(value, None, now=0.0)
    with pytest.raises(ValueError, match="image stamp"):
        collector.add_image("front", value, None, now=0.0)
    with pytest.raises(ValueError, match="now"):
        collector.poll(value)
    assert (collector.stats.scans_received, collector.stats.images_received) == (0, 0)
