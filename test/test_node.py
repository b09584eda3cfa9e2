"""segment_node: start-up (any valid parameter set works, every invalid one is a sentence), the per-scan path
in this process (nothing kills it, what is dropped is counted and logged), end to end over real DDS (the node
in a subprocess). Parameter validation without ROS: test_parameters.py."""

from __future__ import annotations

import math
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
        assert (
            node.labeller.cameras == tuple(node.labeller.rig.names) == CAMERAS
        )  # ["*"]: the rig's (config/nuscenes.rig.yaml)
        assert dict(node.labeller.collector.config.camera_offsets) == dict.fromkeys(
            node.labeller.cameras, 0.0
        )
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
        assert node.labeller.cameras == cameras
        assert tuple(node.labeller.rig.names) == cameras
        offsets = dict(node.labeller.collector.config.camera_offsets)
        assert offsets == {
            c: (-0.02 if "CAM_FRONT:" in file and c == "CAM_FRONT" else 0.0) for c in node.labeller.cameras
        }
        assert node.get_parameter("cameras").type_ == Parameter.Type.STRING_ARRAY


# ------------------------------------------------------------------ parameters at run time, in this process
STARTUP_ONLY = "read at start-up only: relaunch with the new value"
RUNTIME = {"sync.match_threshold", "sync.timeout", "sync.camera_offsets", "debug.publish"}
DEBUG_TIMINGS = ("decode", "queue", "preprocess", "inference", "postprocess", "total", "pipeline_latency")


@pytest.mark.dds
@pytest.mark.timeout(120)
def test_start_up_only_parameters_are_read_only_and_refused_with_the_reason(ros_env):
    """`ros2 param describe` says which parameters are read-only (every one the schema does not mark
    x-runtime); setting one is refused naming it and saying why, and nothing changes."""
    from rclpy.parameter import Parameter

    from xkd_ros.parameters import defaults

    with segment_node(*IN_PROCESS) as node:
        described = {name: node.describe_parameter(name) for name in defaults()}
        assert {name for name, d in described.items() if not d.read_only} == RUNTIME
        assert all(d.additional_constraints == STARTUP_ONLY for d in described.values() if d.read_only)
        assert described["threads"].description.startswith("Inference threads")
        for param in (
            Parameter("threads", value=2),
            Parameter("cameras", value=["CAM_FRONT"]),
            Parameter("qos.depth", value=5),
        ):
            (result,) = node.set_parameters([param])
            assert not result.successful
            assert f"'{param.name}'" in result.reason
            assert STARTUP_ONLY in result.reason
            assert "sync.timeout" in result.reason  # the ones that do change are named
        assert node.get_parameter("threads").value == 0
        assert list(node.get_parameter("cameras").value) == list(CAMERAS)
        (result,) = node.set_parameters([Parameter("use_sim_time", value=True)])  # ROS's own: rclpy's
        assert result.successful


@pytest.mark.dds
@pytest.mark.timeout(120)
def test_runtime_parameters_change_the_collector_and_are_logged(ros_env):
    from rclpy.parameter import Parameter

    offsets = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    with segment_node(*IN_PROCESS) as node:
        results = node.set_parameters(
            [
                Parameter("sync.timeout", value=0.5),
                Parameter("sync.match_threshold", value=0.05),
                Parameter("sync.camera_offsets", value=offsets),
            ]
        )
        assert all(r.successful for r in results), results
        config = node.labeller.collector.config
        assert (config.timeout, config.match_threshold) == (0.5, 0.05)
        assert dict(config.camera_offsets) == dict(zip(CAMERAS, offsets, strict=True))
        assert node.get_parameter("sync.timeout").value == 0.5
        assert next(text for level, text in node.log.lines if level == "info").startswith(
            "parameter 'sync.timeout' changed from 0.0 to 0.5"
        )
        # As ros2param types them: `1` is an integer, `[]` a bool array; taken as the declared types.
        results = node.set_parameters(
            [
                Parameter("sync.timeout", value=1),
                Parameter("sync.camera_offsets", Parameter.Type.BOOL_ARRAY, []),
            ]
        )
        assert all(r.successful for r in results), results
        assert node.get_parameter("sync.timeout").type_ == Parameter.Type.DOUBLE
        assert node.labeller.collector.config.timeout == 1.0
        assert dict(node.labeller.collector.config.camera_offsets) == dict.fromkeys(CAMERAS, 0.0)


@pytest.mark.dds
@pytest.mark.timeout(120)
def test_camera_offsets_as_a_map_change_per_camera(ros_env, tmp_path):
    from rclpy.parameter import Parameter

    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    sync:\n      camera_offsets: {CAM_FRONT: -0.02}\n")
    with segment_node("--params-file", str(path)) as node:
        (result,) = node.set_parameters([Parameter("sync.camera_offsets.CAM_FRONT", value=0.05)])
        assert result.successful, result.reason
        assert node.labeller.collector.config.offset("CAM_FRONT") == 0.05
        (result,) = node.set_parameters([Parameter("sync.camera_offsets.CAM_FRONT", value=2.0)])
        assert not result.successful
        assert (
            result.reason
            == "parameter 'sync.camera_offsets.CAM_FRONT': 2.0 is greater than the maximum of 1.0"
        )
        assert node.labeller.collector.config.offset("CAM_FRONT") == 0.05


@pytest.mark.dds
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("sync.timeout", -1.0, "-1.0"),
        ("sync.timeout", 99.0, "99.0"),
        ("sync.timeout", math.nan, ".nan"),
        ("sync.match_threshold", 0.0, "0.0"),
        ("sync.camera_offsets", [0.1, 0.2], "[0.1, 0.2]"),
        ("sync.camera_offsets", [0.0, 0.0, 0.0, 0.0, 0.0, 2.0], "[0.0, 0.0, 0.0, 0.0, 0.0, 2.0]"),
    ],
)
def test_bad_runtime_value_is_refused_with_the_start_up_message_and_the_old_value_kept(
    ros_env, name, value, text
):
    """The new set is validated as a whole with the schema, as at start-up: the same sentence."""
    from rclpy.parameter import Parameter

    from xkd_ros.parameters import ParameterError

    with pytest.raises(ParameterError) as at_start_up, segment_node(*IN_PROCESS, "-p", f"{name}:={text}"):
        pass
    with segment_node(*IN_PROCESS) as node:
        before = node.get_parameter(name).value
        config = node.labeller.collector.config
        (result,) = node.set_parameters([Parameter(name, value=value)])
        assert not result.successful
        assert result.reason == str(at_start_up.value)
        assert f"'{name}" in result.reason
        assert node.get_parameter(name).value == before
        assert node.labeller.collector.config is config
        assert not [line for line in node.log.lines if line[0] == "info"]


def _later(msg, seconds: float):
    """`msg` (a copy) stamped `seconds` later (any fraction)."""
    msg = restamped(msg, 0)
    sec, nanosec = divmod(msg.header.stamp.nanosec + round(seconds * 1e9), 1_000_000_000)
    msg.header.stamp.sec += sec
    msg.header.stamp.nanosec = nanosec
    return msg


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_a_shorter_sync_timeout_labels_a_scan_without_its_cameras_sooner(ros_env, frame_messages):
    """A scan without its images waits sync.timeout (10 s here); set to 0 at run time, the next such scan is
    labelled LiDAR-only at once, and the one still waiting (its deadline kept) is superseded, counted."""
    from rclpy.parameter import Parameter

    with segment_node(*IN_PROCESS, "-p", "sync.timeout:=10.0") as node:
        node._on_cloud(restamped(frame_messages.cloud, 1), {})
        node._on_poll()
        assert node.labeller.collector.pending == 1, "a scan without its cameras waits for them"
        (result,) = node.set_parameters([Parameter("sync.timeout", value=0.0)])
        assert result.successful, result.reason
        node._on_cloud(restamped(frame_messages.cloud, 2), {})
        node._on_poll()
        assert node.labeller.wait_idle(120), "the inference thread is still busy after 120 s"
        values = node.labeller.diagnostic_values()
        assert values["scans labelled"] == "1"
        assert values["cameras matched (last scan)"] == "0/6"
        assert values["sync: scans_superseded"] == "1"
        assert values["scans pending"] == "0"


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_a_wider_match_threshold_matches_images_it_did_not(ros_env, frame_messages):
    """Images 50 ms later than the offsets expect: not matched within 30 ms; matched once
    sync.match_threshold is 80 ms, set at run time."""
    from rclpy.parameter import Parameter

    late = {camera: _later(image, 0.05) for camera, image in frame_messages.images.items()}
    with segment_node(*IN_PROCESS) as node:
        _frame(node, frame_messages, 1, images=late)
        assert node.labeller.diagnostic_values()["cameras matched (last scan)"] == "0/6"
        (result,) = node.set_parameters([Parameter("sync.match_threshold", value=0.08)])
        assert result.successful, result.reason
        _frame(node, frame_messages, 2, images=late)
        values = node.labeller.diagnostic_values()
        assert values["cameras matched (last scan)"] == "6/6"
        assert values["scans labelled"] == "2"


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
    for camera in node.labeller.cameras:
        image = (images or {}).get(camera, messages.images[camera])
        node._on_image(camera, restamped(image, shift), {})
    scan = restamped(messages.cloud if cloud is None else cloud, shift)
    node._on_cloud(scan, {} if sequence is None else info(sequence))
    node._on_poll()
    assert node.labeller.wait_idle(120), "the inference thread is still busy after 120 s"


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_any_inference_error_skips_the_scan_and_the_node_lives_on(ros_env, frame_messages):
    with segment_node(*IN_PROCESS) as node:

        def fail(*args, **kwargs):
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory")

        node.labeller.segmenter.infer = fail  # on the inference thread (pipeline.overlap)
        _frame(node, frame_messages, 1)
        assert node.labeller.counts["scans failed"] == 1
        assert node.log.warnings(CLOUD, "RuntimeError", "Failed to allocate memory")
        del node.labeller.segmenter.infer
        _frame(node, frame_messages, 2)
        assert node.labeller.counts["scans labelled"] == 1
        assert node.labeller.diagnostic_values()["scans failed"] == "1"


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_intensity_scale_contradicted_by_the_scans_is_said(ros_env, frame_messages):
    """nuScenes intensities (0..255) with the profile set to KITTI's 0..1: labelled, and said once, naming
    the setting; the right scale is not warned about."""
    with segment_node(*IN_PROCESS, "-p", "lidar.intensity_scale:=1.0") as node:
        assert node.labeller.rig.lidar.intensity_scale == 1.0
        _frame(node, frame_messages, 1)
        assert node.labeller.counts["scans labelled"] == 1
        assert node.log.warnings(CLOUD, "above lidar.intensity_scale 1", "lidar.intensity_scale")
        assert "above lidar.intensity_scale" in node.labeller.diagnostic_values()["intensity check"]
    with segment_node(*IN_PROCESS) as node:
        _frame(node, frame_messages, 1)
        assert node.labeller.diagnostic_values()["intensity check"] == "ok (first 1 scans)"
        assert not node.log.warnings("intensity")


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_lidar_only_configuration_labels_every_point_and_says_so(ros_env, frame_messages):
    # no parameter file: rcl lets a file's list win over an empty `-p cameras:=[]` (it cannot type [])
    lidar_only = ("-p", "camera_transport:=compressed", "-p", "sync.timeout:=0.0", "-p", "cameras:=[]")
    with segment_node(*lidar_only) as node:
        assert node.labeller.cameras == ()
        _frame(node, frame_messages, 1)
        assert node.labeller.counts["scans labelled"] == 1
        values = node.labeller.diagnostic_values()
        assert values["cameras fused (last scan)"] == ""
        assert values["points fused (last scan) [%]"] == "0.0"
        assert "LiDAR-only" in values["rig"]


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_cloud_over_max_points_is_refused_before_decoding(ros_env, frame_messages):
    with segment_node(*IN_PROCESS, "-p", "max_points:=1000") as node:
        _frame(node, frame_messages, 1)
        assert node.labeller.counts["scans too large"] == 1
        assert node.labeller.collector.stats.scans_received == 0  # never queued, never decoded
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
        assert node.labeller.counts["scans labelled"] == 1, node.log.lines


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
    import xkd_ros.labeller

    decoded = []
    real = xkd_ros.labeller.rgb_from_image
    monkeypatch.setattr(
        xkd_ros.labeller, "rgb_from_image", lambda msg, r=1: decoded.append(msg) or real(msg, r)
    )
    image = restamped(frame_messages.images["CAM_FRONT"], 0)
    image.data = data
    with segment_node(*IN_PROCESS) as node:
        _frame(node, frame_messages, 1, images={"CAM_FRONT": image})
        assert node.labeller.counts["CAM_FRONT images refused"] == 1
        assert node.log.warnings("CAM_FRONT/image/compressed", said, "calibrated at 1600x900")
        assert node.labeller.counts["scans labelled"] == 1
        assert len(decoded) == len(CAMERAS) - 1  # every camera but CAM_FRONT


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_camera_info_of_another_size_is_reported_and_not_used(ros_env, frame_messages):
    info_msg = restamped(frame_messages.camera_infos["CAM_BACK"], 0)
    info_msg.width, info_msg.height = 1280, 720
    with segment_node(*IN_PROCESS) as node:
        node._on_info("CAM_BACK", info_msg)
        assert node.labeller.counts["CAM_BACK camera_info refused"] == 1
        assert node.log.warnings("CAM_BACK/camera_info", "1280x720", "1600x900")
        assert "CAM_BACK" not in node.labeller.intrinsics
        node._on_info("CAM_BACK", frame_messages.camera_infos["CAM_BACK"])  # the right size is taken
        assert "CAM_BACK" in node.labeller.intrinsics


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_scans_with_a_repeated_stamp_are_counted_and_logged(ros_env, frame_messages):
    """A driver that leaves its stamps at 0: one scan labelled, the others counted where /diagnostics shows
    them, and a warning saying why."""
    with segment_node(*IN_PROCESS) as node:
        for _ in range(4):
            _frame(node, frame_messages, 0)
        values = node.labeller.diagnostic_values()
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
        assert node.labeller.counts["scans lost in transport"] == 3
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
        node.labeller.segmenter.prepare = lambda *a, **k: (_ for _ in ()).throw(ValueError("points: no good"))
        _frame(node, frame_messages, 3)
        assert node.labeller.counts["scans malformed"] == 2
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

    def fresh_diagnostics(self, timeout: float = 30.0) -> dict[str, str]:
        """The node's counters as of now: the second /diagnostics message from here on (one a second; the
        first may have been in flight), so none published before this call."""
        seen = len(self.diagnostics)
        self.spin_until(lambda: len(self.diagnostics) >= seen + 2, timeout, "two fresh /diagnostics messages")
        return self.last_diagnostics()


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


# ------------------------------------------------------------------ parameters and debug topics, over DDS
@pytest.fixture(scope="module")
def parameters(harness):
    """rclpy's parameter client for the node (what `ros2 param` uses: the node's parameter services)."""
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(harness.node, ROOT)
    assert client.wait_for_services(60), f"the parameter services of {ROOT} were not found within 60 s"
    return client


def _call(harness, future, what: str):
    harness.spin_until(future.done, 30, what)
    return future.result()


def _set(harness, parameters, **values) -> list:
    """Set the node's parameters over its set_parameters service; the results."""
    from rclpy.parameter import Parameter

    future = parameters.set_parameters([Parameter(name, value=v) for name, v in values.items()])
    return _call(harness, future, f"the reply to setting {values}").results


class DebugTopics:
    """Subscriptions to the node's ~/debug/<name>_ms (PointStamped), matched to its publishers."""

    def __init__(self, harness):
        from geometry_msgs.msg import PointStamped
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.received: dict[str, list] = {name: [] for name in DEBUG_TIMINGS}
        subs = {
            f"debug/{name}_ms": harness.node.create_subscription(
                PointStamped, f"{ROOT}/debug/{name}_ms", self.received[name].append, qos
            )
            for name in DEBUG_TIMINGS
        }
        wait_matched(harness.executor, harness.process, harness.log, {}, subs, 60)

    def stamped(self, header) -> dict[str, list]:
        """The messages of each topic with `header` (the scan's stamp and frame)."""
        return {name: [m for m in msgs if m.header == header] for name, msgs in self.received.items()}


@pytest.fixture(scope="module")
def debug_topics(harness):
    return DebugTopics(harness)


@pytest.mark.dds
@pytest.mark.timeout(240)
def test_debug_timings_carry_the_scans_header(harness, debug_topics, frame_messages):
    """Each ~/debug/<stage>_ms is a PointStamped with the labelled cloud's header, milliseconds in point.x:
    Foxglove and PlotJuggler line a timing up with its scan."""
    cloud, _ = harness.labelled(frame_messages)
    harness.spin_until(
        lambda: all(debug_topics.stamped(cloud.header).values()),
        30,
        lambda: (
            "a message with the scan's header on "
            + ", ".join(name for name, msgs in debug_topics.stamped(cloud.header).items() if not msgs)
        ),
    )
    for name, (msg, *more) in debug_topics.stamped(cloud.header).items():
        assert not more, f"{name}: {len(more) + 1} messages for one scan"
        assert msg.header.frame_id == frame_messages.cloud.header.frame_id
        assert math.isfinite(msg.point.x), name
        assert (msg.point.y, msg.point.z) == (0.0, 0.0), name
    stamped = debug_topics.stamped(cloud.header)
    assert stamped["total"][0].point.x >= stamped["inference"][0].point.x > 0


@pytest.mark.dds
@pytest.mark.timeout(240)
def test_debug_publish_false_stops_the_debug_topics_while_clouds_keep_coming(
    harness, debug_topics, parameters, frame_messages
):
    """Set false at run time: the next scans are labelled without debug messages; set true again: they come
    back (a topic's messages arrive in order, so the first scan's would have come before the second's)."""
    try:
        assert [r.successful for r in _set(harness, parameters, **{"debug.publish": False})] == [True]
        quiet, _ = harness.labelled(frame_messages)
        assert [r.successful for r in _set(harness, parameters, **{"debug.publish": True})] == [True]
        loud, _ = harness.labelled(frame_messages)
        harness.spin_until(
            lambda: bool(debug_topics.stamped(loud.header)["total"]), 30, "total_ms of the scan after"
        )
        assert not any(debug_topics.stamped(quiet.header).values())
    finally:
        _set(harness, parameters, **{"debug.publish": True})
    harness.spin_until(lambda: "parameter 'debug.publish' changed" in harness.log.read_text(), 10, "the log")


@pytest.mark.dds
@pytest.mark.timeout(240)
def test_sync_timeout_set_over_the_parameter_service_takes_effect(harness, parameters, frame_messages):
    """A scan without its cameras waits sync.timeout for them (10 s); with 0.2 s set while it waits, the
    next such scan is labelled first, LiDAR-only, and the waiting one is superseded: the change applies to
    the scans that come next (the node started with 0.5 s; restored after)."""
    from xkd_ros.msgs import read_points

    def scan():
        harness.shift += 1
        cloud = restamped(frame_messages.cloud, harness.shift)
        harness.publish_cloud(cloud)
        return cloud.header

    try:
        assert [r.successful for r in _set(harness, parameters, **{"sync.timeout": 10.0})] == [True]
        # Counters from a message published after the first scan arrived: an older one (a stale
        # "scans pending" from the test before) would make a wrong baseline.
        received = int(harness.fresh_diagnostics()["scans received"])
        first = scan()

        def first_pending() -> bool:
            values = harness.last_diagnostics()
            return int(values["scans received"]) > received and values["scans pending"] == "1"

        harness.spin_until(first_pending, 30, "the first scan received and pending")
        superseded = int(harness.last_diagnostics()["sync: scans_superseded"])
        assert [r.successful for r in _set(harness, parameters, **{"sync.timeout": 0.2})] == [True]
        second = scan()
        harness.spin_until(
            lambda: any(c.header in (first, second) for c in harness.clouds), 60, "a labelled cloud"
        )
        (cloud,) = [c for c in harness.clouds if c.header in (first, second)]
        assert cloud.header == second, (
            "the first scan was labelled first: its 10 s ran out, or 0.2 s was not used"
        )
        assert not read_points(cloud, ["fused"])["fused"].any()  # no image came: LiDAR-only
        harness.spin_until(
            lambda: int(harness.last_diagnostics()["sync: scans_superseded"]) == superseded + 1,
            10,
            "the first scan counted superseded",
        )
    finally:
        _set(harness, parameters, **{"sync.timeout": 0.5})


@pytest.mark.dds
@pytest.mark.timeout(240)
def test_start_up_only_parameter_is_refused_over_the_parameter_service(harness, parameters):
    """What `ros2 param set /segment threads 2` gets back: refused, naming the parameter, saying why."""
    (result,) = _set(harness, parameters, threads=2)
    assert not result.successful
    assert "'threads'" in result.reason
    assert STARTUP_ONLY in result.reason
    (result,) = _set(harness, parameters, **{"sync.timeout": 99.0})
    assert (result.successful, result.reason) == (
        False,
        "parameter 'sync.timeout': 99.0 is greater than the maximum of 10.0",
    )
    reply = _call(harness, parameters.describe_parameters(["threads", "sync.timeout"]), "describe")
    assert [d.read_only for d in reply.descriptors] == [True, False]


def test_rviz_config_shows_the_outputs():
    config = yaml.safe_load((REPO / "config" / "segment.rviz").read_text())
    displays = {d["Name"]: d for d in config["Visualization Manager"]["Displays"]}
    assert displays["Labeled cloud"]["Color Transformer"] == "RGB8"
    assert displays["Labeled cloud"]["Topic"]["Value"] == f"{ROOT}/output/labeled_cloud"
    assert displays["Class legend"]["Class"] == "rviz_default_plugins/MarkerArray"
    assert all(displays[c]["Topic"]["Value"] == f"{ROOT}/input/{c}/image" for c in CAMERAS)
