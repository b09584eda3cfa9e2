"""launch/segment.launch.py: which parameters reach the node.

Read with stand-ins for the launch API (launch is no PyPI wheel), so its logic is tested everywhere; with the
real launch stack (../shared/ros2-launch, see its README) where that is importable, and skipped, saying why,
where it is not."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types

import pytest
from conftest import REPO

LAUNCH_FILE = REPO / "launch" / "segment.launch.py"
LAUNCH_STACK = REPO.parent / "shared" / "ros2-launch"


class _Action:
    """Any launch action or description: what it was made with."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


@pytest.fixture
def launch_file(monkeypatch):
    """The launch file's module, importing stand-ins for launch, launch_ros and ament_index_python."""
    modules = {
        "launch": types.ModuleType("launch"),
        "launch.actions": types.ModuleType("launch.actions"),
        "launch.substitutions": types.ModuleType("launch.substitutions"),
        "launch_ros": types.ModuleType("launch_ros"),
        "launch_ros.actions": types.ModuleType("launch_ros.actions"),
        "ament_index_python": types.ModuleType("ament_index_python"),
        "ament_index_python.packages": types.ModuleType("ament_index_python.packages"),
    }
    modules["launch"].LaunchDescription = _Action
    for name in ("DeclareLaunchArgument", "OpaqueFunction", "SetEnvironmentVariable", "ExecuteProcess"):
        setattr(modules["launch.actions"], name, type(name, (_Action,), {}))
    modules["launch.substitutions"].LaunchConfiguration = _LaunchConfiguration
    modules["launch_ros.actions"].Node = type("Node", (_Action,), {})
    modules["ament_index_python.packages"].get_package_share_directory = lambda package: f"/share/{package}"
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _node_parameters(launch_file, **given: str) -> list:
    """The `parameters` of the Node the launch file makes, launched with `given` arguments."""
    description = launch_file.generate_launch_description()
    actions = description.args[0]
    context = {
        a.args[0]: a.kwargs["default_value"] for a in actions if type(a).__name__ == "DeclareLaunchArgument"
    }
    unknown = set(given) - set(context)
    assert not unknown, f"not arguments of the launch file: {unknown}"
    context.update(given)
    (node,) = next(a for a in actions if a.kwargs.get("function") is launch_file._node).kwargs["function"](
        context
    )
    return [p.name if isinstance(p, _LaunchConfiguration) else p for p in node.kwargs["parameters"]]


def test_param_file_alone_when_no_argument_is_given(launch_file):
    assert _node_parameters(launch_file) == ["param_file"]


@pytest.mark.parametrize(
    ("given", "overrides"),
    [
        ({"backend": "torch"}, {"backend": "torch"}),
        ({"model_path": "/m.onnx"}, {"model_path": "/m.onnx"}),
        ({"use_sim_time": "true"}, {"use_sim_time": True}),
        ({"param_file": "/mine.yaml", "use_sim_time": "false"}, {"use_sim_time": False}),
    ],
)
def test_only_the_arguments_given_override_the_param_file(launch_file, given, overrides):
    assert _node_parameters(launch_file, **given) == ["param_file", overrides]


def _launch_stack_env() -> dict[str, str] | None:
    wheels = sorted((LAUNCH_STACK / "wheels").glob("*.whl"))
    if not wheels:
        return None
    paths = [*map(str, wheels), str(LAUNCH_STACK / "stubs"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


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
print(json.dumps(parameters))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("given", "overrides"),
    [({}, []), ({"backend": "torch", "use_sim_time": "true"}, [{"backend": "torch", "use_sim_time": True}])],
)
def test_real_launch_passes_only_the_arguments_given(tmp_path, given, overrides):
    """The launch file under the real launch API, its Node's parameters as launch_ros hands them on."""
    env = _launch_stack_env()
    if env is None:
        pytest.skip(f"no launch stack wheels in {LAUNCH_STACK}")
    probe = subprocess.run(
        [sys.executable, "-c", "import launch, launch_ros.actions"], env=env, capture_output=True, text=True
    )
    if probe.returncode != 0:
        reason = probe.stderr.strip().splitlines()[-1]
        pytest.skip(f"the launch stack in {LAUNCH_STACK} does not import here ({reason}); see its README")
    prefix = tmp_path / "prefix"
    (prefix / "share/ament_index/resource_index/packages").mkdir(parents=True)
    (prefix / "share/ament_index/resource_index/packages/xkd_ros").write_text("")
    param_file = prefix / "share/xkd_ros/config/segment.param.yaml"
    param_file.parent.mkdir(parents=True)
    param_file.write_text((REPO / "config/segment.param.yaml").read_text())
    env["AMENT_PREFIX_PATH"] = str(prefix)
    result = subprocess.run(
        [sys.executable, "-c", _REAL_LAUNCH, str(LAUNCH_FILE), json.dumps(given)],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [str(param_file), *overrides]
