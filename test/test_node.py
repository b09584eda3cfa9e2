"""segment_node: parameter validation, start-up errors, end to end over real DDS (node in a subprocess)."""

from __future__ import annotations

import os
import py_compile
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from conftest import REPO

ROOT = "/segment"
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
DOMAIN_ID = random.randint(100, 200)
FASTDDS_XML = REPO / "config" / "fastdds.xml"
NUM_POINTS = 34_688


def _param_file_params() -> dict:
    data = yaml.safe_load((REPO / "config" / "segment.param.yaml").read_text())
    flat = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                walk(f"{prefix}{key}.", child)
        else:
            flat[prefix[:-1]] = value

    walk("", data["/**"]["ros__parameters"])
    return flat


# ------------------------------------------------------------------ parameter validation, no ROS graph
def test_shipped_parameters_are_valid():
    from xkd_ros.node import validate_parameters

    params = validate_parameters(_param_file_params())
    assert params["cameras"] == list(CAMERAS)
    assert len(params["sync.camera_offsets"]) == len(CAMERAS)


@pytest.mark.parametrize(
    ("params", "named", "reason"),
    [
        ({"sync.foo": 1.0}, "sync.foo", "unknown"),
        ({"bogus": True}, "bogus", "unknown"),
        ({"threads": "four"}, "threads", "type"),
        ({"qos.reliable": 1}, "qos.reliable", "type"),
        ({"sync.timeout": -0.5}, "sync.timeout", "minimum"),
        ({"qos.depth": 0}, "qos.depth", "minimum"),
        ({"backend": "openvino"}, "backend", "is not one of"),
        ({"camera_transport": "theora"}, "camera_transport", "is not one of"),
        ({"cameras": ["CAM_FRONT"], "sync.camera_offsets": [0.0, 0.1]}, "sync.camera_offsets", "aligned"),
    ],
)
def test_bad_parameter_is_named(params, named, reason):
    from xkd_ros.node import ParameterError, validate_parameters

    with pytest.raises(ParameterError, match=reason) as info:
        validate_parameters(params)
    assert f"'{named}'" in str(info.value)


def test_camera_offsets_as_map():
    from xkd_ros.node import validate_parameters

    params = validate_parameters({"cameras": ["CAM_FRONT"], "sync.camera_offsets.CAM_FRONT": -0.02})
    assert params["sync.camera_offsets"] == {"CAM_FRONT": -0.02}


def test_launch_file_compiles():
    py_compile.compile(str(REPO / "launch" / "segment.launch.py"), doraise=True)


# ------------------------------------------------------------------ the node process
def _env() -> dict:
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(DOMAIN_ID),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        FASTDDS_DEFAULT_PROFILES_FILE=str(FASTDDS_XML),
        PYTHONUNBUFFERED="1",
    )
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


def _node_command(*overrides: str) -> list[str]:
    params = ["--params-file", str(REPO / "config" / "segment.param.yaml")]
    for override in overrides:
        params += ["-p", override]
    return [sys.executable, "-m", "xkd_ros.node", "--ros-args", *params]


@pytest.mark.parametrize(
    ("override", "named"),
    [("bogus_key:=1", "bogus_key"), ("model_path:=/nonexistent/model.onnx", "/nonexistent/model.onnx")],
)
def test_startup_error_exits_nonzero(override, named):
    result = subprocess.run(
        _node_command(override), env=_env(), cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert named in result.stdout + result.stderr


@pytest.fixture(scope="module")
def node_process(tmp_path_factory):
    log = tmp_path_factory.mktemp("node") / "segment_node.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            _node_command("camera_transport:=compressed", "qos.reliable:=true", "sync.timeout:=0.5"),
            env=_env(),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    yield process, log
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def ros(node_process):
    """An rclpy context and node in this process on the test's domain, with the large-data profile."""
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_XML)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    node = rclpy.create_node("segment_node_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


@pytest.fixture(scope="module")
def frame_messages():
    from xkd_ros.data import load_keyframe
    from xkd_ros.data.messages import frame_to_messages

    frame = load_keyframe(REPO / "test" / "data" / "nuscenes_demo")
    return frame_to_messages(frame, "jpeg")


class Harness:
    """Publishers for every input of the node, and the outputs it sends back."""

    def __init__(self, node, executor, process, log):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2

        self.node, self.executor, self.process, self.log = node, executor, process, log
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.cloud_pub = node.create_publisher(PointCloud2, f"{ROOT}/input/pointcloud", qos)
        self.image_pubs = {
            c: node.create_publisher(CompressedImage, f"{ROOT}/input/{c}/image/compressed", qos)
            for c in CAMERAS
        }
        self.info_pubs = {
            c: node.create_publisher(CameraInfo, f"{ROOT}/input/{c}/camera_info", qos) for c in CAMERAS
        }
        self.clouds, self.diagnostics = [], []
        node.create_subscription(PointCloud2, f"{ROOT}/output/labeled_cloud", self.clouds.append, qos)
        node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.shift = 0

    def spin_until(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"node died: {self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"timed out waiting for {what}; log: {self.log.read_text()[-3000:]}"
            )
            self.executor.spin_once(timeout_sec=0.05)

    def wait_connected(self) -> None:
        pubs = [self.cloud_pub, *self.image_pubs.values(), *self.info_pubs.values()]
        self.spin_until(lambda: all(p.get_subscription_count() > 0 for p in pubs), 30, "discovery")

    def publish(self, messages, corrupt: str | None = None, corrupt_info: str | None = None, cut_cloud=False):
        """The frame with every stamp moved by a fresh whole second (the collector ignores repeated scans);
        returns the cloud header sent. `corrupt` garbles that camera's JPEG, `corrupt_info` zeroes that
        camera's K (an uncalibrated driver), `cut_cloud` truncates the cloud's data."""
        import copy

        self.shift += 1

        def moved(msg):
            msg = copy.copy(msg)
            header = copy.deepcopy(msg.header)
            header.stamp.sec += self.shift
            msg.header = header
            return msg

        for camera in CAMERAS:
            info = moved(messages.camera_infos[camera])
            if camera == corrupt_info:
                info.k = [0.0] * 9
            self.info_pubs[camera].publish(info)
            image = moved(messages.images[camera])
            if camera == corrupt:
                image.data = bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8))
            self.image_pubs[camera].publish(image)
        cloud = moved(messages.cloud)
        if cut_cloud:
            cloud.data = bytes(cloud.data[: len(cloud.data) // 2])
        self.cloud_pub.publish(cloud)
        return cloud.header

    def labelled(self, messages, attempts: int = 5, **corruption):
        """Publish until a labelled cloud with the header of one sent comes back."""
        sent = []
        for _ in range(attempts):
            sent.append(self.publish(messages, **corruption))
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                for cloud in self.clouds:
                    if any(cloud.header == header for header in sent):
                        return cloud, sent
                assert self.process.poll() is None, f"node died: {self.log.read_text()[-3000:]}"
                self.executor.spin_once(timeout_sec=0.05)
        raise AssertionError(f"no labelled cloud for {len(sent)} scans; log: {self.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def harness(ros, node_process):
    node, executor = ros
    process, log = node_process
    harness = Harness(node, executor, process, log)
    harness.wait_connected()
    return harness


def test_end_to_end_labelled_cloud(harness, frame_messages):
    from xkd_ros.msgs import read_points

    cloud, _ = harness.labelled(frame_messages)
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "intensity", "label", "confidence", "rgb"]
    assert cloud.width * cloud.height == NUM_POINTS
    assert cloud.header.frame_id == frame_messages.cloud.header.frame_id
    points = read_points(cloud)
    labels = points["label"]
    assert ((labels < 14) | (labels == 255)).all()
    assert (labels < 14).sum() > NUM_POINTS // 2
    sent_xyz = read_points(frame_messages.cloud, ["x", "y", "z"])
    np.testing.assert_array_equal(points["x"], sent_xyz["x"])
    confidence = points["confidence"]
    assert ((confidence >= 0) & (confidence <= 1)).all()

    def after_a_scan():
        return [
            values
            for values in ({kv.key: kv.value for kv in d.status[0].values} for d in harness.diagnostics)
            if values["scans labelled"] != "0"
        ]

    harness.spin_until(after_a_scan, 5, "/diagnostics after a labelled scan")
    values = after_a_scan()[-1]
    assert values["backend"] == "onnxruntime"
    # The six 1600x900 JPEGs, decoded at half size over a thread pool, all went in.
    assert values["cameras matched (last scan)"] == "6/6"


def test_malformed_image_does_not_stop_the_node(harness, frame_messages):
    cloud, _ = harness.labelled(frame_messages, corrupt="CAM_FRONT")
    assert cloud.width * cloud.height == NUM_POINTS
    # The scan after it is labelled too: the node lives on.
    harness.labelled(frame_messages)
    assert harness.process.poll() is None
    harness.spin_until(
        lambda: "CAM_FRONT/image/compressed" in harness.log.read_text(), 5, "the logged bad image"
    )


def test_malformed_camera_info_keeps_the_previous_calibration(harness, frame_messages):
    harness.labelled(frame_messages)  # a good CameraInfo first
    cloud, _ = harness.labelled(frame_messages, corrupt_info="CAM_BACK")
    assert cloud.width * cloud.height == NUM_POINTS
    harness.spin_until(
        lambda: "CAM_BACK/camera_info" in harness.log.read_text(), 5, "the logged bad CameraInfo"
    )


def test_malformed_cloud_is_skipped_and_the_next_scan_labelled(harness, frame_messages):
    harness.publish(frame_messages, cut_cloud=True)
    harness.spin_until(lambda: "input/pointcloud" in harness.log.read_text(), 10, "the logged bad cloud")
    cloud, _ = harness.labelled(frame_messages)
    assert cloud.width * cloud.height == NUM_POINTS
    assert harness.process.poll() is None


def test_rviz_config_shows_the_outputs():
    config = yaml.safe_load((REPO / "config" / "segment.rviz").read_text())
    displays = {d["Name"]: d for d in config["Visualization Manager"]["Displays"]}
    assert displays["Labeled cloud"]["Color Transformer"] == "RGB8"
    assert displays["Labeled cloud"]["Topic"]["Value"] == f"{ROOT}/output/labeled_cloud"
    assert displays["Class legend"]["Class"] == "rviz_default_plugins/MarkerArray"
    assert all(displays[c]["Topic"]["Value"] == f"{ROOT}/input/{c}/image" for c in CAMERAS)
