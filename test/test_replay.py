"""xkd-replay: a bag written by write_bag, played by a subprocess, received over DDS by this process."""

import os
import random
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import rclpy
from conftest import REPO
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, PointCloud2

from xkd_ros.data.rosbag import write_bag
from xkd_ros.msgs import read_points_numpy
from xkd_ros.replay import main, message_class

FRAMES = 3
PERIOD = 0.2  # s between recorded frames
RATE = 2.0
LIDAR = "/lidar/points"
CAMERA = "pylon_camera"
IMAGE = f"/cameras/{CAMERA}/image_raw/compressed"


@pytest.fixture(scope="module")
def frames(rellis_frame):
    return [
        replace(
            rellis_frame,
            stamp=rellis_frame.stamp + PERIOD * i,
            image_stamps={name: stamp + PERIOD * i for name, stamp in rellis_frame.image_stamps.items()},
        )
        for i in range(FRAMES)
    ]


@pytest.fixture(scope="module")
def bag(tmp_path_factory, frames):
    return write_bag(frames, tmp_path_factory.mktemp("replay") / "bag", image_format="png")


def recorded(bag, topic):
    with Reader(bag) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        return [bytes(raw) for _, _, raw in reader.messages(connections=connections)]


@pytest.fixture
def ros_env(monkeypatch):
    """A domain of this test's own, discovery on this machine only, and the large-message Fast DDS profile."""
    domain = random.randint(100, 200)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    profile = REPO / "config" / "fastdds.xml"
    if profile.is_file():
        monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
    return domain


class Listener:
    """Raw subscriptions in an rclpy context of their own: topic -> [(arrival time, CDR bytes)]."""

    def __init__(self, domain, topics):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("replay_test", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received = {topic: [] for topic in topics}
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for topic, cls in topics.items():
            self.node.create_subscription(cls, topic, self._callback(topic), qos, raw=True)

    def _callback(self, topic):
        return lambda raw: self.received[topic].append((time.monotonic(), raw))

    def spin_until(self, process, done, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done():
            self.executor.spin_once(timeout_sec=0.05)
            if process.poll() is not None:  # the player is gone: take what is still queued
                for _ in range(20):
                    self.executor.spin_once(timeout_sec=0.05)
                break

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def player(request):
    processes = []

    def start(*args):
        process = subprocess.Popen(
            [sys.executable, "-m", "xkd_ros.replay", *map(str, args)],
            cwd=REPO,
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.fixture
def listener_factory():
    listeners = []

    def make(domain, topics):
        listeners.append(Listener(domain, topics))
        return listeners[-1]

    yield make
    for listener in listeners:
        listener.close()


def finish(process):
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    return out, err


def test_plays_every_scan_and_image_in_order_with_the_recorded_bytes_and_timing(
    bag, frames, ros_env, player, listener_factory
):
    listener = listener_factory(ros_env, {LIDAR: PointCloud2, IMAGE: CompressedImage, "/clock": Clock})
    process = player(bag, "--rate", RATE, "--delay", 1, "--clock")
    listener.spin_until(
        process, lambda: len(listener.received[LIDAR]) == FRAMES and len(listener.received[IMAGE]) == FRAMES
    )
    out, err = finish(process)

    if message_class("tf2_msgs/msg/TFMessage") is None:  # no tf2_msgs wheel: skipped, with a warning
        assert "4 topics, 12 messages" in out  # points, labels, image, camera_info
        assert "/tf_static (tf2_msgs/msg/TFMessage)" in err
    else:
        assert "5 topics, 13 messages" in out
    scans = listener.received[LIDAR]
    assert [raw for _, raw in scans] == recorded(bag, LIDAR)  # all, in order, byte-identical
    for (_, raw), frame in zip(scans, frames, strict=True):
        cloud = deserialize_message(raw, PointCloud2)
        stamp = cloud.header.stamp.sec + cloud.header.stamp.nanosec * 1e-9
        assert stamp == pytest.approx(frame.stamp, abs=1e-6)
        points = read_points_numpy(cloud, field_names=frame.channels)
        np.testing.assert_array_equal(points, frame.points)
    assert [raw for _, raw in listener.received[IMAGE]] == recorded(bag, IMAGE)
    expected = PERIOD * (FRAMES - 1) / RATE
    assert scans[-1][0] - scans[0][0] >= 0.5 * expected  # played with the recording's spacing, not at once
    clocks = [deserialize_message(raw, Clock).clock for _, raw in listener.received["/clock"]]
    assert clocks  # published while playing, from the bag time
    first, last = frames[0].stamp, frames[-1].stamp
    assert all(first - 0.01 <= c.sec + c.nanosec * 1e-9 <= last + 0.5 for c in clocks)


def test_remap_and_topics(bag, frames, ros_env, player, listener_factory):
    listener = listener_factory(ros_env, {"/scan": PointCloud2, LIDAR: PointCloud2, IMAGE: CompressedImage})
    process = player(bag, "--delay", 1, "--rate", 4, "--topics", LIDAR, "--remap", f"{LIDAR}:=/scan")
    listener.spin_until(process, lambda: len(listener.received["/scan"]) == FRAMES)
    out, _ = finish(process)

    assert "1 topics, 3 messages" in out
    assert [raw for _, raw in listener.received["/scan"]] == recorded(bag, LIDAR)
    assert listener.received[LIDAR] == []
    assert listener.received[IMAGE] == []


def test_a_missing_path_fails_naming_it(tmp_path, capsys):
    missing = tmp_path / "no_such_bag"
    result = subprocess.run(
        [sys.executable, "-m", "xkd_ros.replay", str(missing)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert str(missing) in result.stderr

    assert main([str(tmp_path)]) == 1  # a folder, but no bag
    assert f"{tmp_path}: not a rosbag2 bag" in capsys.readouterr().err


def test_bad_options_are_refused(tmp_path, capsys):
    for argv in (["--remap", "nonsense"], ["--rate", "0"], ["--qos", "loud"]):
        with pytest.raises(SystemExit) as exit_:
            main([str(tmp_path), *argv])
        assert exit_.value.code == 2
    capsys.readouterr()
