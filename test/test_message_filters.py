"""xkd_ros.message_filters beyond what upstream's own tests check (those run in test_upstream_apis.py):
callback arguments, Cache queries, exact and approximate matching against a brute-force reference, the
policy difference from the node's Collector, and a Subscriber chain over real DDS."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import pytest
from builtin_interfaces.msg import Time as TimeMsg
from hypothesis import given, settings
from hypothesis import strategies as st
from rclpy.clock import ClockType
from rclpy.time import Time

from xkd_ros.message_filters import (
    ApproximateTimeSynchronizer,
    Cache,
    SimpleFilter,
    Subscriber,
    TimeSynchronizer,
)
from xkd_ros.sync import Collector, SyncConfig


@dataclass
class Header:
    stamp: object


@dataclass(eq=False)
class Msg:
    header: Header
    name: str = ""


def msg(seconds: float, name: str = "") -> Msg:
    return Msg(Header(Time(seconds=seconds)), name)


def test_register_callback_appends_args_and_connections_can_be_removed():
    source = SimpleFilter()
    calls = []
    first = source.registerCallback(lambda *a: calls.append(("first", a)), "x", 2)
    second = source.registerCallback(lambda *a: calls.append(("second", a)))
    assert first != second
    source.signalMessage("m1", "m2")
    assert calls == [("first", ("m1", "m2", "x", 2)), ("second", ("m1", "m2"))]
    source.callbacks.pop(first)
    calls.clear()
    source.signalMessage("m3")
    assert calls == [("second", ("m3",))]
    # A connection id is never reused, so removing one cannot silence a later registration.
    assert source.registerCallback(print) not in (first, second)


def test_cache_orders_by_stamp_and_answers_queries():
    source = SimpleFilter()
    cache = Cache(source, 3)
    passed_on = []
    cache.registerCallback(passed_on.append)
    a, b, c, d = msg(1), msg(3), msg(2), msg(4)
    for m in (a, b, c):
        source.signalMessage(m)
    assert passed_on == [a, b, c]
    assert cache.cache_msgs == [a, c, b]  # stamp order, not arrival order
    assert cache.getLast() is b
    assert cache.getLastestTime() == Time(seconds=3)
    assert cache.getElemBeforeTime(Time(seconds=2.5)) is c
    assert cache.getElemBeforeTime(Time(seconds=0.5)) is None
    assert cache.getElemAfterTime(Time(seconds=1.5)) is c
    assert cache.getElemAfterTime(Time(seconds=3.5)) is None
    assert cache.getInterval(Time(seconds=1), Time(seconds=2)) == [a, c]
    source.signalMessage(d)
    assert cache.getOldestTime() == Time(seconds=2)  # the oldest stamp went
    with pytest.raises(ValueError, match="getInterval"):
        cache.getInterval(Time(seconds=2), Time(seconds=1))


def test_cache_reads_builtin_stamps_as_ros_time_and_counts_headerless():
    source = SimpleFilter()
    cache = Cache(source, 5)
    stamped = Msg(Header(TimeMsg(sec=7, nanosec=5)))
    source.signalMessage(stamped)
    source.signalMessage("no header")
    assert cache.cache_msgs == [stamped]
    assert cache.dropped_headerless == 1
    assert cache.getLastestTime() == Time(seconds=7, nanoseconds=5, clock_type=ClockType.ROS_TIME)
    with pytest.raises(ValueError, match="cache_size"):
        Cache(source, 0)


def test_time_synchronizer_matches_exact_stamps_only():
    a, b = SimpleFilter(), SimpleFilter()
    sync = TimeSynchronizer([a, b], 2)
    sets = []
    sync.registerCallback(lambda *m: sets.append(m), "extra")
    a1, a2, a3 = msg(1), msg(2), msg(3)
    b_near, b2, b1 = msg(2.001), msg(2), msg(1)
    for m in (a1, a2):
        a.signalMessage(m)
    b.signalMessage(b_near)
    assert sets == []  # 1 ms apart is not a match
    b.signalMessage(b2)
    assert sets == [(a2, b2, "extra")]
    a.signalMessage(a3)  # a's queue (size 2) now holds 1 and 3
    a.signalMessage(msg(4))  # pushes stamp 1 out of a's queue
    b.signalMessage(b1)
    assert sets == [(a2, b2, "extra")]


def brute_force_approximate(inputs, events, queue_size, slop_ns):
    """Upstream's policy written the obvious way: on each arrival, every combination of the other queues'
    stamps within slop of it, nearest first, in product order; the first spanning < slop is emitted."""
    queues = [{} for _ in range(inputs)]
    out = []
    for index, stamp in events:
        queues[index][stamp] = (index, stamp)
        while len(queues[index]) > queue_size:
            del queues[index][min(queues[index])]
        if stamp not in queues[index]:
            continue
        others = [
            sorted((t for t in queue if abs(t - stamp) <= slop_ns), key=lambda t: (abs(t - stamp), t))
            for j, queue in enumerate(queues)
            if j != index
        ]
        for combo in itertools.product(*others):
            picks = list(combo)
            picks.insert(index, stamp)
            if max(picks) - min(picks) < slop_ns:
                out.append(tuple(queues[j].pop(t) for j, t in enumerate(picks)))
                break
    return out


@settings(max_examples=150, deadline=None)
@given(
    inputs=st.integers(2, 4),
    data=st.data(),
    queue_size=st.integers(1, 4),
    slop_ms=st.integers(1, 40),
)
def test_approximate_matches_brute_force_reference(inputs, data, queue_size, slop_ms):
    events = data.draw(
        st.lists(st.tuples(st.integers(0, inputs - 1), st.integers(0, 100)), max_size=40), label="events"
    )
    filters = [SimpleFilter() for _ in range(inputs)]
    sync = ApproximateTimeSynchronizer(filters, queue_size, slop_ms / 1000)
    got = []
    sync.registerCallback(lambda *m: got.append(tuple((x.name, x.header.stamp.nanoseconds) for x in m)))
    for index, ms in events:
        filters[index].signalMessage(Msg(Header(Time(nanoseconds=ms * 1_000_000)), index))
    stamped = [(index, ms * 1_000_000) for index, ms in events]
    assert got == brute_force_approximate(inputs, stamped, queue_size, slop_ms * 1_000_000)


def test_approximate_options_headerless_and_arrival_time():
    a, b = SimpleFilter(), SimpleFilter()
    strict = ApproximateTimeSynchronizer([a, b], 3, 0.1)
    a.signalMessage("headerless")
    assert strict.dropped_headerless == 1
    assert strict.queues == [{}, {}]
    # Stamps a day apart, arriving together: only sync_arrival_time pairs them.
    arrival = ApproximateTimeSynchronizer([a, b], 3, 5.0, sync_arrival_time=True)
    sets = []
    arrival.registerCallback(lambda *m: sets.append(m))
    early, late = msg(0), msg(86_400)
    a.signalMessage(early)
    b.signalMessage(late)
    assert sets == [(early, late)]
    with pytest.raises(ValueError, match="slop"):
        ApproximateTimeSynchronizer([a, b], 3, 0.0)


def test_collector_keeps_the_scan_whose_camera_is_missing_approximate_drops_it():
    """The documented policy difference, on 5 scans where camera b misses scan 2."""
    scans = [msg(1.0 + 0.1 * i, f"scan{i}") for i in range(5)]
    images_a = [msg(1.0 + 0.1 * i + 0.002, f"a{i}") for i in range(5)]
    images_b = [msg(1.0 + 0.1 * i - 0.002, f"b{i}") for i in range(5) if i != 2]

    lidar, cam_a, cam_b = SimpleFilter(), SimpleFilter(), SimpleFilter()
    approximate = ApproximateTimeSynchronizer([lidar, cam_a, cam_b], 10, 0.05)
    approx_sets = []
    approximate.registerCallback(lambda scan, *_: approx_sets.append(scan.name))
    collector = Collector(SyncConfig(cameras=("a", "b"), match_threshold=0.05, timeout=0.1))
    collected = []
    for i, scan in enumerate(scans):
        now = 1.0 + 0.1 * i + 0.01
        lidar.signalMessage(scan)
        collector.add_scan(scan.header.stamp.nanoseconds * 1e-9, scan, now)
        for filt, camera, images in ((cam_a, "a", images_a), (cam_b, "b", images_b)):
            for image in images:
                if image.name.endswith(str(i)):
                    filt.signalMessage(image)
                    collector.add_image(camera, image.header.stamp.nanoseconds * 1e-9, image, now)
        # The node polls on a timer; by the next scan the missing camera's timeout has passed.
        synced = collector.poll(now + 0.1)
        if synced is not None:
            collected.append((synced.scan.name, synced.missing))
    assert collected == [(f"scan{i}", ("b",) if i == 2 else ()) for i in range(5)]
    assert approx_sets == ["scan0", "scan1", "scan3", "scan4"]


@pytest.mark.dds
@pytest.mark.timeout(120)
def test_subscribers_over_dds_feed_a_synchronizer(ros_env):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Imu, Temperature

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("message_filters_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        imu_sub = Subscriber(node, Imu, "mf_test/imu")
        temp_sub = Subscriber(node, Temperature, "mf_test/temperature", qos_profile=5)
        assert imu_sub.getTopic() == "mf_test/imu"
        assert temp_sub.topic_name.endswith("/mf_test/temperature")  # the subscription's own attribute
        sync = ApproximateTimeSynchronizer([imu_sub, temp_sub], 5, 0.05)
        sets = []
        sync.registerCallback(lambda imu, temp, tag: sets.append((imu, temp, tag)), "tagged")
        imu_pub = node.create_publisher(Imu, "mf_test/imu", 10)
        temp_pub = node.create_publisher(Temperature, "mf_test/temperature", 10)

        deadline = time.monotonic() + 60
        while imu_pub.get_subscription_count() < 1 or temp_pub.get_subscription_count() < 1:
            assert time.monotonic() < deadline, "mf_test/imu or mf_test/temperature: subscription not matched"
            executor.spin_once(timeout_sec=0.05)

        imu, temp = Imu(), Temperature()
        imu.header.stamp = TimeMsg(sec=10, nanosec=0)
        temp.header.stamp = TimeMsg(sec=10, nanosec=20_000_000)
        temp.temperature = 21.5
        imu_pub.publish(imu)
        temp_pub.publish(temp)
        deadline = time.monotonic() + 60
        while not sets:
            assert time.monotonic() < deadline, "no synchronised (Imu, Temperature) set received within 60 s"
            executor.spin_once(timeout_sec=0.05)
        got_imu, got_temp, tag = sets[0]
        assert tag == "tagged"
        assert got_temp.temperature == 21.5
        assert (got_imu.header.stamp.sec, got_temp.header.stamp.nanosec) == (10, 20_000_000)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
