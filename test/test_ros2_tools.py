"""A ROS user's session with the real tools, step by step as README.md "Running the node" tells it.

The package is built once by colcon into a temporary workspace (`colcon build --packages-select xkd_ros`),
its `install/setup.bash` sourced over the ROS underlay (this venv: the ROS wheels and ../shared/ros2-launch),
and then: `ros2 pkg executables`, `ros2 launch xkd_ros segment.launch.py` with a parameter file of its own and
input remaps (`pointcloud_topic`, `camera_topic`, compressed images), a recording played with
`ros2 run xkd_ros xkd-replay --loop --wait-for-subscribers`, labelled clouds received, `ros2 node info`,
`ros2 param get|set`, `ros2 topic hz`, rviz:=true (with a stand-in rviz2 that records what it was given),
`ros2 run xkd_ros segment_node`, and launches that must fail: a node that cannot start, an argument that
cannot be used. The colcon checks run wherever colcon does; the ROS ones skip where the stack is absent.
"""

from __future__ import annotations

import configparser
import contextlib
import dataclasses
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO
from node_peer import spin_until
from ros2_stack import colcon_build, copy_package, daemons, missing, start, stop, user_shell

CAMERAS = ("CAM_FRONT", "CAM_BACK")
PERIOD = 0.4  # s between recorded scans: 4 of them span 1.2 s, so each loop's jump back resets the collector
SCANS = 4
KEPT = 8  # labelled clouds kept for checking (the rest are counted)
OUTPUT = "/segment/output/labeled_cloud"
START_S = 120.0  # longest wait for a process to come up on a busy 2-core machine; hand-shakes end it sooner
CLI_S = 60.0  # longest a ros2 command may take


def _ros() -> None:
    """Skip where the real launch/ros2cli stack is absent."""
    reason = missing()
    if reason:
        pytest.skip(reason)


# ------------------------------------------------------------------ the workspace
@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A colcon workspace holding a copy of the package (plus a probe launch file and model, to see that
    launch/ and models/ install whole), built once the way a user does."""
    root = tmp_path_factory.mktemp("ws")
    source = copy_package(root / "src/xkd_ros")
    (source / "launch/probe.launch.py").write_text("# installed by data_files?\n")
    (source / "models/probe.onnx").write_bytes(b"\x08\x07")
    result = colcon_build(root)
    assert result.returncode == 0, result.stdout + result.stderr
    return root


def test_colcon_installs_share_files_and_ament_index(workspace):
    install = workspace / "install/xkd_ros"
    share = install / "share/xkd_ros"
    assert (install / "share/ament_index/resource_index/packages/xkd_ros").is_file()
    assert (share / "package.xml").read_text() == (REPO / "package.xml").read_text()
    for config in (REPO / "config").rglob("*"):
        if config.is_file():
            assert (share / config.relative_to(REPO)).read_bytes() == config.read_bytes()
    assert (share / "launch/segment.launch.py").read_text() == (REPO / "launch/segment.launch.py").read_text()
    assert (share / "launch/probe.launch.py").is_file()
    assert (share / "models/probe.onnx").read_bytes() == b"\x08\x07"


def _site_packages(workspace: Path) -> Path:
    return next((workspace / "install/xkd_ros/lib").glob("python3*/site-packages"))


def _console_scripts(workspace: Path) -> set[str]:
    """The console scripts setup.py declares, as colcon's build of it recorded them."""
    entry_points = next(_site_packages(workspace).glob("xkd_ros-*info/entry_points.txt"))
    parser = configparser.ConfigParser()
    parser.read(entry_points)
    return set(parser["console_scripts"])


def test_console_scripts_land_in_lib_package_and_run(workspace):
    scripts = _console_scripts(workspace)
    assert {"segment_node", "xkd-replay", "xkd-demo"} <= scripts
    for name in scripts:
        assert os.access(workspace / "install/xkd_ros/lib/xkd_ros" / name, os.X_OK), name
    site = _site_packages(workspace)
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run(
        [str(workspace / "install/xkd_ros/lib/xkd_ros/xkd-demo"), "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert "the main job, end to end over real DDS" in probe.stdout


# ------------------------------------------------------------------ the user's shell
@pytest.fixture(scope="module")
def shell(workspace, module_ros_env, tmp_path_factory) -> dict[str, str]:
    """The environment of a user's shell after `source install/setup.bash` over the ROS underlay (this venv,
    where a ROS machine has /opt/ros/<distro>), on the domain reserved for this module; ROS logs and temporary
    files in temporary folders."""
    _ros()
    return user_shell(
        workspace, module_ros_env, tmp_path_factory.mktemp("ros_log"), tmp_path_factory.mktemp("tmp")
    )


def ros2(shell: dict[str, str], *args: str, timeout: float = CLI_S) -> subprocess.CompletedProcess:
    """`ros2 ARGS...` in the user's shell (in the workspace); its output, stdout and stderr together. Run in a
    process group of its own, killed whole if it outlasts `timeout` or the test fails meanwhile: a launch
    that hangs must not leave its node running."""
    process = subprocess.Popen(
        ["ros2", *args],
        env=shell,
        cwd=shell["PWD"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, output)


@pytest.mark.dds
@pytest.mark.timeout(120)
def test_ros2_pkg_executables_lists_every_console_script(shell, workspace):
    result = ros2(shell, "pkg", "executables", "xkd_ros")
    assert result.returncode == 0, result.stdout
    listed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("xkd_ros ")}
    assert listed == _console_scripts(workspace)
    where = subprocess.run(
        [sys.executable, "-c", "import xkd_ros; print(xkd_ros.__file__)"],
        env=shell,
        cwd=shell["PWD"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert where.stdout.startswith(str(_site_packages(workspace))), where.stdout + where.stderr


# ------------------------------------------------------------------ the launched node
@dataclasses.dataclass
class Recording:
    path: Path
    rig_path: Path
    xyz: np.ndarray  # every scan's points (the scans differ by their stamps only)
    lidar_frame: str


@pytest.fixture(scope="module")
def recording(tmp_path_factory, nuscenes_keyframe) -> Recording:
    """The nuScenes keyframe with two of its cameras as a 1.2 s recording (4 scans, JPEG images) on a
    driver's topics: /my/points, /my/<camera>/image_raw/compressed, /my/<camera>/camera_info; and its rig."""
    from xkd_ros.data.rosbag import BagTopics, write_bag

    folder = tmp_path_factory.mktemp("recording")
    frame = nuscenes_keyframe
    rig = frame.rig.with_cameras([frame.rig[camera] for camera in CAMERAS])
    frames = [
        dataclasses.replace(
            frame,
            rig=rig,
            images={camera: frame.images[camera] for camera in CAMERAS},
            stamp=frame.stamp + PERIOD * i,
            image_stamps={},  # the scan's stamp: the cameras triggered with the LiDAR
            pose=None,
            image_poses={},
        )
        for i in range(SCANS)
    ]
    topics = BagTopics(lidar="/my/points", camera_namespace="/my/{camera}")
    bag = write_bag(frames, folder / "drive", image_format="jpeg", topics=topics)
    rig.save(folder / "car.rig.yaml")
    return Recording(bag, folder / "car.rig.yaml", frame.xyz.astype(np.float32), rig.lidar_frame)


FAKE_RVIZ2 = """#!{python}
# Stands in for rviz2: records its command line and the config file it was given, then waits for Ctrl-C.
import json, signal, sys
argv = sys.argv[1:]
config = open(argv[argv.index("-d") + 1]).read()
with open({record!r} + ".tmp", "w") as out:
    json.dump({{"argv": argv, "config": config}}, out)
import os
os.replace({record!r} + ".tmp", {record!r})
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
try:
    signal.pause()
except KeyboardInterrupt:
    pass
"""


class Session:
    """`ros2 launch` of the node with the test's parameter file and remaps, the recording looping into it,
    and an rclpy node of the test's own listening to its labelled clouds."""

    def __init__(self, shell: dict[str, str], recording: Recording, folder: Path) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import PointCloud2

        self.shell = dict(shell)
        self.folder = folder
        self.rviz_record = folder / "rviz2.json"
        self.param_file = folder / "my.param.yaml"
        self.param_file.write_text(
            "/**:\n  ros__parameters:\n"
            f"    rig_path: {recording.rig_path}\n"
            "    camera_transport: compressed\n"
            "    sync:\n      timeout: 0.3\n"
        )
        args = [
            "ros2",
            "launch",
            "xkd_ros",
            "segment.launch.py",
            f"param_file:={self.param_file}",
            "pointcloud_topic:=/my/points",
            "camera_topic:=/my/{camera}/image_raw",
            "rviz:=true",
        ]
        bin_dir = folder / "bin"  # rviz2 there: the stand-in
        bin_dir.mkdir()
        fake = bin_dir / "rviz2"
        fake.write_text(FAKE_RVIZ2.format(python=sys.executable, record=str(self.rviz_record)))
        fake.chmod(0o755)
        self.shell["PATH"] = os.pathsep.join([str(bin_dir), self.shell["PATH"]])
        self.log = folder / "launch.log"
        self.launch = start(self.shell, args, self.log)
        self.replay: subprocess.Popen | None = None
        self.replay_log = folder / "replay.log"

        self.clouds: list = []
        self.received = 0
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("ros2_tools_test", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.subscription = self.node.create_subscription(
            PointCloud2, OUTPUT, self._on_cloud, qos_profile_sensor_data
        )

    def _on_cloud(self, msg) -> None:
        self.received += 1
        if len(self.clouds) < KEPT:
            self.clouds.append(msg)

    def spin_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        spin_until(self.executor, self.launch, self.log, condition, timeout, what)

    def play(self, recording: Recording) -> None:
        """Once the node publishes its output: the recording, looping, held until the node's inputs match."""
        self.spin_until(
            lambda: self.subscription.get_publisher_count() > 0, START_S, f"a publisher of {OUTPUT}"
        )
        inputs = [
            "/my/points",
            *(f"/my/{c}/{t}" for c in CAMERAS for t in ("image_raw/compressed", "camera_info")),
        ]
        self.replay = start(
            self.shell,
            [
                *("ros2", "run", "xkd_ros", "xkd-replay", str(recording.path), "--loop"),
                *("--wait-for-subscribers", "--wait-timeout", str(START_S), "--topics", *inputs),
            ],
            self.replay_log,
        )

    def close(self) -> None:
        if self.replay is not None:
            stop(self.replay)
        stop(self.launch)
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


@pytest.fixture(scope="module")
def session(shell, recording, tmp_path_factory):
    session = Session(shell, recording, tmp_path_factory.mktemp("session"))
    try:
        session.play(recording)
        yield session
    finally:
        session.close()
        for pid in daemons(shell["ROS_DOMAIN_ID"]):  # none should be: every verb ran with --no-daemon
            os.kill(pid, signal.SIGKILL)


@pytest.mark.dds
@pytest.mark.timeout(300)
def test_launched_node_labels_the_remapped_inputs(session, recording):
    from xkd_ros.classes import load_class_set
    from xkd_ros.inference.metadata import read_metadata
    from xkd_ros.msgs import read_points

    session.spin_until(lambda: session.received >= SCANS, START_S, f"{SCANS} labelled clouds on {OUTPUT}")
    num_classes = load_class_set(
        read_metadata(REPO / "models/xkd_synthetic.int8.onnx")["classes"]
    ).num_classes
    for cloud in session.clouds[:SCANS]:
        assert cloud.header.frame_id == recording.lidar_frame
        points = read_points(cloud)
        sent = recording.xyz
        assert len(points) == len(sent)
        np.testing.assert_array_equal(np.stack([points[a] for a in "xyz"], axis=1), sent)
        labels = points["label"]
        assert ((labels < num_classes) | (labels == 255)).all()
        assert (labels < num_classes).sum() > len(labels) // 2
        # The images came in through the camera_topic remap (compressed): the cameras' points are fused.
        assert points["fused"].sum() > 1000


def ros2_until(shell: dict[str, str], ok: Callable[[str], bool], *args: str) -> subprocess.CompletedProcess:
    """`ros2 ARGS...` again until `ok(its output)`, for at most CLI_S: a verb that lists the graph answers
    with what it discovered in its --spin-time, which a busy machine may make too short."""
    deadline = time.monotonic() + CLI_S
    while True:
        result = ros2(shell, *args)
        if ok(result.stdout) or time.monotonic() > deadline:
            return result


@pytest.mark.dds
@pytest.mark.timeout(300)
def test_ros2_node_list_and_info_show_the_node_and_its_remapped_topics(session):
    listed = ros2_until(session.shell, lambda out: "/segment" in out.split(), "node", "list", "--no-daemon")
    assert "/segment" in listed.stdout.split(), listed.stdout
    expected = [
        "/my/points: sensor_msgs/msg/PointCloud2",
        *(f"/my/{camera}/image_raw/compressed: sensor_msgs/msg/CompressedImage" for camera in CAMERAS),
        *(f"/my/{camera}/camera_info: sensor_msgs/msg/CameraInfo" for camera in CAMERAS),
    ]
    published = f"{OUTPUT}: sensor_msgs/msg/PointCloud2"

    def discovered(out: str) -> bool:
        """A fresh participant (--no-daemon) may list the node before it has discovered all its endpoints:
        ask again until every one is there (the assertions below say which is not)."""
        return "Publishers:" in out and all(line in out for line in [*expected, published])

    info = ros2_until(session.shell, discovered, "node", "info", "/segment", "--no-daemon")
    assert info.returncode == 0, info.stdout
    subscribers = info.stdout.split("Subscribers:")[1].split("Publishers:")[0]
    for line in expected:
        assert line in subscribers, info.stdout
    assert "/segment/input" not in subscribers
    assert published in info.stdout.split("Publishers:")[1]


def _param(session: Session, verb: str, *args: str) -> str:
    # --timeout: the wait for the node to be discovered (the initial --spin-time is not needed for it)
    result = ros2(
        session.shell,
        "param",
        verb,
        "--no-daemon",
        "--spin-time",
        "0.1",
        "--timeout",
        "30",
        "/segment",
        *args,
    )
    assert result.returncode == 0, result.stdout
    return result.stdout.strip()


@pytest.mark.dds
@pytest.mark.timeout(300)
def test_ros2_param_get_and_set(session):
    assert _param(session, "get", "sync.timeout") == "Double value is: 0.3"  # from the param file
    refused = _param(session, "set", "model_path", "/elsewhere.onnx")  # read at start-up only
    assert refused.startswith("Setting parameter failed"), refused
    assert "model_path" in refused, refused  # the reason names it
    assert "Read only: true" in _param(session, "describe", "model_path")
    # A runtime parameter: validated (a negative timeout is refused) and applied while the node runs.
    refused = _param(session, "set", "sync.timeout", "-1.0")
    assert refused.startswith("Setting parameter failed"), refused
    assert "sync.timeout" in refused, refused
    assert _param(session, "set", "sync.timeout", "0.5") == "Set parameter successful"
    assert _param(session, "get", "sync.timeout") == "Double value is: 0.5"


@pytest.mark.dds
@pytest.mark.timeout(120)
def test_ros2_topic_hz_reports_the_output_rate(session):
    hz = subprocess.Popen(
        ["ros2", "topic", "hz", OUTPUT],
        env=session.shell,
        cwd=session.shell["PWD"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # _stop's Ctrl-C reaches the whole group
    )
    output = b""
    try:
        deadline = time.monotonic() + START_S
        while b"average rate:" not in output:  # waits for its output, never a fixed time
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no rate from ros2 topic hz in {START_S} s: {output.decode()}"
            readable, _, _ = select.select([hz.stdout], [], [], remaining)
            if readable:
                chunk = os.read(hz.stdout.fileno(), 4096)
                assert chunk, f"ros2 topic hz exited: {output.decode()}"
                output += chunk
    finally:
        stop(hz)
        hz.stdout.close()
    rate = float(re.search(r"average rate: ([0-9.]+)", output.decode())[1])
    assert rate > 0


@pytest.mark.dds
@pytest.mark.timeout(120)
def test_rviz_true_starts_rviz2_in_the_rigs_lidar_frame(session, recording):
    session.spin_until(
        session.rviz_record.exists, START_S, f"the stand-in rviz2 to write {session.rviz_record}"
    )
    import json

    record = json.loads(session.rviz_record.read_text())
    assert record["argv"][0] == "-d"
    config = yaml.safe_load(record["config"])
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == recording.lidar_frame
    assert OUTPUT in record["config"]
    for camera in CAMERAS:
        assert f"/my/{camera}/image_raw/compressed" in record["config"]  # rviz2 reads the transport from it


@pytest.mark.dds
@pytest.mark.timeout(120)
def test_ctrl_c_ends_the_launch_with_status_0(session):
    """Last of the session: the user stops the launch; the node stopped by it is no failure, and the rviz
    config written for the launch is gone."""
    assert stop(session.launch) == 0, session.log.read_text()[-3000:]
    assert "segment_node exited with status" not in session.log.read_text()
    assert not list(Path(session.shell["TMPDIR"]).glob("xkd_rviz_*"))


# ------------------------------------------------------------------ more processes, and failures
@pytest.mark.dds
@pytest.mark.timeout(300)
def test_ros2_run_segment_node_starts_and_answers(shell, tmp_path):
    from xkd_ros.parameters import defaults

    log = tmp_path / "run.log"
    node = start(shell, ["ros2", "run", "xkd_ros", "segment_node", "--ros-args", "-r", "__ns:=/ran"], log)
    try:
        wait = ("--no-daemon", "--spin-time", "0.1", "--timeout", str(int(START_S)))
        result = ros2(shell, "param", "get", *wait, "/ran/segment", "backend", timeout=START_S + CLI_S)
        assert result.stdout.strip() == f"String value is: {defaults()['backend']}", log.read_text()
        assert node.poll() is None, log.read_text()
    finally:
        code = stop(node)
    assert code == 0, log.read_text()


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_launch_exits_1_when_the_node_cannot_start(shell, tmp_path):
    shell = {
        **shell,
        "PATH": os.pathsep.join(
            p for p in shell["PATH"].split(os.pathsep) if not shutil.which("rviz2", path=p)
        ),
    }
    result = ros2(
        shell,
        "launch",
        "xkd_ros",
        "segment.launch.py",
        "model_path:=/nonexistent.onnx",
        "namespace:=broken",
        "rviz:=true",
        timeout=START_S,
    )
    assert result.returncode != 0, result.stdout
    assert (
        "StartupError: model path '/nonexistent.onnx' does not exist (parameter model_path)" in result.stdout
    )
    assert "segment_node exited with status 1: see its error above" in result.stdout
    assert "rviz2 not found" in result.stdout
    assert "Traceback" not in result.stdout


@pytest.mark.dds
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("argument", "named"),
    [
        (
            "camera_topics:={CAM_SIDE: /side/image_raw}",
            "launch argument camera_topics: no camera(s) ['CAM_SIDE']",
        ),
        (
            "camera_topic:=/cameras/front/image_raw",
            "launch argument camera_topic: '/cameras/front/image_raw' has no",
        ),
        ("param_file:=/nonexistent.yaml", "launch argument param_file: /nonexistent.yaml: cannot be read"),
    ],
)
def test_launch_refuses_an_argument_in_one_line(shell, argument, named):
    result = ros2(shell, "launch", "xkd_ros", "segment.launch.py", argument)
    assert result.returncode == 1, result.stdout
    errors = [line for line in result.stdout.splitlines() if "ERROR" in line]
    assert len(errors) == 1, result.stdout
    assert named in errors[0], result.stdout
    assert "Traceback" not in result.stdout
    assert "process started" not in result.stdout  # nothing was started


@pytest.mark.dds
@pytest.mark.timeout(120)  # and the session's teardown
def test_no_ros2_daemon_is_left_behind(shell):
    """Last: every ros2 verb above ran without the daemon (--no-daemon where the verb has it)."""
    assert not daemons(shell["ROS_DOMAIN_ID"]), "a ros2 daemon serves this test's ROS_DOMAIN_ID"
