"""segment.launch.py and the plan under it (xkd_ros.launch_plan): which parameters, remaps and log level reach
the node, what rviz:=true starts, and the launch argument errors, each one line naming the argument.

The plan is plain Python and tested here thoroughly. The launch file is read with stand-ins for the launch
API, so its logic is tested everywhere, and once under the real launch API (../shared/ros2-launch) where that
is installed; test_ros2_tools.py runs it for real with `ros2 launch`."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from ros2_stack import missing, with_stubs

from xkd_ros.geometry import Rig
from xkd_ros.launch_plan import ARGUMENTS, LaunchArgumentError, parse_flag, plan_launch

LAUNCH_FILE = REPO / "launch" / "segment.launch.py"
SHIPPED = str(REPO / "config" / "segment.param.yaml")
NUSCENES = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]


def param_file(folder: Path, **parameters) -> str:
    """A parameter file for /** with `parameters` (nested dicts for groups)."""
    path = folder / "my.param.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": parameters}}))
    return str(path)


def two_camera_rig(folder: Path, lidar_frame: str = "velodyne") -> str:
    """The shipped nuScenes rig cut to CAM_FRONT and CAM_BACK, its LiDAR frame renamed."""
    rig = Rig.load(REPO / "config" / "nuscenes.rig.yaml")
    rig = rig.with_cameras([rig["CAM_FRONT"], rig["CAM_BACK"]])
    path = folder / "two.rig.yaml"
    dataclasses.replace(rig, lidar_frame=lidar_frame).save(path)
    return str(path)


# ------------------------------------------------------------------ the plan
def test_nothing_given_starts_the_node_with_the_param_file_alone():
    plan = plan_launch({"param_file": SHIPPED})
    assert (plan.namespace, plan.node) == ("/", "/segment")
    assert plan.overrides == {}
    assert plan.remappings == ()
    assert plan.ros_arguments == ()
    assert plan.rviz is None
    assert plan.cameras == tuple(NUSCENES)  # the file's list: the rig is not read


@pytest.mark.parametrize(
    ("given", "overrides"),
    [
        ({"backend": "torch"}, {"backend": "torch"}),
        ({"model_path": "/m.onnx"}, {"model_path": "/m.onnx"}),
        ({"rig_path": "/car.rig.yaml"}, {"rig_path": "/car.rig.yaml"}),
        ({"use_sim_time": "true"}, {"use_sim_time": True}),
        ({"use_sim_time": "False"}, {"use_sim_time": False}),
        ({"use_sim_time": "1", "backend": "auto"}, {"backend": "auto", "use_sim_time": True}),
        ({"backend": "", "model_path": " "}, {}),  # "" (the default) = not given
    ],
)
def test_only_the_arguments_given_override_the_param_file(given, overrides):
    assert plan_launch({"param_file": SHIPPED, **given}).overrides == overrides


def test_pointcloud_topic_remaps_the_scan_input():
    plan = plan_launch({"param_file": SHIPPED, "pointcloud_topic": "/sensing/lidar/points"})
    assert plan.remappings == (("~/input/pointcloud", "/sensing/lidar/points"),)


def test_camera_topic_template_remaps_each_image_and_its_sibling_camera_info():
    plan = plan_launch({"param_file": SHIPPED, "camera_topic": "/sensing/camera/{camera}/image_raw"})
    remaps = dict(plan.remappings)
    assert len(remaps) == 2 * len(NUSCENES)
    for camera in NUSCENES:
        assert remaps[f"~/input/{camera}/image"] == f"/sensing/camera/{camera}/image_raw"
        assert remaps[f"~/input/{camera}/camera_info"] == f"/sensing/camera/{camera}/camera_info"


def test_compressed_transport_remaps_the_compressed_topic(tmp_path):
    file = param_file(tmp_path, camera_transport="compressed", cameras=["CAM_FRONT"])
    plan = plan_launch({"param_file": file, "camera_topic": "/cam/{camera}/image_raw"})
    assert plan.remappings == (
        ("~/input/CAM_FRONT/image/compressed", "/cam/CAM_FRONT/image_raw/compressed"),
        ("~/input/CAM_FRONT/camera_info", "/cam/CAM_FRONT/camera_info"),
    )


def test_camera_topics_map_wins_over_the_template_and_others_keep_their_topics(tmp_path):
    file = param_file(tmp_path, cameras=["CAM_FRONT", "CAM_BACK", "CAM_BACK_LEFT"])
    given = {"param_file": file, "camera_topics": "{CAM_BACK: /rear/image, CAM_FRONT: front/image_rect}"}
    assert dict(plan_launch(given).remappings) == {  # CAM_BACK_LEFT: no template, left as it is
        "~/input/CAM_BACK/image": "/rear/image",
        "~/input/CAM_BACK/camera_info": "/rear/camera_info",
        "~/input/CAM_FRONT/image": "front/image_rect",  # relative: in the node's namespace
        "~/input/CAM_FRONT/camera_info": "front/camera_info",
    }
    remaps = dict(plan_launch({**given, "camera_topic": "/cams/{camera}/image_raw"}).remappings)
    assert remaps["~/input/CAM_BACK/image"] == "/rear/image"
    assert remaps["~/input/CAM_BACK_LEFT/image"] == "/cams/CAM_BACK_LEFT/image_raw"
    assert remaps["~/input/CAM_BACK_LEFT/camera_info"] == "/cams/CAM_BACK_LEFT/camera_info"


def test_all_cameras_are_the_rigs_from_the_argument_the_file_or_the_shipped_rig(tmp_path):
    rig = two_camera_rig(tmp_path)
    template = {"camera_topic": "/c/{camera}/image"}
    everything = param_file(tmp_path, cameras=["*"])
    assert plan_launch({"param_file": everything, **template}).cameras == tuple(NUSCENES)
    assert plan_launch({"param_file": everything, "rig_path": rig, **template}).cameras == (
        "CAM_FRONT",
        "CAM_BACK",
    )
    from_file = param_file(tmp_path, cameras=["*"], rig_path=rig)
    plan = plan_launch({"param_file": from_file, **template})
    assert [source for source, _ in plan.remappings] == [
        "~/input/CAM_FRONT/image",
        "~/input/CAM_FRONT/camera_info",
        "~/input/CAM_BACK/image",
        "~/input/CAM_BACK/camera_info",
    ]
    assert plan_launch({"param_file": from_file}).cameras is None  # nothing to remap: the node reads the rig


def test_empty_camera_list_remaps_no_camera(tmp_path):
    plan = plan_launch({"param_file": param_file(tmp_path, cameras=[]), "camera_topic": "/c/{camera}/image"})
    assert plan.remappings == ()


def test_namespace_and_log_level():
    plan = plan_launch({"param_file": SHIPPED, "namespace": "car1/", "log_level": "debug"})
    assert (plan.namespace, plan.node) == ("/car1", "/car1/segment")
    assert plan.ros_arguments == ("--log-level", "debug")
    one_logger = plan_launch({"param_file": SHIPPED, "log_level": "segment:=WARN"})
    assert one_logger.ros_arguments == ("--log-level", "segment:=WARN")


def test_rviz_request_is_in_the_rigs_lidar_frame_with_the_node_and_its_image_topics(tmp_path):
    rig = two_camera_rig(tmp_path, lidar_frame="velodyne_top")
    file = param_file(tmp_path, rig_path=rig, camera_transport="compressed", use_sim_time=True)
    plan = plan_launch(
        {
            "param_file": file,
            "namespace": "car",
            "rviz": "true",
            "camera_topics": "{CAM_BACK: rear/image_raw}",
        }
    )
    assert plan.rviz.fixed_frame == "velodyne_top"
    assert plan.rviz.node == "/car/segment"
    assert plan.rviz.image_topics == {
        "CAM_FRONT": "/car/segment/input/CAM_FRONT/image/compressed",  # not remapped
        "CAM_BACK": "/car/rear/image_raw/compressed",  # relative: resolved in the namespace
    }
    assert plan.rviz.use_sim_time is True  # the file's
    assert plan_launch({"param_file": file, "rviz": "1", "use_sim_time": "false"}).rviz.use_sim_time is False
    assert plan_launch({"param_file": file, "rviz": "false"}).rviz is None


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"camera_topic": "/cam/image_raw"},
            "launch argument camera_topic: '/cam/image_raw' has no {camera}",
        ),
        (
            {"camera_topic": "/cam/{camera}/2d"},
            "launch argument camera_topic: '/cam/CAM_FRONT/2d' is not a ROS",
        ),
        (
            {"camera_topics": "{CAM_SIDE: /side}"},
            "launch argument camera_topics: no camera(s) ['CAM_SIDE'] among",
        ),
        (
            {"camera_topics": "[/a, /b]"},
            "launch argument camera_topics: '[/a, /b]' is not a map of camera names",
        ),
        ({"camera_topics": "{a: [b"}, "launch argument camera_topics: not a YAML map"),
        (
            {"pointcloud_topic": "my points"},
            "launch argument pointcloud_topic: 'my points' is not a ROS topic",
        ),
        ({"pointcloud_topic": "/a//b"}, "launch argument pointcloud_topic: '/a//b' is not a ROS topic"),
        ({"namespace": "car 1"}, "launch argument namespace: 'car 1' is not a ROS namespace"),
        ({"backend": "cuda"}, "launch argument backend: parameter 'backend': 'cuda' is not one of"),
        ({"use_sim_time": "yes"}, "launch argument use_sim_time: 'yes' is not true or false"),
        ({"rviz": "on"}, "launch argument rviz: 'on' is not true or false"),
        ({"log_level": "loud"}, "launch argument log_level: 'loud' is not one of debug, info"),
        (
            {"param_file": "/nonexistent.yaml"},
            "launch argument param_file: /nonexistent.yaml: cannot be read",
        ),
        ({"param_file": ""}, "launch argument param_file: empty"),
        ({"rig_path": "/nonexistent.rig.yaml", "rviz": "true"}, "launch argument rig_path: rig"),
    ],
)
def test_an_argument_that_cannot_be_used_is_one_line_naming_it(given, message):
    with pytest.raises(LaunchArgumentError) as error:
        plan_launch({"param_file": SHIPPED, **given})
    text = str(error.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_a_param_file_the_node_would_refuse_is_named_with_the_parameter(tmp_path):
    file = param_file(tmp_path, sync={"timeout": -1.0})
    with pytest.raises(
        LaunchArgumentError, match=rf"^launch argument param_file: {file}: parameter 'sync.timeout'"
    ):
        plan_launch({"param_file": file})
    other_node = tmp_path / "other.yaml"
    other_node.write_text("/detector:\n  ros__parameters:\n    threads: 1\n")
    with pytest.raises(LaunchArgumentError, match=r"no parameters for node /car/segment"):
        plan_launch({"param_file": str(other_node), "namespace": "car"})


def test_a_rig_the_plan_needs_and_cannot_read_names_where_it_came_from(tmp_path):
    file = param_file(tmp_path, rig_path=str(tmp_path / "missing.rig.yaml"))
    with pytest.raises(LaunchArgumentError, match=rf"^launch argument param_file: {file}: rig_path: rig '"):
        plan_launch({"param_file": file, "rviz": "true"})
    unknown = param_file(tmp_path, cameras=["CAM_SIDE"], rig_path=two_camera_rig(tmp_path))
    with pytest.raises(
        LaunchArgumentError, match=r"parameter 'cameras': the rig .* has no camera\(s\) \['CAM_SIDE'\]"
    ):
        plan_launch({"param_file": unknown, "rviz": "true"})


def test_parse_flag():
    assert parse_flag("x", "") is False
    assert parse_flag("x", "", default=True) is True
    assert parse_flag("x", " TRUE ") is True
    assert parse_flag("x", "0") is False


# ------------------------------------------------------------------ the launch file, with stand-ins
class _Action:
    """Any launch action, event handler or description: what it was made with."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


@pytest.fixture
def launch_file(monkeypatch):
    """The launch file's module, importing stand-ins for launch, launch_ros and ament_index_python (the
    package's share is this checkout; no package rviz2)."""
    modules = {
        name: types.ModuleType(name)
        for name in (
            "launch",
            "launch.actions",
            "launch.event_handlers",
            "launch.substitutions",
            "launch_ros",
            "launch_ros.actions",
            "ament_index_python",
            "ament_index_python.packages",
        )
    }
    modules["launch"].LaunchDescription = _Action
    for name in (
        "DeclareLaunchArgument",
        "ExecuteProcess",
        "LogInfo",
        "OpaqueFunction",
        "RegisterEventHandler",
        "SetEnvironmentVariable",
    ):
        setattr(modules["launch.actions"], name, type(name, (_Action,), {}))
    for name in ("OnProcessExit", "OnShutdown"):
        setattr(modules["launch.event_handlers"], name, type(name, (_Action,), {}))
    modules["launch.substitutions"].LaunchConfiguration = _LaunchConfiguration
    modules["launch_ros.actions"].Node = type("Node", (_Action,), {})

    def prefix(package):
        if package != "xkd_ros":
            raise LookupError(package)  # ament_index_python's PackageNotFoundError is a KeyError
        return "/prefix"

    modules["ament_index_python.packages"].get_package_share_directory = lambda package: str(REPO)
    modules["ament_index_python.packages"].get_package_prefix = prefix
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _declared(launch_file) -> dict[str, _Action]:
    actions = launch_file.generate_launch_description().args[0]
    return {a.args[0]: a for a in actions if type(a).__name__ == "DeclareLaunchArgument"}


def _launched(launch_file, **given: str) -> list:
    """The actions the launch file's node function returns, launched with `given` arguments."""
    context = {name: a.kwargs["default_value"] for name, a in _declared(launch_file).items()}
    unknown = set(given) - set(context)
    assert not unknown, f"not arguments of the launch file: {unknown}"
    context.update(given)
    return launch_file._node(context)


def test_every_argument_is_declared_with_a_description_and_defaults_to_not_given(launch_file):
    declared = _declared(launch_file)
    assert set(declared) == {*ARGUMENTS, "build_only"}
    assert all(a.kwargs["description"].strip() for a in declared.values())
    assert declared["param_file"].kwargs["default_value"] == os.path.join(
        REPO, "config", "segment.param.yaml"
    )
    plan = {name: a.kwargs["default_value"] for name, a in declared.items() if name != "build_only"}
    assert plan_launch(plan).overrides == {}  # the defaults override nothing


def test_the_node_gets_the_param_file_then_only_the_given_overrides(launch_file):
    node, _ = _launched(launch_file)
    assert node.kwargs["parameters"] == [os.path.join(REPO, "config", "segment.param.yaml")]
    assert node.kwargs["ros_arguments"] is None
    node, _ = _launched(launch_file, param_file=SHIPPED, backend="torch", use_sim_time="true")
    assert node.kwargs["parameters"] == [SHIPPED, {"backend": "torch", "use_sim_time": True}]
    assert (node.kwargs["package"], node.kwargs["executable"], node.kwargs["name"]) == (
        "xkd_ros",
        "segment_node",
        "segment",
    )


def test_the_node_gets_the_remaps_namespace_and_log_level(launch_file):
    node, _ = _launched(
        launch_file,
        pointcloud_topic="/points",
        camera_topic="/c/{camera}/image",
        namespace="car",
        log_level="warn",
    )
    remaps = dict(node.kwargs["remappings"])
    assert remaps["~/input/pointcloud"] == "/points"
    assert remaps["~/input/CAM_BACK/camera_info"] == "/c/CAM_BACK/camera_info"
    assert node.kwargs["namespace"] == "/car"
    assert node.kwargs["ros_arguments"] == ["--log-level", "warn"]


def test_a_bad_argument_stops_the_launch_with_its_line(launch_file):
    with pytest.raises(LaunchArgumentError, match=r"^launch argument camera_topic: "):
        _launched(launch_file, camera_topic="/c/image")


class _Exit:
    def __init__(self, returncode):
        self.returncode = returncode


class _Context:
    def __init__(self, is_shutdown):
        self.is_shutdown = is_shutdown


def test_a_node_exit_with_an_error_fails_the_launch_unless_it_is_shutting_down(launch_file):
    node, handler = _launched(launch_file)
    on_exit = handler.args[0]
    assert on_exit.kwargs["target_action"] is node
    exit_status = on_exit.kwargs["on_exit"]
    with pytest.raises(RuntimeError, match=r"^segment_node exited with status 1: see its error above$"):
        exit_status(_Exit(1), _Context(is_shutdown=False))
    assert exit_status(_Exit(0), _Context(is_shutdown=False)) is None
    assert exit_status(_Exit(-2), _Context(is_shutdown=True)) is None  # Ctrl-C: launch stopped it


def test_rviz_without_rviz2_is_one_log_line(launch_file, monkeypatch):
    monkeypatch.setattr(launch_file.shutil, "which", lambda name: None)
    _, _, log = _launched(launch_file, rviz="true")
    assert type(log).__name__ == "LogInfo"
    assert log.kwargs["msg"].startswith("rviz2 not found: ")


def test_rviz_starts_rviz2_with_a_config_in_the_rigs_lidar_frame_removed_at_shutdown(
    launch_file, monkeypatch, tmp_path
):
    monkeypatch.setattr(
        launch_file.shutil, "which", lambda name: "/opt/bin/rviz2" if name == "rviz2" else None
    )
    rig = two_camera_rig(tmp_path, lidar_frame="velodyne_top")
    file = param_file(tmp_path, cameras=["*"])
    _, _, rviz, cleanup = _launched(
        launch_file, param_file=file, rviz="true", rig_path=rig, camera_topic="/c/{camera}/image"
    )
    assert rviz.kwargs["executable"] == "/opt/bin/rviz2"
    flag, config = rviz.kwargs["arguments"]
    assert flag == "-d"
    text = Path(config).read_text()
    assert yaml.safe_load(text)["Visualization Manager"]["Global Options"]["Fixed Frame"] == "velodyne_top"
    assert "/segment/output/labeled_cloud" in text
    assert "/c/CAM_BACK/image" in text
    cleanup.args[0].kwargs["on_shutdown"](None, None)
    assert not Path(config).parent.exists()


def test_build_only_builds_the_engine_and_starts_no_node(launch_file):
    (build,) = _launched(launch_file, build_only="true", model_path="/m.onnx")
    assert type(build).__name__ == "ExecuteProcess"
    assert build.kwargs["cmd"] == ["/prefix/lib/xkd_ros/xkd-build-engine", "/m.onnx"]


# ------------------------------------------------------------------ the launch file, real launch API
_REAL_LAUNCH = """
import importlib.util, json, sys
import yaml
from launch import LaunchContext
from launch.actions import DeclareLaunchArgument
spec = importlib.util.spec_from_file_location("segment_launch", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
context = LaunchContext()
context.launch_configurations.update(json.loads(sys.argv[2]))  # the user's, before the defaults
for action in module.generate_launch_description().entities:
    if isinstance(action, DeclareLaunchArgument):
        action.visit(context)
node = module._node(context)[0]
node._perform_substitutions(context)
parameters = []
for argument, is_file in node._Node__expanded_parameter_arguments:
    if "launch_params_" in argument:  # a dict of parameters, written to a file by launch_ros
        with open(argument) as file:
            parameters.append(next(iter(yaml.safe_load(file).values()))["ros__parameters"])
    else:
        parameters.append(argument)
print(json.dumps({"parameters": parameters, "remappings": node._Node__expanded_remappings}))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("given", "overrides", "remappings"),
    [
        ({}, [], []),
        (
            {"backend": "torch", "use_sim_time": "true", "pointcloud_topic": "/points"},
            [{"backend": "torch", "use_sim_time": True}],
            [["~/input/pointcloud", "/points"]],
        ),
    ],
)
def test_real_launch_passes_only_the_arguments_given(tmp_path, given, overrides, remappings):
    """The launch file under the real launch API: its Node's parameters and remaps, as launch_ros has them."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    prefix = tmp_path / "prefix"
    (prefix / "share/ament_index/resource_index/packages").mkdir(parents=True)
    (prefix / "share/ament_index/resource_index/packages/xkd_ros").write_text("")
    shipped = prefix / "share/xkd_ros/config/segment.param.yaml"
    shipped.parent.mkdir(parents=True)
    shipped.write_text((REPO / "config/segment.param.yaml").read_text())
    env = with_stubs({**os.environ, "AMENT_PREFIX_PATH": str(prefix), "TMPDIR": str(tmp_path)})
    result = subprocess.run(
        [sys.executable, "-c", _REAL_LAUNCH, str(LAUNCH_FILE), json.dumps(given)],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stderr
    launched = json.loads(result.stdout.strip().splitlines()[-1])
    launched["remappings"] = launched["remappings"] or []  # launch_ros: None for none
    assert launched == {"parameters": [str(shipped), *overrides], "remappings": remappings}
