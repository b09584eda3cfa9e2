"""segment_node: start-up (any valid parameter set works, every invalid one is a sentence), the per-scan path
in this process (nothing kills it, what is dropped is counted and logged), end to end over real DDS (the node
in a subprocess). Parameter validation without ROS: test_parameters.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import yaml
from conftest import REPO
from inprocess import info, restamped, segment_node
from node_peer import spin_until, wait_matched

ROOT = "/segment"
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
PARAM_FILE = REPO / "config" / "segment.param.yaml"
NUM_POINTS = 34_688
CLOUD = "~/input/pointcloud"
# The shipped parameters (nuScenes rig and offsets), compressed images, a scan ready as soon as it is polled.
IN_PROCESS = (
    "--params-file",
    str(PARAM_FILE),
    "-p",
    "camera_transport:=compressed",
    "-p",
    "sync.timeout:=0.0",
)


@pytest.fixture(scope="module")
def frame_messages(nuscenes_keyframe):
    from xkd_ros.data.messages import frame_to_messages

    return frame_to_messages(nuscenes_keyframe, "jpeg")


# ------------------------------------------------------------------ start-up, in this process
@pytest.mark.dds
@pytest.mark.timeout(120)
def test_starts_without_a_parameter_file_with_the_schema_defaults(ros_env):
    from xkd_ros.parameters import defaults

    with segment_node() as node:
        assert node.cameras == tuple(node.rig.names) == CAMERAS  # ["*"]: the rig's (config/nuscenes.rig.yaml)
        assert dict(node.collector.config.camera_offsets) == dict.fromkeys(node.cameras, 0.0)
        declared = {name: node.get_parameter(name).value for name in defaults()}
        assert {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in declared.items()} == defaults()


@pytest.mark.dds
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("file", "args", "cameras"),
    [
        ("cameras: []\n", (), ()),  # rclpy: "Cannot declare a statically typed parameter ... NOT_SET"
        ("threads: 1\n", ("-p", "cameras:=[]", "-p", "sync.camera_offsets:=[]"), ()),  # ignored before
        ("cameras: [CAM_BACK, CAM_FRONT]\n", (), ("CAM_BACK", "CAM_FRONT")),  # no offsets: 0 for each
        ("sync:\n      camera_offsets: {CAM_FRONT: -0.02}\n", (), CAMERAS),  # a map leaving cameras out
    ],
)
def test_empty_lists_and_missing_offsets_work(ros_env, tmp_path, file, args, cameras):
    """[] is the LiDAR-only configuration (no camera subscribed or fused), not a parameter error."""
    from rclpy.parameter import Parameter

    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    " + file)
    with segment_node("--params-file", str(path), *args) as node:
        assert node.cameras == cameras
        assert tuple(node.rig.names) == cameras
        offsets = dict(node.collector.config.camera_offsets)
        assert offsets == {
            c: (-0.02 if "CAM_FRONT:" in file and c == "CAM_FRONT" else 0.0) for c in node.cameras
        }
        assert node.get_parameter("cameras").type_ == Parameter.Type.STRING_ARRAY


@pytest.mark.dds
@pytest.mark.timeout(120)
def test_parameter_changes_are_refused_naming_the_parameter(ros_env):
    from rclpy.parameter import Parameter

    with segment_node(*IN_PROCESS) as node:
        (result,) = node.set_parameters([Parameter("sync.timeout", value=0.5)])
        assert not result.successful
        assert "'sync.timeout'" in result.reason
        assert "start-up only" in result.reason
        assert node.get_parameter("sync.timeout").value == 0.0
        assert node.collector.config.timeout == 0.0
        (result,) = node.set_parameters(
            [Parameter("use_sim_time", value=True)]
        )  # ROS's own: rclpy applies it
        assert result.successful


@pytest.mark.dds
@pytest.mark.timeout(120)
def test_half_built_node_leaves_nothing_behind(ros_env):
    """A start-up error after the rclpy node exists (here: the model) destroys it at once; the context's own
    clean-up at shutdown then finds nothing half-built (once: AttributeError `_decoder`)."""
    import rclpy

    from xkd_ros.node import SegmentNode, StartupError

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(StartupError, match=r"/nonexistent/model\.onnx") as raised:
            SegmentNode(context=context, cli_args=["--ros-args", "-p", "model_path:=/nonexistent/model.onnx"])
    finally:
        rclpy.shutdown(context=context)  # `raised` keeps the node alive, as main's error handling does
    assert raised.value is not None


# ------------------------------------------------------------------ start-up errors: one line, exit 1
def _bad_yaml(tmp_path) -> str:
    path = tmp_path / "bad.param.yaml"
    path.write_text("/**:\n  ros__parameters:\n    cameras: [\n")
    return str(path)


@pytest.mark.dds
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--params-file", str(PARAM_FILE), "-p", "bogus_key:=1"), "'bogus_key': unknown parameter"),
        (("-p", "model_path:=/nonexistent/model.onnx"), "/nonexistent/model.onnx"),
        (
            ("--params-file", "/nonexistent/segment.param.yaml"),
            "'/nonexistent/segment.param.yaml' does not exist",
        ),
        (("--params-file", _bad_yaml), "bad.param.yaml"),
        (("-p", "cameras:=["), "cameras:=["),
        (("-p", "sync.match_threshold:=.nan"), "'sync.match_threshold': nan is not a finite number"),
        (("-p", "sync.timeout:=.inf"), "'sync.timeout': inf is not a finite number"),
        (("-p", "sync.camera_offsets:=[0.0, .nan]"), "'sync.camera_offsets': nan is not a finite number"),
        (("-p", "cameras:=[CAM_FRONT, image_2]"), "has no camera(s) ['image_2']"),
        (("-p", "lidar.sensor:=velodyne_hdl65e"), "'lidar.sensor'"),
    ],
)
def test_startup_error_is_one_line_and_exit_1(ros_env, tmp_path, args, named):
    args = [a(tmp_path) if callable(a) else a for a in args]
    result = subprocess.run(
        [sys.executable, "-m", "xkd_ros.node", "--ros-args", *args],
        env=ros_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=150,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1, output
    assert named in output


# ------------------------------------------------------------------ the per-scan path, in this process
def _frame(node, messages, shift: int, cloud=None, images: dict | None = None, sequence=None) -> None:
    """A frame into the node's callbacks (images, then the scan, moved `shift` seconds), then a poll, and
    the wait for the inference thread to be done with it (pipeline.overlap)."""
    for camera in node.cameras:
        image = (images or {}).get(camera, messages.images[camera])
        node._on_image(camera, restamped(image, shift), {})
    scan = restamped(messages.cloud if cloud is None else cloud, shift)
    node._on_cloud(scan, {} if sequence is None else info(sequence))
    node._on_poll()
    assert node.wait_idle(120), "the inference thread is still busy after 120 s"


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_any_inference_error_skips_the_scan_and_the_node_lives_on(ros_env, frame_messages):
    with segment_node(*IN_PROCESS) as node:

        def fail(*args, **kwargs):
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory")

        node.segmenter.infer = fail  # on the inference thread (pipeline.overlap)
        _frame(node, frame_messages, 1)
        assert node.counts["scans failed"] == 1
        assert node.log.warnings(CLOUD, "RuntimeError", "Failed to allocate memory")
        del node.segmenter.infer
        _frame(node, frame_messages, 2)
        assert node.counts["scans labelled"] == 1
        assert node.diagnostic_values()["scans failed"] == "1"


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_intensity_scale_contradicted_by_the_scans_is_said(ros_env, frame_messages):
    """nuScenes intensities (0..255) with the profile set to KITTI's 0..1: labelled, and said once, naming
    the setting; the right scale is not warned about."""
    with segment_node(*IN_PROCESS, "-p", "lidar.intensity_scale:=1.0") as node:
        assert node.rig.lidar.intensity_scale == 1.0
        _frame(node, frame_messages, 1)
        assert node.counts["scans labelled"] == 1
        assert node.log.warnings(CLOUD, "above lidar.intensity_scale 1", "lidar.intensity_scale")
        assert "above lidar.intensity_scale" in node.diagnostic_values()["intensity check"]
    with segment_node(*IN_PROCESS) as node:
        _frame(node, frame_messages, 1)
        assert node.diagnostic_values()["intensity check"] == "ok (first 1 scans)"
        assert not node.log.warnings("intensity")


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_lidar_only_configuration_labels_every_point_and_says_so(ros_env, frame_messages):
    # no parameter file: rcl lets a file's list win over an empty `-p cameras:=[]` (it cannot type [])
    lidar_only = ("-p", "camera_transport:=compressed", "-p", "sync.timeout:=0.0", "-p", "cameras:=[]")
    with segment_node(*lidar_only) as node:
        assert node.cameras == ()
        _frame(node, frame_messages, 1)
        assert node.counts["scans labelled"] == 1
        values = node.diagnostic_values()
        assert values["cameras fused (last scan)"] == ""
        assert values["points fused (last scan) [%]"] == "0.0"
        assert "LiDAR-only" in values["rig"]


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_cloud_over_max_points_is_refused_before_decoding(ros_env, frame_messages):
    with segment_node(*IN_PROCESS, "-p", "max_points:=1000") as node:
        _frame(node, frame_messages, 1)
        assert node.counts["scans too large"] == 1
        assert node.collector.stats.scans_received == 0  # never queued, never decoded
        assert node.log.warnings(CLOUD, f"{NUM_POINTS} points, more than max_points 1000")


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_a_cloud_of_many_fields_is_labelled(ros_env, frame_messages):
    """Thousands of fields besides x, y, z and intensity (all overlapping them) are not decoded."""
    from sensor_msgs.msg import PointField

    cloud = restamped(frame_messages.cloud, 0)
    extra = [PointField(name=f"f{i}", offset=0, datatype=PointField.FLOAT32, count=1) for i in range(5000)]
    cloud.fields = [*cloud.fields, *extra]
    with segment_node(*IN_PROCESS) as node:
        _frame(node, frame_messages, 1, cloud=cloud)
        assert node.counts["scans labelled"] == 1, node.log.lines


def _png_declaring(width: int, height: int) -> bytes:
    """A small real PNG whose header (IHDR) says width x height: what a decoder would allocate."""
    data = bytearray(cv2.imencode(".png", np.zeros((9, 16, 3), np.uint8))[1].tobytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return bytes(data)


@pytest.mark.dds
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("data", "said"),
    [
        (_png_declaring(20000, 20000), "PNG image of 20000x20000 (from its header)"),
        (cv2.imencode(".jpg", np.zeros((720, 1280, 3), np.uint8))[1].tobytes(), "JPEG image of 1280x720"),
    ],
    ids=["png declaring 20000x20000", "jpeg of 1280x720"],
)
def test_compressed_image_size_is_checked_from_its_header(ros_env, frame_messages, monkeypatch, data, said):
    """Refused before any decoding, reporting the size received (not the size of a reduced decode)."""
    import xkd_ros.node

    decoded = []
    real = xkd_ros.node.rgb_from_image
    monkeypatch.setattr(xkd_ros.node, "rgb_from_image", lambda msg, r=1: decoded.append(msg) or real(msg, r))
    image = restamped(frame_messages.images["CAM_FRONT"], 0)
    image.data = data
    with segment_node(*IN_PROCESS) as node:
        _frame(node, frame_messages, 1, images={"CAM_FRONT": image})
        assert node.counts["CAM_FRONT images refused"] == 1
        assert node.log.warnings("CAM_FRONT/image/compressed", said, "calibrated at 1600x900")
        assert node.counts["scans labelled"] == 1
        assert len(decoded) == len(CAMERAS) - 1  # every camera but CAM_FRONT


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_camera_info_of_another_size_is_reported_and_not_used(ros_env, frame_messages):
    info_msg = restamped(frame_messages.camera_infos["CAM_BACK"], 0)
    info_msg.width, info_msg.height = 1280, 720
    with segment_node(*IN_PROCESS) as node:
        node._on_info("CAM_BACK", info_msg)
        assert node.counts["CAM_BACK camera_info refused"] == 1
        assert node.log.warnings("CAM_BACK/camera_info", "1280x720", "1600x900")
        assert "CAM_BACK" not in node._intrinsics
        node._on_info("CAM_BACK", frame_messages.camera_infos["CAM_BACK"])  # the right size is taken
        assert "CAM_BACK" in node._intrinsics


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_scans_with_a_repeated_stamp_are_counted_and_logged(ros_env, frame_messages):
    """A driver that leaves its stamps at 0: one scan labelled, the others counted where /diagnostics shows
    them, and a warning saying why."""
    with segment_node(*IN_PROCESS) as node:
        for _ in range(4):
            _frame(node, frame_messages, 0)
        values = node.diagnostic_values()
        assert values["scans labelled"] == "1"
        assert values["sync: scans_duplicate"] == "3"
        assert values["scans dropped"] == "3"
        assert node.log.warnings(CLOUD, "stamp of an earlier one")


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_messages_lost_before_the_node_are_counted(ros_env, frame_messages):
    """Gaps in a publisher's sequence numbers: messages a depth-1 queue overwrote while the node was busy."""
    with segment_node(*IN_PROCESS) as node:
        _frame(node, frame_messages, 1, sequence=1)
        _frame(node, frame_messages, 2, sequence=5)
        assert node.counts["scans lost in transport"] == 3
        assert node.log.warnings(CLOUD, "3 message(s) published but not received")


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_warnings_are_throttled_per_topic_and_kind(ros_env, frame_messages):
    """A second kind of fault on a topic that just logged still gets its line; the same kind does not."""
    cut = restamped(frame_messages.cloud, 0)
    cut.data = bytes(cut.data[: len(cut.data) // 2])
    with segment_node(*IN_PROCESS) as node:
        _frame(node, frame_messages, 1, cloud=cut)
        _frame(node, frame_messages, 2, cloud=cut)
        node.segmenter.prepare = lambda *a, **k: (_ for _ in ()).throw(ValueError("points: no good"))
        _frame(node, frame_messages, 3)
        assert node.counts["scans malformed"] == 2
        assert len(node.log.warnings(CLOUD, "malformed PointCloud2")) == 1
        assert node.log.warnings(CLOUD, "scan not labelled", "points: no good")


# ------------------------------------------------------------------ the node process, over DDS
def _node_command(*overrides: str) -> list[str]:
    params = ["--params-file", str(PARAM_FILE)]
    for override in overrides:
        params += ["-p", override]
    return [sys.executable, "-m", "xkd_ros.node", "--ros-args", *params]


@pytest.fixture(scope="module")
def node_process(tmp_path_factory, module_ros_env):
    log = tmp_path_factory.mktemp("node") / "segment_node.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            _node_command("camera_transport:=compressed", "qos.reliable:=true", "sync.timeout:=0.5"),
            env={**module_ros_env, "PYTHONUNBUFFERED": "1"},
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
def ros(node_process, module_ros_env):
    """An rclpy context and node in this process, on the node's domain (module_ros_env's os.environ)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("segment_node_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


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
        self.cloud_sub = node.create_subscription(
            PointCloud2, f"{ROOT}/output/labeled_cloud", self.clouds.append, qos
        )
        self.diagnostics_sub = node.create_subscription(
            DiagnosticArray, "/diagnostics", self.diagnostics.append, 10
        )
        self.shift = 0
        self.clouds_sent = 0

    def spin_until(self, condition, timeout: float, what: str) -> None:
        spin_until(self.executor, self.process, self.log, condition, timeout, what)

    def wait_connected(self) -> None:
        """Every input of the node matched to our publishers, its outputs to our subscriptions."""
        pubs = {"pointcloud": self.cloud_pub}
        pubs.update({f"{c}/image": p for c, p in self.image_pubs.items()})
        pubs.update({f"{c}/camera_info": p for c, p in self.info_pubs.items()})
        subs = {"labeled_cloud": self.cloud_sub, "/diagnostics": self.diagnostics_sub}
        wait_matched(self.executor, self.process, self.log, pubs, subs, 60)

    def publish(self, messages, corrupt: str | None = None, corrupt_info: str | None = None, cut_cloud=False):
        """The frame with every stamp moved by a fresh whole second (the collector ignores repeated scans);
        returns the cloud header sent. `corrupt` garbles that camera's JPEG, `corrupt_info` zeroes that
        camera's K (an uncalibrated driver), `cut_cloud` truncates the cloud's data."""
        self.shift += 1
        for camera in CAMERAS:
            info_msg = restamped(messages.camera_infos[camera], self.shift)
            if camera == corrupt_info:
                info_msg.k = [0.0] * 9
            self.info_pubs[camera].publish(info_msg)
            image = restamped(messages.images[camera], self.shift)
            if camera == corrupt:
                image.data = bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8))
            self.image_pubs[camera].publish(image)
        cloud = restamped(messages.cloud, self.shift)
        if cut_cloud:
            cloud.data = bytes(cloud.data[: len(cloud.data) // 2])
        self.publish_cloud(cloud)
        return cloud.header

    def publish_cloud(self, cloud) -> None:
        self.cloud_pub.publish(cloud)
        self.clouds_sent += 1

    def labelled(self, messages, attempts: int = 5, **corruption):
        """Publish until a labelled cloud with the header of one sent comes back (reliable, matched: the
        first normally does; a later attempt covers a scan superseded while the node was busy)."""
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

    def last_diagnostics(self) -> dict[str, str]:
        return {kv.key: kv.value for kv in self.diagnostics[-1].status[0].values} if self.diagnostics else {}


@pytest.fixture(scope="module")
def harness(ros, node_process):
    node, executor = ros
    process, log = node_process
    harness = Harness(node, executor, process, log)
    harness.wait_connected()
    return harness


@pytest.mark.dds
@pytest.mark.timeout(240)
def test_end_to_end_labelled_cloud(harness, frame_messages):
    from xkd_ros.msgs import read_points

    cloud, _ = harness.labelled(frame_messages)
    assert [f.name for f in cloud.fields] == [
        "x",
        "y",
        "z",
        "intensity",
        "label",
        "fused",
        "confidence",
        "rgb",
    ]
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

    harness.spin_until(
        lambda: harness.last_diagnostics().get("scans labelled", "0") != "0", 10, "/diagnostics after a scan"
    )
    values = harness.last_diagnostics()
    assert values["backend"] == "onnxruntime"
    # The six 1600x900 JPEGs, decoded at half size over a thread pool, all went in.
    assert values["cameras matched (last scan)"] == "6/6"


@pytest.mark.dds
@pytest.mark.timeout(240)
def test_malformed_image_does_not_stop_the_node(harness, frame_messages):
    cloud, _ = harness.labelled(frame_messages, corrupt="CAM_FRONT")
    assert cloud.width * cloud.height == NUM_POINTS
    # The scan after it is labelled too: the node lives on.
    harness.labelled(frame_messages)
    assert harness.process.poll() is None
    harness.spin_until(
        lambda: "CAM_FRONT/image/compressed" in harness.log.read_text(), 10, "the logged bad image"
    )
    harness.spin_until(
        lambda: harness.last_diagnostics().get("CAM_FRONT images refused", "0") != "0",
        10,
        "the counted image",
    )


@pytest.mark.dds
@pytest.mark.timeout(240)
def test_malformed_camera_info_keeps_the_previous_calibration(harness, frame_messages):
    harness.labelled(frame_messages)  # a good CameraInfo first
    cloud, _ = harness.labelled(frame_messages, corrupt_info="CAM_BACK")
    assert cloud.width * cloud.height == NUM_POINTS
    harness.spin_until(
        lambda: "CAM_BACK/camera_info" in harness.log.read_text(), 10, "the logged bad CameraInfo"
    )


@pytest.mark.dds
@pytest.mark.timeout(240)
def test_malformed_cloud_is_skipped_and_the_next_scan_labelled(harness, frame_messages):
    harness.publish(frame_messages, cut_cloud=True)
    harness.spin_until(lambda: "input/pointcloud" in harness.log.read_text(), 10, "the logged bad cloud")
    cloud, _ = harness.labelled(frame_messages)
    assert cloud.width * cloud.height == NUM_POINTS
    assert harness.process.poll() is None


@pytest.mark.dds
@pytest.mark.timeout(240)
def test_every_scan_sent_is_received_or_counted_lost(harness, frame_messages):
    """A burst of scans into the node's depth-1 queue: what its queue overwrote is counted from the sequence
    numbers, so scans received + scans lost in transport = scans sent, exactly (the first scan this publisher
    sent, in test_end_to_end_labelled_cloud or here, was received: nothing before it to lose)."""
    harness.labelled(frame_messages)
    for _ in range(12):
        harness.shift += 1
        harness.publish_cloud(restamped(frame_messages.cloud, harness.shift))

    def accounted() -> int:
        values = harness.last_diagnostics()
        return sum(int(values.get(key, 0)) for key in ("scans received", "scans lost in transport"))

    harness.spin_until(
        lambda: accounted() >= harness.clouds_sent,
        30,
        f"{harness.clouds_sent} scans received or counted lost",
    )
    assert accounted() == harness.clouds_sent, harness.last_diagnostics()


def test_rviz_config_shows_the_outputs():
    config = yaml.safe_load((REPO / "config" / "segment.rviz").read_text())
    displays = {d["Name"]: d for d in config["Visualization Manager"]["Displays"]}
    assert displays["Labeled cloud"]["Color Transformer"] == "RGB8"
    assert displays["Labeled cloud"]["Topic"]["Value"] == f"{ROOT}/output/labeled_cloud"
    assert displays["Class legend"]["Class"] == "rviz_default_plugins/MarkerArray"
    assert all(displays[c]["Topic"]["Value"] == f"{ROOT}/input/{c}/image" for c in CAMERAS)
