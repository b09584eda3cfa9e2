"""Launch segment_node with config/segment.param.yaml and the large-data Fast DDS profile.

ros2 launch xkd_ros segment.launch.py [param_file:=...] [model_path:=...] [backend:=onnxruntime|torch]
    [namespace:=...] [use_sim_time:=true] [build_only:=true]

model_path, backend and use_sim_time override the param_file only when given (xkd_ros.parameters.
launch_overrides): their default "" leaves the file's values.
"""

import os

from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription


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


def _node(context, *args, **kwargs):
    from launch_ros.actions import Node

    if LaunchConfiguration("build_only").perform(context).lower() in ("true", "1"):
        return _engine_build(LaunchConfiguration("model_path").perform(context))

    from xkd_ros.parameters import launch_overrides

    overrides = launch_overrides(
        **{
            name: LaunchConfiguration(name).perform(context)
            for name in ("model_path", "backend", "use_sim_time")
        }
    )
    return [
        Node(
            package="xkd_ros",
            executable="segment_node",
            name="segment",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("param_file"), *([overrides] if overrides else [])],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "param_file",
                default_value=_share("config", "segment.param.yaml"),
                description="segment_node parameters (validated against config/segment.schema.json)",
            ),
            DeclareLaunchArgument(
                "model_path",
                default_value="",
                description='"" = the param_file\'s (there "" = the shipped model)',
            ),
            DeclareLaunchArgument(
                "backend",
                default_value="",
                description='onnxruntime | tensorrt | torch | auto; "" = the param_file\'s',
            ),
            DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="",
                description='use /clock: true | false; "" = the param_file\'s',
            ),
            DeclareLaunchArgument(
                "build_only", default_value="false", description="build the TensorRT engine and exit"
            ),
            OpaqueFunction(function=_fastdds_profile),
            OpaqueFunction(function=_node),
        ]
    )
