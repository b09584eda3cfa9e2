"""What `ros2 launch xkd_ros segment.launch.py` starts, from its launch arguments, without ROS.

The launch file hands every argument over as the string the user typed ("" = not given) and turns the plan
into launch actions; everything that can be wrong with the arguments is found here, where it is tested on any
machine, and said in one line naming the argument (or the file it names):

- parameter overrides on top of `param_file`: only the arguments given (model_path, backend, rig_path,
  use_sim_time), so the file's values stand otherwise;
- remappings of the node's inputs: `pointcloud_topic` for ~/input/pointcloud; per camera its image topic
  from `camera_topics` (a YAML map camera -> topic) or else from the `camera_topic` template (`{camera}`
  replaced by the camera's name), with its CameraInfo on the sibling `camera_info` topic (image_transport's
  convention: /cam/image_raw -> /cam/camera_info), and with `camera_transport: compressed` the node's
  ~/input/<camera>/image/compressed on `<image topic>/compressed`;
- `--log-level` for `log_level`;
- what rviz2 shows for `rviz:=true`: the rig's LiDAR frame as the fixed frame, the node's outputs, each
  camera's image topic.

The cameras are the param file's `cameras` (["*"] = the rig's); the rig is the `rig_path` argument, else the
file's, else the shipped nuScenes rig, and it is read only when the plan needs it (["*"] with camera topics,
or rviz): otherwise the node checks it at start-up.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xkd_ros.geometry import Rig
from xkd_ros.parameters import (
    ALL_CAMERAS,
    NODE_NAME,
    ParameterError,
    read_param_file,
    select_cameras,
    validate_parameters,
)
from xkd_ros.paths import config_path
from xkd_ros.viewers import camera_info_topic

__all__ = [
    "ARGUMENTS",
    "CLOUD_INPUT",
    "LaunchArgumentError",
    "LaunchPlan",
    "RvizRequest",
    "parse_flag",
    "plan_launch",
]

# The launch arguments the plan reads (segment.launch.py also has build_only, which starts something else).
ARGUMENTS = (
    "param_file",
    "rig_path",
    "model_path",
    "backend",
    "namespace",
    "use_sim_time",
    "log_level",
    "pointcloud_topic",
    "camera_topic",
    "camera_topics",
    "rviz",
)
CLOUD_INPUT = "~/input/pointcloud"
CAMERA = "{camera}"  # the placeholder of the camera_topic template
LOG_LEVELS = ("debug", "info", "warn", "warning", "error", "fatal")
_FLAGS = {"true": True, "1": True, "false": False, "0": False}  # what launch's IfCondition takes
# A ROS name: tokens of letters, digits and underscores, not starting with a digit (rcl substitutions such as
# {node} allowed); a topic may start with / (absolute) or ~/ (the node's private namespace).
_TOKEN = r"[A-Za-z_{][A-Za-z0-9_{}]*"
_TOPIC = re.compile(rf"(?:~/|/)?{_TOKEN}(?:/{_TOKEN})*")
_NAMESPACE = re.compile(rf"/?(?:{_TOKEN}(?:/{_TOKEN})*)?/?")


class LaunchArgumentError(ValueError):
    """A launch argument, or the file it names, cannot be used; the text is one line naming the argument."""


@dataclass(frozen=True)
class RvizRequest:
    """What rviz2 is started to show: the inputs of `xkd_ros.viewers.rviz_config` and its clock."""

    fixed_frame: str  # the rig's lidar_frame: the frame of the labelled cloud
    node: str  # the node's fully qualified name, e.g. /segment
    # camera -> the image topic the node receives (absolute; with /compressed where camera_transport is
    # compressed: rviz2's Image display takes the transport from the topic's last token)
    image_topics: dict[str, str]
    use_sim_time: bool = False


@dataclass(frozen=True)
class LaunchPlan:
    """segment_node as the launch file starts it."""

    namespace: str  # "/" or "/ns"
    node: str  # fully qualified node name
    overrides: dict[str, Any] = field(default_factory=dict)  # parameters on top of the param file
    remappings: tuple[tuple[str, str], ...] = ()
    ros_arguments: tuple[str, ...] = ()
    cameras: tuple[str, ...] | None = None  # None: ["*"] and the rig not read (the node resolves it)
    rviz: RvizRequest | None = None


def parse_flag(name: str, text: str, default: bool = False) -> bool:
    """A true/false launch argument ("" = `default`)."""
    if not text.strip():
        return default
    try:
        return _FLAGS[text.strip().lower()]
    except KeyError:
        raise LaunchArgumentError(f"launch argument {name}: {text!r} is not true or false") from None


def _topic(name: str, topic: str) -> str:
    if not _TOPIC.fullmatch(topic):
        raise LaunchArgumentError(
            f"launch argument {name}: {topic!r} is not a ROS topic name (tokens of letters, digits and _, "
            "separated by /, none starting with a digit)"
        )
    return topic


def _namespace(text: str) -> str:
    if not _NAMESPACE.fullmatch(text) or "//" in text:
        raise LaunchArgumentError(f"launch argument namespace: {text!r} is not a ROS namespace")
    return "/" + text.strip("/")


def _absolute(topic: str, namespace: str, node: str) -> str:
    """A topic as resolved for the node: relative names are in its namespace, ~/ in its own name."""
    if topic.startswith("/"):
        return topic
    if topic.startswith("~/"):
        return f"{node}/{topic[2:]}"
    return posixpath.join(namespace, topic)


def _camera_topic_map(text: str) -> dict[str, str]:
    """The camera_topics argument: a YAML map camera -> image topic ("" = none)."""
    if not text.strip():
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise LaunchArgumentError(
            f"launch argument camera_topics: not a YAML map ({problem}); e.g. "
            '"{CAM_FRONT: /front/image_raw, CAM_BACK: /back/image_raw}"'
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise LaunchArgumentError(
            f"launch argument camera_topics: {text!r} is not a map of camera names to topics, e.g. "
            '"{CAM_FRONT: /front/image_raw}"'
        )
    return {camera: _topic("camera_topics", topic) for camera, topic in data.items()}


def _template(text: str) -> str:
    if text and CAMERA not in text:
        raise LaunchArgumentError(
            f"launch argument camera_topic: {text!r} has no {CAMERA} (the camera's name goes there, e.g. "
            "/sensing/camera/{camera}/image_raw)"
        )
    return text


def _file_parameters(param_file: str, node: str) -> dict[str, Any]:
    """The param file's parameters for the node, checked as the node checks them, plus use_sim_time."""
    where = f"launch argument param_file: {param_file}"
    if not param_file:
        raise LaunchArgumentError("launch argument param_file: empty (give a parameter file)")
    try:
        flat = read_param_file(param_file, node)
        params = validate_parameters(flat)
    except ParameterError as error:
        text = str(error)
        raise LaunchArgumentError(
            f"launch argument param_file: {text}" if text.startswith(param_file) else f"{where}: {text}"
        ) from None
    params["use_sim_time"] = flat.get("use_sim_time", False) is True
    return params


def _overrides(arguments: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name in ("model_path", "backend", "rig_path"):
        value = arguments.get(name, "").strip()
        if not value:
            continue
        try:
            validate_parameters({name: value})
        except ParameterError as error:
            raise LaunchArgumentError(f"launch argument {name}: {error}") from None
        overrides[name] = value
    if arguments.get("use_sim_time", "").strip():
        overrides["use_sim_time"] = parse_flag("use_sim_time", arguments["use_sim_time"])
    return overrides


def _log_level(text: str) -> tuple[str, ...]:
    """--log-level LEVEL or NAME:=LEVEL (one logger), as rcl takes them."""
    if not text.strip():
        return ()
    level = text.strip().rpartition(":=")[2]
    if level.lower() not in LOG_LEVELS:
        raise LaunchArgumentError(
            f"launch argument log_level: {text!r} is not one of {', '.join(LOG_LEVELS)} "
            "(or LOGGER:=LEVEL for one logger)"
        )
    return ("--log-level", text.strip())


def _load_rig(rig_path: str, from_argument: bool, param_file: str) -> Rig:
    """The rig the node will load; an error names the argument or the param file it came from."""
    path = rig_path or str(config_path("nuscenes.rig.yaml"))
    try:
        return Rig.load(Path(path).expanduser())
    except OSError as error:
        reason = error.strerror or str(error)
    except ValueError as error:  # CalibrationError: names the key
        reason = str(error)
    where = (
        "launch argument rig_path" if from_argument else f"launch argument param_file: {param_file}: rig_path"
    )
    raise LaunchArgumentError(f"{where}: rig {path!r} cannot be read: {reason}")


def plan_launch(arguments: Mapping[str, str]) -> LaunchPlan:
    """The plan for `arguments` (launch argument -> the string given, "" or absent = not given).

    Raises LaunchArgumentError, one line naming the argument: a param file that cannot be read or whose
    parameters the node would refuse, a value of the wrong kind, a topic that is no ROS name, a camera_topic
    template without {camera}, camera_topics naming a camera the node does not have, a rig that cannot be read
    where the plan needs it."""
    given = {name: arguments.get(name, "").strip() for name in ARGUMENTS}
    namespace = _namespace(given["namespace"])
    node = posixpath.join(namespace, NODE_NAME)
    overrides = _overrides(given)
    param_file = given["param_file"]
    params = _file_parameters(param_file, node)
    rviz = parse_flag("rviz", given["rviz"])
    template = _template(given["camera_topic"])
    topic_map = _camera_topic_map(given["camera_topics"])

    rig = None
    rig_path = overrides.get("rig_path") or params["rig_path"]
    cameras: tuple[str, ...] | None = None
    if params["cameras"] != [ALL_CAMERAS]:
        cameras = tuple(params["cameras"])
    if rviz or (cameras is None and (template or topic_map)):
        rig = _load_rig(rig_path, "rig_path" in overrides, param_file)
        try:
            cameras = select_cameras(params["cameras"], rig.names, rig_path or "config/nuscenes.rig.yaml")
        except ParameterError as error:
            raise LaunchArgumentError(f"launch argument param_file: {param_file}: {error}") from None

    unknown_cameras = sorted(set(topic_map) - set(cameras or ()))
    if unknown_cameras:
        raise LaunchArgumentError(
            f"launch argument camera_topics: no camera(s) {unknown_cameras} among the node's cameras "
            f"{list(cameras or ())} (its `cameras` parameter)"
        )

    remappings: list[tuple[str, str]] = []
    if given["pointcloud_topic"]:
        remappings.append((CLOUD_INPUT, _topic("pointcloud_topic", given["pointcloud_topic"])))
    compressed = params["camera_transport"] == "compressed"
    suffix = "/compressed" if compressed else ""
    image_topics: dict[str, str] = {}
    for camera in cameras or ():
        if camera in topic_map:
            image = topic_map[camera]
        elif template:
            image = _topic("camera_topic", template.replace(CAMERA, camera))
        else:
            image_topics[camera] = f"{node}/input/{camera}/image{suffix}"
            continue
        remappings.append((f"~/input/{camera}/image{suffix}", f"{image}{suffix}"))
        remappings.append((f"~/input/{camera}/camera_info", camera_info_topic(image)))
        image_topics[camera] = _absolute(image, namespace, node) + suffix

    request = None
    if rviz:
        use_sim_time = overrides.get("use_sim_time", params["use_sim_time"])
        request = RvizRequest(rig.lidar_frame, node, image_topics, use_sim_time)
    return LaunchPlan(
        namespace=namespace,
        node=node,
        overrides=overrides,
        remappings=tuple(remappings),
        ros_arguments=_log_level(given["log_level"]),
        cameras=cameras,
        rviz=request,
    )
