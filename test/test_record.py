"""xkd_ros.record: what a recording holds is what Foxglove decodes (schemas in the mcap) and what
`ros2 bag play` needs (the publishers' QoS, latched topics transient local), and its errors are one line."""

import time

import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.interfaces import QosDurability, QosReliability
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from xkd_ros.record import (
    BagSink,
    Follower,
    Recorder,
    RecordError,
    joined,
    main,
    reader_policy,
    replay_offer,
    rosbags_qos,
)

NS = 1_000_000_000


def decoded(bag):
    """topic -> [(schema name, message)] as Foxglove reads the mcap: from the schemas in the file alone."""
    out = {}
    with (bag / f"{bag.name}.mcap").open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for schema, channel, _, message in reader.iter_decoded_messages():
            out.setdefault(channel.topic, []).append((schema.name, message))
    return out


def spin_until(executor, done, seconds, what):
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what()}"
        executor.spin_once(timeout_sec=0.05)


@pytest.mark.dds
@pytest.mark.timeout(120)
def test_a_live_exchange_is_recorded_for_foxglove_and_ros2_bag_play(tmp_path, ros_env):
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import Point, PointStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from std_msgs.msg import Header, String
    from visualization_msgs.msg import Marker, MarkerArray

    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    topics = ("/seg/output/class_markers", "/seg/debug/total_ms", "/seg/debug/fused_cameras")
    with joined(ros_env, "xkd_record_test") as (node, executor):
        markers = node.create_publisher(MarkerArray, topics[0], latched)
        timings = node.create_publisher(PointStamped, topics[1], 10)
        fused = node.create_publisher(String, topics[2], qos_profile_sensor_data)  # best effort
        markers.publish(MarkerArray(markers=[Marker(ns="class_legend", id=3, text="3: car")]))  # before
        recorder = Recorder(node, tmp_path / "session")
        subscriptions = [recorder.add(topic) for topic in topics]
        with pytest.raises(
            RecordError, match=r"^/tf_static: type tf2_msgs/msg/TFMessage has no Python message"
        ):
            recorder.add("/tf_static", "tf2_msgs/msg/TFMessage", [replay_offer(latched=True)])
        spin_until(
            executor,
            lambda: all(s.get_publisher_count() >= 1 for s in subscriptions),
            30,
            lambda: [s.topic_name for s in subscriptions if s.get_publisher_count() < 1],
        )
        started = time.time_ns()
        for i in range(5):
            stamp = Header(stamp=Time(sec=100 + i), frame_id="lidar")
            timings.publish(PointStamped(header=stamp, point=Point(x=10.0 + i)))
            fused.publish(String(data=f"CAM_{i}"))
        spin_until(
            executor,
            lambda: [recorder.counts[t] for t in topics] == [1, 5, 5],
            30,
            lambda: dict(recorder.counts),
        )
        counts = recorder.close()
        ended = time.time_ns()
    assert dict(counts) == {topics[0]: 1, topics[1]: 5, topics[2]: 5}  # the latched legend came too

    bag = tmp_path / "session"
    with Reader(bag) as reader:  # as ros2 bag play and xkd-replay read it
        connections = {c.topic: c for c in reader.connections}
        assert {t: (c.msgtype, c.msgcount) for t, c in connections.items()} == {
            topics[0]: ("visualization_msgs/msg/MarkerArray", 1),
            topics[1]: ("geometry_msgs/msg/PointStamped", 5),
            topics[2]: ("std_msgs/msg/String", 5),
        }
        offered = {t: c.ext.offered_qos_profiles for t, c in connections.items()}
        assert [q.durability for q in offered[topics[0]]] == [QosDurability.TRANSIENT_LOCAL]  # stays latched
        assert [q.reliability for q in offered[topics[2]]] == [QosReliability.BEST_EFFORT]
        logged = [t for _, t, _ in reader.messages(connections=[connections[topics[1]]])]
        assert all(started <= t <= ended for t in logged)  # logged at their receive time

    messages = decoded(bag)
    assert [m.point.x for _, m in messages[topics[1]]] == [10.0, 11.0, 12.0, 13.0, 14.0]
    assert [m.header.stamp.sec for _, m in messages[topics[1]]] == [100, 101, 102, 103, 104]
    assert {name for name, _ in messages[topics[1]]} == {"geometry_msgs/msg/PointStamped"}
    [(_, legend)] = messages[topics[0]]
    assert legend.markers[0].text == "3: car"
    assert [m.data for _, m in messages[topics[2]]] == [f"CAM_{i}" for i in range(5)]


@pytest.mark.dds
@pytest.mark.timeout(120)
def test_the_command_follows_topics_as_they_appear_and_names_the_absent(tmp_path, ros_env, capsys):
    import rclpy
    from std_msgs.msg import String

    with joined(ros_env, "xkd_record_cli") as (node, executor):
        follower = Follower(Recorder(node, tmp_path / "bag"), ["/chatter", "/nobody"])
        follower.look()
        assert follower.recorder.subscriptions == {}  # nobody publishes yet
        talker = rclpy.create_node("talker", context=node.context)
        executor.add_node(talker)
        publisher = talker.create_publisher(String, "/chatter", 10)
        talker.create_timer(0.05, lambda: publisher.publish(String(data="hello")))
        spin_until(
            executor,
            lambda: (follower.look(), follower.recorder.counts["/chatter"] >= 3)[1],
            30,
            lambda: f"subscribed to {list(follower.recorder.subscriptions)}",
        )
        counts = follower.close()
        executor.remove_node(talker)
        talker.destroy_node()
    out, err = capsys.readouterr()
    assert "xkd-record: subscribed to /chatter" in out
    assert f"xkd-record: /chatter: {counts['/chatter']} messages" in out
    assert err.strip() == "xkd-record: warning: no publisher ever appeared on /nobody"
    assert {t: m.data for t, [(_, m), *_] in decoded(tmp_path / "bag").items()} == {"/chatter": "hello"}


def test_a_type_outside_rosbags_store_is_defined_from_the_ament_index(tmp_path, monkeypatch):
    share = tmp_path / "prefix" / "share" / "my_msgs" / "msg"
    share.mkdir(parents=True)
    reading = "std_msgs/Header header\nmy_msgs/Unit[] units\nfloat64 value\n"
    (share / "Reading.msg").write_text(reading)
    (share / "Unit.msg").write_text("string name\n")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "prefix"))

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg(reading, "my_msgs/msg/Reading"))
    store.register(get_types_from_msg("string name\n", "my_msgs/msg/Unit"))
    Reading, Unit = store.types["my_msgs/msg/Reading"], store.types["my_msgs/msg/Unit"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    message = Reading(Header(Time(7, 0), "base"), [Unit("m")], 2.5)

    sink = BagSink(tmp_path / "bag")
    sink.add("/reading", "my_msgs/msg/Reading", [replay_offer()])
    sink.write("/reading", 7 * NS, bytes(store.serialize_cdr(message, "my_msgs/msg/Reading")))
    assert sink.close() == {"/reading": 1}
    [(schema, got)] = decoded(tmp_path / "bag")["/reading"]
    assert schema == "my_msgs/msg/Reading"
    assert (got.header.frame_id, got.units[0].name, got.value) == ("base", "m", 2.5)


def test_an_unknown_type_or_an_existing_folder_is_one_line(tmp_path, capsys):
    sink = BagSink(tmp_path / "bag")
    with pytest.raises(RecordError, match=r"^/x: type nope_msgs/msg/Thing: no message definition of "):
        sink.add("/x", "nope_msgs/msg/Thing", [])
    sink.close()
    with pytest.raises(RecordError, match="exists already"):
        BagSink(tmp_path / "bag")
    assert main([str(tmp_path / "bag"), "-t", "/x"]) == 1
    assert (
        capsys.readouterr().err
        == f"xkd-record: error: {tmp_path / 'bag'}: exists already; a recording goes to a new folder\n"
    )
    with pytest.raises(SystemExit):
        main([str(tmp_path / "other")])  # nothing to record
    assert "nothing to record: give -t TOPIC ... or --all" in capsys.readouterr().err


def test_the_reader_asks_no_more_than_every_publisher_offers():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    reliable_latched = rosbags_qos(
        QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
    )
    best_effort = rosbags_qos(QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
    assert (reliable_latched.depth, reliable_latched.durability) == (1, QosDurability.TRANSIENT_LOCAL)
    assert reader_policy([reliable_latched]) == (True, True)
    assert reader_policy([reliable_latched, best_effort]) == (False, False)
    assert reader_policy([replay_offer(), reliable_latched]) == (True, False)
    assert reader_policy([]) == (False, False)
