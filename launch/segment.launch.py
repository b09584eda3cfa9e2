"""Launch segment_node with a parameter file, input remaps and the large-data Fast DDS profile.

ros2 launch xkd_ros segment.launch.py [param_file:=...] [rig_path:=...] [model_path:=...]
    [backend:=onnxruntime|tensorrt|torch|auto] [namespace:=...] [use_sim_time:=true] [log_level:=debug]
    [pointcloud_topic:=/my/points] [camera_topic:=/my/{camera}/image_raw] [camera_topics:="{CAM_FRONT: /f}"]
    [rviz:=true] [build_only:=true]

What starts is planned by xkd_ros.launch_plan (ROS-free, tested anywhere): only the arguments given override
the param_file; an argument that cannot be used ends the launch with one line naming it and exit status 1.
When segment_node exits with an error (a bad parameter, model or rig: its one-line error is above), the launch
exits 1 too, unless the launch was already shutting down (Ctrl-C).
"""

import os
import shutil
import tempfile

from launch.actions import (
    DeclareLaunchArgument,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.event_handlers import OnProcessExit, OnShutdown
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription

ARGUMENTS = {  # name -> (default, description); "" = not given: the param_file's value stands
    "param_file": (None, "segment_node parameters (validated against config/segment.schema.json)"),
    "rig_path": (
        "",
        'the rig file (cameras, LiDAR); "" = the param_file\'s (there "" = config/nuscenes.rig.yaml)',
    ),
    "model_path": ("", '"" = the param_file\'s (there "" = the shipped model)'),
    "backend": ("", 'onnxruntime | tensorrt | torch | auto; "" = the param_file\'s'),
    "namespace": ("", "namespace of the node (its topics are <namespace>/segment/...)"),
    "use_sim_time": ("", 'use /clock: true | false; "" = the param_file\'s'),
    "log_level": ("", 'debug | info | warn | error | fatal, or LOGGER:=LEVEL; "" = info'),
    "pointcloud_topic": ("", 'the PointCloud2 topic to label; "" = <node>/input/pointcloud'),
    "camera_topic": (
        "",
        "each camera's image topic, {camera} = its name, e.g. /sensing/camera/{camera}/image_raw; its "
        "CameraInfo is the sibling camera_info topic, with camera_transport: compressed the node takes "
        '<topic>/compressed; "" = <node>/input/<camera>/image',
    ),
    "camera_topics": (
        "",
        'a YAML map camera -> image topic, e.g. "{CAM_FRONT: /front/image_raw}"; wins over camera_topic',
    ),
    "rviz": (
        "false",
        "true: start rviz2 (where installed) showing the labelled cloud in the rig's LiDAR frame",
    ),
    "build_only": ("false", "build the TensorRT engine of model_path and exit"),
}


def _share(*parts):
    from ament_index_python.packages import get_package_share_directory

    return os.path.join(get_package_share_directory("xkd_ros"), *parts)


def _fastdds_profile(context, *args, **kwargs):
    """Use the shipped profile unless the user chose one: default transports drop six-camera frames."""
    if os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        return []
    return [SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", _share("config", "fastdds.xml"))]


def _engine_build(model_path):
    """build_only:=true: build the model's TensorRT engine ahead of time (xkd-build-engine) and exit."""
    from ament_index_python.packages import get_package_prefix
    from launch.actions import ExecuteProcess

    builder = os.path.join(get_package_prefix("xkd_ros"), "lib", "xkd_ros", "xkd-build-engine")
    model = model_path or _share("models", "xkd_synthetic.onnx")  # the float graph: TensorRT quantizes itself
    return [ExecuteProcess(cmd=[builder, model], output="screen")]


def _exit_status(event, context):
    """segment_node ended with an error: end the launch with status 1 (launch returns non-zero only for an
    exception), unless the launch itself is stopping it."""
    if event.returncode != 0 and not context.is_shutdown:
        raise RuntimeError(f"segment_node exited with status {event.returncode}: see its error above")


def _rviz2():
    """rviz2's executable: from the ament index (a ROS install), else on PATH; None where there is none."""
    try:
        from ament_index_python.packages import get_package_prefix

        executable = os.path.join(get_package_prefix("rviz2"), "lib", "rviz2", "rviz2")
        if os.access(executable, os.X_OK):
            return executable
    except (ImportError, LookupError, ValueError):
        pass
    return shutil.which("rviz2")


def _rviz(request):
    """rviz2 with a config generated for this rig and these topics, in a folder removed at shutdown."""
    executable = _rviz2()
    if executable is None:
        return [
            LogInfo(
                msg="rviz2 not found: install rviz2 (ros-<distro>-rviz2) to view with rviz:=true, or open "
                "the topics in Foxglove (docs/viewing.md); segment_node runs without it"
            )
        ]
    from launch_ros.actions import Node

    from xkd_ros.viewers import rviz_config

    folder = tempfile.mkdtemp(prefix="xkd_rviz_")
    config = os.path.join(folder, "segment.rviz")
    with open(config, "w") as file:
        file.write(rviz_config(request.fixed_frame, request.node, request.image_topics))
    return [
        Node(
            executable=executable,
            name="rviz2",
            arguments=["-d", config],
            parameters=[{"use_sim_time": request.use_sim_time}],
            output="screen",
        ),
        RegisterEventHandler(OnShutdown(on_shutdown=lambda event, context: shutil.rmtree(folder, True))),
    ]


def _node(context, *args, **kwargs):
    from launch_ros.actions import Node

    from xkd_ros.launch_plan import ARGUMENTS as PLANNED
    from xkd_ros.launch_plan import parse_flag, plan_launch

    given = {name: LaunchConfiguration(name).perform(context) for name in ("build_only", *PLANNED)}
    if parse_flag("build_only", given.pop("build_only")):
        return _engine_build(given["model_path"])
    plan = plan_launch(given)  # LaunchArgumentError: its one line, and the launch exits 1
    node = Node(
        package="xkd_ros",
        executable="segment_node",
        name="segment",
        namespace=plan.namespace,
        parameters=[given["param_file"], *([plan.overrides] if plan.overrides else [])],
        remappings=list(plan.remappings),
        ros_arguments=list(plan.ros_arguments) or None,  # [] would add a second --ros-args
        output="screen",
        emulate_tty=True,
    )
    actions = [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_exit_status))]
    return actions + (_rviz(plan.rviz) if plan.rviz else [])


def generate_launch_description():
    defaults = {"param_file": _share("config", "segment.param.yaml")}
    return LaunchDescription(
        [
            *(
                DeclareLaunchArgument(name, default_value=defaults.get(name, default), description=text)
                for name, (default, text) in ARGUMENTS.items()
            ),
            OpaqueFunction(function=_fastdds_profile),
            OpaqueFunction(function=_node),
        ]
    )
