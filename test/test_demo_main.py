"""The main job over real DDS: recording -> xkd-replay -> segment_node -> what it published, evaluated; and
the hand-shakes of xkd_ros.evaluate.live that make it deterministic on a busy machine."""

import json
import os
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml
from rosbags.interfaces import QosDurability, QosReliability
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from xkd_ros import demo
from xkd_ros.data.messages import stamp_to_ns
from xkd_ros.data.rosbag import write_bag
from xkd_ros.evaluate.live import NODE_OUTPUTS, LiveError, Recording, run_live
from xkd_ros.ros_env import DOMAIN_IDS, RosEnvironmentError, domain_environment

TYPESTORE = get_typestore(Stores.ROS2_KILTED)


def session_topics(bag):
    """topic -> (type, messages, offered QoS profiles) of a recorded session, and its labelled clouds."""
    with Reader(bag) as reader:
        topics = {c.topic: (c.msgtype, c.msgcount, c.ext.offered_qos_profiles) for c in reader.connections}
        clouds = [c for c in reader.connections if c.topic == "/segment/output/labeled_cloud"]
        frames = {
            TYPESTORE.deserialize_cdr(raw, c.msgtype).header.frame_id for c, _, raw in reader.messages(clouds)
        }
    return topics, frames


def synthetic_bag(path, frames, seed):
    """A small synthetic drive (240x135 cameras) as a labelled bag."""
    from xkd_ros.data.synthetic import SyntheticGenerator, load_config

    overrides = {"camera": {"width": 240, "height": 135}, "sequence": {"frames_per_scene": frames}}
    generator = SyntheticGenerator(load_config(overrides=overrides), seed=seed)
    drive = [generator.sample("live", index).frame for index in range(frames)]
    return write_bag(drive, path, image_format="jpeg"), drive


def start_node(env, bag, drive, **options):
    cameras = drive[0].rig.names
    offsets = [float(np.mean([f.image_stamps[c] - f.stamp for f in drive])) for c in cameras]
    command = demo.node_command(bag / "rig.yaml", cameras, offsets, **options)
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(node):
    node.send_signal(signal.SIGINT)
    try:
        return node.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        node.kill()
        return node.communicate()[0]


@pytest.mark.dds
@pytest.mark.timeout(400)
def test_demo_at_small_size(tmp_path, ros_env, capsys):
    assert demo.main(["--out", str(tmp_path), "--frames", "3"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["scans_labelled"] == report["scans_recorded"] == 3
    assert report["scans_lost"] == []
    assert 0.2 < report["miou"] <= 1  # the default model on unseen synthetic scans (about 0.58 on 8 of them)
    assert report["node_total_ms"]["p50"] > 0
    assert (tmp_path / "bev.png").is_file()
    domain = ros_env["ROS_DOMAIN_ID"]
    assert f"ROS_DOMAIN_ID {domain} (from the environment)" in capsys.readouterr().out

    # The session: the replayed inputs and all the node published, in one mcap, counted in the report.
    topics, frames = session_topics(tmp_path / "session")
    assert report["session_messages"] == {t: n for t, (_, n, _) in topics.items()}
    per_scan = [
        "/segment/output/labeled_cloud",
        "/segment/debug/total_ms",
        "/segment/debug/pipeline_latency_ms",
    ]
    assert {t: topics[t][:2] for t in per_scan} == {
        "/segment/output/labeled_cloud": ("sensor_msgs/msg/PointCloud2", 3),
        "/segment/debug/total_ms": ("geometry_msgs/msg/PointStamped", 3),
        "/segment/debug/pipeline_latency_ms": ("geometry_msgs/msg/PointStamped", 3),
    }
    assert topics["/lidar/points"][1] == topics["/cameras/CAM_FRONT/image_raw/compressed"][1] == 3
    assert topics["/tf_static"][0] == "tf2_msgs/msg/TFMessage"
    assert topics["/diagnostics"][1] >= 1
    markers = topics["/segment/output/class_markers"]
    assert markers[1] >= 1
    assert {q.durability for q in markers[2]} == {QosDurability.TRANSIENT_LOCAL}  # ros2 bag play latches it
    # The viewer configs: rviz's fixed frame is the frame of the clouds the node published (issue 14).
    rviz = yaml.safe_load((tmp_path / "segment.rviz").read_text())
    assert frames == {rviz["Visualization Manager"]["Global Options"]["Fixed Frame"]}
    layout = json.loads((tmp_path / "segment.foxglove.json").read_text())
    assert frames == {layout["configById"]["3D!xkd_scene"]["followTf"]}
    picture = cv2.imread(str(tmp_path / "session.png"))
    assert picture is not None
    assert picture.shape[1] > picture.shape[0]  # the cameras and the bird's-eye view side by side


FAKE_NODE = """
import sys

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, PointStamped
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from xkd_ros.msgs import read_points
from xkd_ros.msgs.labeled_cloud import create_labeled_cloud
from xkd_ros.viewers import DEBUG_STAGES

# A segment_node that cannot label its second scan: it subscribes and publishes what the real one does
# (the debug timings stamped with the scan's header).
rclpy.init(args=sys.argv)
node = rclpy.create_node("segment", automatically_declare_parameters_from_overrides=True)
labelled = node.create_publisher(PointCloud2, "~/output/labeled_cloud", 10)
latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
node.create_publisher(MarkerArray, "~/output/class_markers", latched).publish(MarkerArray())
node.create_publisher(DiagnosticArray, "/diagnostics", 10)
node.create_publisher(String, "~/debug/fused_cameras", 10)
timings = [node.create_publisher(PointStamped, f"~/debug/{stage}_ms", 10) for stage in DEBUG_STAGES]
scans = []


def on_scan(msg):
    scans.append(msg.header.stamp)
    if len(scans) == 2:
        return
    points = read_points(msg, ["x", "y", "z"])
    xyz = np.column_stack([points["x"], points["y"], points["z"]])
    zeros = np.zeros(len(xyz), np.uint8)
    palette = np.array([[200, 40, 40]], np.uint8)
    labelled.publish(create_labeled_cloud(msg.header, xyz, None, zeros, zeros.astype(np.float32), palette))
    for publisher in timings:
        publisher.publish(PointStamped(header=msg.header, point=Point(x=1.0)))


node.create_subscription(PointCloud2, "~/input/pointcloud", on_scan, 10)
for camera in node.get_parameter("cameras").value:
    node.create_subscription(CompressedImage, f"~/input/{camera}/image/compressed", lambda m: None, 10)
    node.create_subscription(CameraInfo, f"~/input/{camera}/camera_info", lambda m: None, 10)
try:
    rclpy.spin(node)
except KeyboardInterrupt:
    pass
"""


@pytest.mark.dds
@pytest.mark.timeout(300)
def test_demo_fails_naming_the_scans_the_node_did_not_label(tmp_path, ros_env, capsys, monkeypatch):
    fake = tmp_path / "fake_node.py"
    fake.write_text(FAKE_NODE)
    real = demo.node_command
    monkeypatch.setattr(demo, "node_command", lambda *a, **k: [sys.executable, str(fake), *real(*a, **k)[3:]])

    assert demo.main(["--out", str(tmp_path / "out"), "--frames", "2"]) == 1
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert report["scans_recorded"] == 2
    assert report["scans_labelled"] == 1
    [lost] = report["scans_lost"]
    assert lost["index"] == 1
    seconds, nanoseconds = divmod(lost["stamp_ns"], 1_000_000_000)
    assert f"xkd-demo: error: 1 of 2 scans not labelled: #2 (stamp {seconds}.{nanoseconds:09d} s)" in (
        capsys.readouterr().err
    )


@pytest.mark.dds
@pytest.mark.timeout(300)
def test_real_keyframe_bag_through_the_node(tmp_path, nuscenes_keyframe, ros_env, monkeypatch):
    """The nuScenes keyframe recorded as a bag (no labels), replayed, labelled by segment_node."""
    bag = write_bag([nuscenes_keyframe], tmp_path / "bag", image_format="jpeg")
    node = start_node(ros_env, bag, [nuscenes_keyframe])
    for name in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE"):
        monkeypatch.delenv(name)  # the graph is joined from ros_env alone
    environment = dict(os.environ)
    try:
        result = run_live(Recording.from_bag(bag), ros_env, node_process=node)
    finally:
        log = stop(node)
    assert os.environ == environment  # joined the graph without changing this process's environment
    assert list(result.outputs) == [stamp_to_ns(nuscenes_keyframe.stamp)], log[-2000:]
    assert result.lost() == []
    labels = result.outputs[stamp_to_ns(nuscenes_keyframe.stamp)]
    assert labels.shape == (34688,)
    assert np.all((labels < 14) | (labels == 255))
    assert list(result.totals) == list(result.outputs)  # total_ms paired with its scan by the stamp


@pytest.mark.dds
@pytest.mark.timeout(300)
def test_evaluate_live_scores_a_node_with_best_effort_outputs(tmp_path, ros_env):
    """`xkd-evaluate --live BAG` against segment_node with the shipped QoS (qos.reliable false): the
    listener takes the node's best-effort labelled clouds, which a reliable reader would never match."""
    from xkd_ros.evaluate.cli import main as evaluate_main

    bag, drive = synthetic_bag(tmp_path / "bag", frames=2, seed=5)
    node = start_node(ros_env, bag, drive, reliable=False, depth=len(drive))
    session = tmp_path / "session"
    try:
        code = evaluate_main([str(bag), "--live", "--out", str(tmp_path / "eval"), "--record", str(session)])
    finally:
        log = stop(node)
    assert "QoS best effort" in log
    assert code == 0, log[-2000:]
    report = json.loads((tmp_path / "eval/live_report.json").read_text())
    assert report["scans_labelled"] == report["scans_with_ground_truth"] == 2
    assert report["scans_lost"] == []
    assert 0 < report["miou"] <= 1
    # --record: the best-effort clouds recorded too (a reliable reader would have matched nothing)
    topics, _ = session_topics(session)
    cloud = topics["/segment/output/labeled_cloud"]
    assert cloud[1] == 2
    assert {q.reliability for q in cloud[2]} == {QosReliability.BEST_EFFORT}
    outputs = {t if t.startswith("/") else f"/segment/{t}" for t in NODE_OUTPUTS}
    assert set(report["session_messages"]) == set(topics) >= outputs


@pytest.mark.dds
@pytest.mark.timeout(120)
def test_the_wait_for_the_node_ends_when_it_exits(tmp_path, ros_env):
    bag, _ = synthetic_bag(tmp_path / "bag", frames=1, seed=3)
    gone = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    gone.wait()
    with pytest.raises(LiveError, match="segment_node exited with status 3"):
        run_live(Recording.from_bag(bag), ros_env, node_process=gone)


def test_a_run_uses_the_users_domain_or_reserves_its_own(monkeypatch, capsys):
    monkeypatch.setenv("ROS_DOMAIN_ID", "42")
    with domain_environment("xkd-demo") as env:
        assert env["ROS_DOMAIN_ID"] == "42"
        assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert "ROS_DOMAIN_ID 42 (from the environment)" in capsys.readouterr().out

    monkeypatch.delenv("ROS_DOMAIN_ID")
    with domain_environment() as first, domain_environment() as second:
        ids = {int(first["ROS_DOMAIN_ID"]), int(second["ROS_DOMAIN_ID"])}
        assert len(ids) == 2  # reserved: two runs at a time never share one
        assert ids <= set(DOMAIN_IDS)
    assert "ROS_DOMAIN_ID" not in os.environ

    for wrong in ("lots", "300"):
        monkeypatch.setenv("ROS_DOMAIN_ID", wrong)
        refused = pytest.raises(
            RosEnvironmentError, match=f"ROS_DOMAIN_ID '{wrong}' is not a whole number in 0-232"
        )
        with refused, domain_environment():
            pass
