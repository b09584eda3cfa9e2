"""xkd-replay: a bag written by write_bag, played by a subprocess, received over DDS by this process; and
bags that are damaged or name modules, refused with one line."""

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
from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.enums import StoragePlugin
from rosbags.typesys import Stores, get_typestore
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2

from xkd_ros.data.rosbag import write_bag
from xkd_ros.msgs import read_points
from xkd_ros.replay import main, message_class

FRAMES = 3
PERIOD = 0.4  # s between recorded frames
RATE = 2.0
LIDAR = "/lidar/points"
LABELS = "/lidar/labels"
CAMERA = "pylon_camera"
IMAGE = f"/cameras/{CAMERA}/image_raw/compressed"
INFO = f"/cameras/{CAMERA}/camera_info"
BAG_TOPICS = {LIDAR: PointCloud2, LABELS: PointCloud2, IMAGE: CompressedImage, INFO: CameraInfo}
TF_STATIC = message_class("tf2_msgs/msg/TFMessage")  # None with the ROS wheels: /tf_static is skipped
WAIT_1_S = ["--wait-for-subscribers", "--wait-timeout", "1"]
DEADLINE_S = 60.0  # for what a hand-shake makes certain; only a broken replay ever waits this long


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


class Listener:
    """Raw subscriptions in an rclpy context of its own: topic -> [(source timestamp ns, CDR bytes)]."""

    def __init__(self, env):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(env["ROS_DOMAIN_ID"]))
        self.node = rclpy.create_node("replay_test", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received = {}

    def subscribe(self, topics):
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for topic, cls in topics.items():
            self.received[topic] = []
            self.node.create_subscription(cls, topic, self._callback(topic), qos, raw=True)
        return self

    def _callback(self, topic):
        return lambda raw, info: self.received[topic].append((info["source_timestamp"], raw))

    def spin_until(self, done, what, process=None):
        """Spin until done(); fails naming `what` after DEADLINE_S, or at once when the player failed."""
        deadline = time.monotonic() + DEADLINE_S
        while not done():
            assert time.monotonic() < deadline, f"not received within {DEADLINE_S:g} s: {what}"
            if process is not None and process.poll() not in (None, 0):
                pytest.fail(f"xkd-replay exited with {process.returncode}: {process.communicate()}")
            self.executor.spin_once(timeout_sec=0.05)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def player(ros_env):
    processes = []

    def start(*args):
        process = subprocess.Popen(
            [sys.executable, "-m", "xkd_ros.replay", *map(str, args)],
            cwd=REPO,
            env=ros_env,
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
def listener(ros_env):
    made = Listener(ros_env)
    yield made
    made.close()


def finish(process):
    out, err = process.communicate(timeout=DEADLINE_S)
    assert process.returncode == 0, err
    return out, err


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_plays_every_scan_and_image_in_order_with_the_recorded_bytes_and_timing(
    bag, frames, player, listener
):
    topics = {**BAG_TOPICS, "/clock": Clock}
    if TF_STATIC is not None:
        topics["/tf_static"] = TF_STATIC
    listener.subscribe(topics)
    process = player(bag, "--rate", RATE, "--clock", "--wait-for-subscribers")
    listener.spin_until(
        lambda: all(len(listener.received[t]) == FRAMES for t in BAG_TOPICS), "every bag message", process
    )
    out, err = finish(process)

    if TF_STATIC is None:  # no tf2_msgs wheel: skipped, with a warning
        assert "4 topics, 12 messages" in out  # points, labels, image, camera_info
        assert "/tf_static (tf2_msgs/msg/TFMessage)" in err
    else:
        assert "5 topics, 13 messages" in out
    assert "1 subscriber(s) matched on every topic" in out
    scans = listener.received[LIDAR]
    assert [raw for _, raw in scans] == recorded(bag, LIDAR)  # all, in order, byte-identical
    for (_, raw), frame in zip(scans, frames, strict=True):
        cloud = deserialize_message(raw, PointCloud2)
        stamp = cloud.header.stamp.sec + cloud.header.stamp.nanosec * 1e-9
        assert stamp == pytest.approx(frame.stamp, abs=1e-6)
        points = read_points(cloud, field_names=frame.channels)  # the ring field is uint16
        np.testing.assert_array_equal(np.column_stack([points[c] for c in frame.channels]), frame.points)
    assert [raw for _, raw in listener.received[IMAGE]] == recorded(bag, IMAGE)
    expected = PERIOD * (FRAMES - 1) / RATE
    # Published with the recording's spacing, not at once (the publisher's clock, so a busy listener
    # does not matter).
    assert (scans[-1][0] - scans[0][0]) * 1e-9 >= 0.5 * expected
    clocks = [deserialize_message(raw, Clock).clock for _, raw in listener.received["/clock"]]
    assert clocks  # published while playing, from the bag time
    first, last = frames[0].stamp, frames[-1].stamp
    assert all(first - 0.01 <= c.sec + c.nanosec * 1e-9 <= last + 0.5 for c in clocks)


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_remap_and_topics(bag, player, listener):
    listener.subscribe({"/scan": PointCloud2, LIDAR: PointCloud2, IMAGE: CompressedImage})
    process = player(
        bag, "--rate", 4, "--topics", LIDAR, "--remap", f"{LIDAR}:=/scan", "--wait-for-subscribers"
    )
    listener.spin_until(lambda: len(listener.received["/scan"]) == FRAMES, "/scan", process)
    out, _ = finish(process)

    assert "1 topics, 3 messages" in out
    assert [raw for _, raw in listener.received["/scan"]] == recorded(bag, LIDAR)
    assert listener.received[LIDAR] == []
    assert listener.received[IMAGE] == []


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_waits_for_a_subscriber_that_comes_late(bag, player, listener):
    """The player is up and has its publisher before anyone listens: it holds the first message until the
    subscriber matched, so every message arrives, and leaves only when they are acknowledged."""
    process = player(bag, "--rate", 4, "--topics", LIDAR, "--wait-for-subscribers")
    deadline = time.monotonic() + DEADLINE_S
    while listener.node.count_publishers(LIDAR) < 1:  # the player is up and waiting
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"xkd-replay has no publisher on {LIDAR}"
        time.sleep(0.05)
    time.sleep(1.0)  # the subscriber comes late on purpose: this is no wait for discovery
    assert process.poll() is None  # still waiting for a subscriber, not played into the void
    listener.subscribe({LIDAR: PointCloud2})
    listener.spin_until(lambda: len(listener.received[LIDAR]) == FRAMES, LIDAR, process)
    finish(process)
    assert [raw for _, raw in listener.received[LIDAR]] == recorded(bag, LIDAR)


@pytest.mark.dds
@pytest.mark.timeout(120)
def test_a_topic_nobody_subscribes_is_an_error_naming_it(bag, ros_env):
    remapped = ["--topics", LIDAR, "--remap", f"{LIDAR}:=/nobody"]
    result = subprocess.run(
        [sys.executable, "-m", "xkd_ros.replay", str(bag), *remapped, *WAIT_1_S],
        env=ros_env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert result.returncode == 1
    assert result.stderr == f"xkd-replay: error: {bag}: no subscriber matched on /nobody within 1 s\n"


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
    for argv in (
        ["--remap", "nonsense"],
        ["--rate", "0"],
        ["--qos", "loud"],
        ["--wait-for-subscribers", "0"],
        ["--wait-timeout", "0"],
    ):
        with pytest.raises(SystemExit) as exit_:
            main([str(tmp_path), *argv])
        assert exit_.value.code == 2
    capsys.readouterr()


# Bags that are damaged, lie, or name modules.

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
STRING = "std_msgs/msg/String"
HASH = "RIHS01_" + "0" * 64


def write_strings(path, storage="mcap", count=50, size=10, extra_type=None):
    """A bag of `count` std_msgs/String on /chatter, 10 ms apart; `extra_type` adds a topic /extra whose
    connection names that type (the same bytes)."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer:
        chatter = writer.add_connection("/chatter", STRING, typestore=TYPESTORE)
        extra = None
        if extra_type is not None:
            extra = writer.add_connection("/extra", extra_type, msgdef="string data", rihs01=HASH)
        for i in range(count):
            message = TYPESTORE.types[STRING](data=f"{i:0{size}d}")
            raw = TYPESTORE.serialize_cdr(message, STRING)
            writer.write(chatter, i * 10_000_000, raw)
            if extra is not None:
                writer.write(extra, i * 10_000_000, raw)
    return path


def storage_file(bag):
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


def truncated_mcap(path):
    bag = write_strings(path)
    data = storage_file(bag).read_bytes()
    storage_file(bag).write_bytes(data[: len(data) // 2])
    return bag, "cannot read the bag"


def garbage_db3(path):
    bag = write_strings(path, storage="sqlite3")
    storage_file(bag).write_bytes(b"not a database " * 100)
    return bag, "cannot read the bag"


def metadata_names_a_missing_file(path):
    bag = write_strings(path)
    metadata = bag / "metadata.yaml"
    metadata.write_text(metadata.read_text().replace(storage_file(bag).name, "elsewhere.mcap"))
    return bag, "elsewhere.mcap"


def metadata_names_the_wrong_storage(path):
    bag = write_strings(path)
    metadata = bag / "metadata.yaml"
    metadata.write_text(
        metadata.read_text().replace("storage_identifier: mcap", "storage_identifier: sqlite3")
    )
    return bag, "cannot read the bag"


def metadata_is_not_yaml(path):
    bag = write_strings(path)
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [1, 2\n")
    return bag, "metadata.yaml"


def a_type_that_is_not_a_message_type(path):
    return write_strings(path, extra_type="os/system"), "topic /extra: 'os/system' is not a message type"


@pytest.mark.parametrize(
    "damage",
    [
        truncated_mcap,
        garbage_db3,
        metadata_names_a_missing_file,
        metadata_names_the_wrong_storage,
        metadata_is_not_yaml,
        a_type_that_is_not_a_message_type,
    ],
)
def test_a_bag_that_cannot_be_read_is_one_line_and_status_1(tmp_path, capsys, damage):
    bag, what = damage(tmp_path / "bag")
    assert main([str(bag)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"xkd-replay: error: {bag}: ")
    assert what in err
    assert err.count("\n") == 1, err


def test_a_module_named_by_a_bag_is_never_imported(tmp_path, capsys, monkeypatch):
    """A bag names `evil/msg/Boom`; a package `evil` with that very layout is importable here, and importing
    it would leave a file behind. It is no ROS interface package (the ament index does not list it)."""
    marker = tmp_path / "imported"
    package = tmp_path / "modules" / "xkd_evil"
    (package / "msg").mkdir(parents=True)
    side_effect = f"open({str(marker)!r}, 'w').close()\n"
    for module in ("__init__.py", "msg/__init__.py", "msg/_boom.py"):
        (package / module).write_text(side_effect + "class Boom:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path / "modules"))

    assert message_class("xkd_evil/msg/Boom") is None
    well_formed = write_strings(tmp_path / "well_formed", extra_type="xkd_evil/msg/Boom")
    assert main([str(well_formed), "--topics", "/extra"]) == 0  # skipped, with a warning naming it
    assert "/extra (xkd_evil/msg/Boom)" in capsys.readouterr().err
    malformed = write_strings(tmp_path / "malformed", extra_type="xkd_evil.msg/Boom")
    assert main([str(malformed)]) == 1
    assert "is not a message type" in capsys.readouterr().err
    assert not marker.exists()
    assert "xkd_evil" not in sys.modules


def test_message_classes_come_from_ros_interface_packages_only():
    assert message_class("sensor_msgs/msg/PointCloud2") is PointCloud2
    assert message_class("sensor_msgs/msg/NoSuchMessage") is None
    for name in ("os/system", "sensor_msgs/srv/SetCameraInfo", "../sensor_msgs/msg/Image", "a.b/msg/C"):
        with pytest.raises(ValueError, match="is not a message type"):
            message_class(name)


def damaged_sqlite_pages(path):
    """Pages in the middle of the database overwritten: it opens, and fails after some messages."""
    bag = write_strings(path, storage="sqlite3", count=200, size=20_000)
    data = bytearray(storage_file(bag).read_bytes())
    start = int(len(data) * 0.3)
    data[start : start + 8192] = b"\xa5" * 8192
    storage_file(bag).write_bytes(bytes(data))
    return bag, "cannot read message "


def damaged_mcap_chunk(path):
    """A stretch of an mcap zeroed: rosbags silently yields fewer messages than the metadata counts."""
    bag = write_strings(path, count=200, size=20_000)
    data = bytearray(storage_file(bag).read_bytes())
    start = int(len(data) * 0.3)
    data[start : start + 20_000] = bytes(20_000)
    storage_file(bag).write_bytes(bytes(data))
    return bag, "metadata.yaml says 200 messages on /chatter, the storage holds "


def metadata_lies_about_counts(path):
    bag = write_strings(path)
    metadata = bag / "metadata.yaml"
    metadata.write_text(metadata.read_text().replace("message_count: 50", "message_count: 70"))
    return bag, "metadata.yaml says 70 messages on /chatter, the storage holds 50"


@pytest.mark.dds
@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", [damaged_sqlite_pages, damaged_mcap_chunk, metadata_lies_about_counts])
def test_damage_found_while_playing_is_one_line_and_status_1(tmp_path, ros_env, damage):
    bag, what = damage(tmp_path / "bag")
    result = subprocess.run(
        [sys.executable, "-m", "xkd_ros.replay", str(bag), "--rate", "20"],
        env=ros_env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith(f"xkd-replay: {bag}: 1 topics")  # it did start playing
    assert result.stderr.startswith(f"xkd-replay: error: {bag}: {what}")
    assert result.stderr.count("\n") == 1, result.stderr
