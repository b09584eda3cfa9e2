"""The runtime dependencies cover what the installed code imports: declared in setup.py (pip) and in
package.xml as rosdep keys (so `rosdep install --from-paths src` brings everything the node, its launch file
and the ROS-side tools need, and nothing stale), and a fresh venv with `pip install <package>` and no extras
runs the parameter check (a runtime import missing from install_requires fails there with
ModuleNotFoundError, as jsonschema once did)."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from ros2_stack import copy_package

# rosdep keys of the Python libraries the code imports (ROS packages are keyed by their own name).
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "jsonschema": "python3-jsonschema",
    "onnxruntime": "python3-onnxruntime-pip",
    "rosbags": "python3-rosbags-pip",
}
# Keys defined in rosdistro's rosdep/python.yaml (read at 000730dc on 2026-11-30; no network here, so the
# list is kept by hand); any other non-ROS key must be defined in config/rosdep.yaml.
ROSDISTRO_KEYS = {
    "python3-numpy",
    "python3-opencv",
    "python3-yaml",
    "python3-jsonschema",
    "python3-onnxruntime-pip",
}
# Modules a vehicle never runs, whose imports come with the pip extras instead of rosdep: why, per module.
OFFLINE = {
    "xkd_ros.model": "the network, for training and export (extra train)",
    "xkd_ros.train": "training (extra train)",
    "xkd_ros.export": "checkpoint -> ONNX (extra train)",
    "xkd_ros.quantize": "ONNX -> int8 ONNX (extra train: onnx)",
    "xkd_ros.data.synthetic": "the synthetic street's generator (extra data: trimesh, embreex, tqdm)",
    "xkd_ros.demo": "records a synthetic drive first (extra data)",
    "xkd_ros.inference.torch": "the PyTorch backend, for development (extra train)",
    "xkd_ros.inference.tensorrt": "the TensorRT backend: TensorRT and CUDA come with NVIDIA's install",
}
# Backends probed by `backend: auto`, imported only inside functions where they are asked for.
OPTIONAL = {"torch", "tensorrt"}
# What a user runs with `ros2 run` / `ros2 launch` on a vehicle, beside segment_node.
RUNTIME_MODULES = (
    "xkd_ros.node",
    "xkd_ros.replay",
    "xkd_ros.record",
    "xkd_ros.evaluate.cli",
    "xkd_ros.evaluate.live",
    "xkd_ros.calibration",
    "xkd_ros.viewers",
)
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _setup_lists() -> dict[str, list[str]]:
    """The module-level list literals of setup.py (RUNTIME, ROS_WHEELS, ...), without running it."""
    tree = ast.parse((REPO / "setup.py").read_text())
    lists = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List):
            try:
                lists[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:  # a list with starred names in it (TEST)
                continue
    return lists


def _requirement_names(requirements: list[str]) -> set[str]:
    return {_normal(re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0]) for r in requirements}


def _module_level_imports(path) -> set[str]:
    """Top-level names imported when the module is imported (not inside functions or TYPE_CHECKING)."""
    names = set()

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    visit(ast.parse(path.read_text()).body)
    return names


@pytest.fixture(scope="module")
def node_imports() -> set[str]:
    """Third-party top-level modules that importing the node imports, directly from xkd_ros modules."""
    code = (
        "import json, sys, xkd_ros.node\n"
        "print(json.dumps([m.__file__ for n, m in sys.modules.items() if n.split('.')[0] == 'xkd_ros']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    files = json.loads(result.stdout.strip().splitlines()[-1])
    imported = set().union(*(_module_level_imports(Path(file)) for file in files))
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    return {name for name in imported if name not in stdlib and name != "xkd_ros"}


def test_setup_py_declares_every_runtime_import(node_imports):
    lists = _setup_lists()
    runtime, ros = _requirement_names(lists["RUNTIME"]), _requirement_names(lists["ROS_WHEELS"])
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for name in sorted(node_imports):
        candidates = {_normal(d) for d in distributions.get(name, [name])}
        if not candidates & (runtime | ros):
            undeclared[name] = sorted(candidates)
    assert not undeclared, (
        f"imported by the node but in neither install_requires nor the ros extra: {undeclared}"
    )
    # The libraries a ROS install does not bring belong in install_requires itself, not in an extra.
    for name in ROSDEP_KEYS:
        if name in node_imports:
            assert {_normal(d) for d in distributions[name]} & runtime, f"{name} is not in install_requires"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in the file, inside functions too (run on some path)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - STDLIB - {"xkd_ros"}


def _offline(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in OFFLINE)


def _exec_depends() -> set[str]:
    root = ET.parse(REPO / "package.xml").getroot()
    return {e.text for tag in ("depend", "exec_depend") for e in root.iter(tag)}


@pytest.fixture(scope="module")
def installed_imports() -> dict[str, set[str]]:
    """Third-party imports of every installed file a vehicle may run (the launch files and every xkd_ros
    module but the OFFLINE ones), by file."""
    files = [*(REPO / "launch").glob("*.py"), *(REPO / "xkd_ros").rglob("*.py")]
    return {
        str(path.relative_to(REPO)): _all_imports(path)
        for path in files
        if path.parent.name == "launch" or not _offline(_module_name(path))
    }


def test_package_xml_declares_every_import_of_the_installed_code(installed_imports):
    declared = _exec_depends()
    missing = {
        file: sorted(ROSDEP_KEYS.get(name, name) for name in names - OPTIONAL)
        for file, names in installed_imports.items()
        if {ROSDEP_KEYS.get(name, name) for name in names - OPTIONAL} - declared
    }
    missing = {file: [k for k in keys if k not in declared] for file, keys in missing.items()}
    assert not missing, f"imported, missing from package.xml exec_depend: {missing}"


def test_package_xml_declares_nothing_the_code_does_not_import(installed_imports):
    used = {ROSDEP_KEYS.get(name, name) for names in installed_imports.values() for name in names}
    assert not _exec_depends() - used, f"declared but imported nowhere: {sorted(_exec_depends() - used)}"


def test_every_rosdep_key_resolves():
    """A ROS package name (installed here as a wheel), a rosdistro key, or one of config/rosdep.yaml, whose
    pip packages are the ones setup.py requires."""
    ours = yaml.safe_load((REPO / "config" / "rosdep.yaml").read_text())
    requirements = set().union(*map(_requirement_names, _setup_lists().values()))
    for key, rules in ours.items():
        for platform, rule in rules.items():
            packages = {_normal(p) for p in rule["pip"]["packages"]}
            assert packages <= requirements, (
                f"config/rosdep.yaml {key} ({platform}): {packages} not in setup.py"
            )
    for key in _exec_depends():
        if key.startswith("python3-"):
            assert key in ROSDISTRO_KEYS or key in ours, f"rosdep key {key} is in neither rosdistro nor ours"
        else:
            assert importlib.util.find_spec(key) is not None, f"{key} is not a ROS package installed here"


def test_optional_backends_are_imported_only_where_asked_for():
    eager = {
        str(path.relative_to(REPO)): sorted(_module_level_imports(path) & OPTIONAL)
        for path in (REPO / "xkd_ros").rglob("*.py")
        if not _offline(_module_name(path)) and _module_level_imports(path) & OPTIONAL
    }
    assert not eager, f"imported at module level outside the offline modules: {eager}"


def test_the_runtime_tools_load_no_offline_module():
    """Importing the node and the ROS-side tools, and loading the default model the way the node does, loads
    neither an OFFLINE module nor an optional backend."""
    code = (
        f"import json, sys\nimport {', '.join(RUNTIME_MODULES)}\n"
        "from xkd_ros.paths import default_model\nfrom xkd_ros.pipeline import Segmenter\n"
        "Segmenter.from_model(default_model('onnxruntime'), 'onnxruntime', 1)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    offline = [m for m in loaded if _offline(m) or m.split(".")[0] in OPTIONAL]
    assert not offline, f"loaded by the runtime tools: {offline}"


@pytest.mark.timeout(300)
def test_fresh_venv_without_extras_runs_the_parameter_check(tmp_path):
    """pip install of the package alone (no extras, pinned by constraints.txt; pip's cache makes it ~15 s
    after the first time), then the check the node makes at start-up, with no ROS in that venv."""
    source = copy_package(tmp_path / "xkd_ros")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    env = {
        **os.environ,
        "PIP_CONSTRAINT": str(REPO / "constraints.txt"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("PYTHONPATH", None)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    check = subprocess.run(
        [str(python), "-m", "xkd_ros.parameters", str(REPO / "config" / "segment.param.yaml")],
        env=env,
        cwd=tmp_path,  # not the checkout: the installed package must be the one imported
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (check.returncode, check.stdout) == (0, "ok\n"), check.stdout + check.stderr
    bad = tmp_path / "bad.param.yaml"
    bad.write_text("/**:\n  ros__parameters:\n    sync:\n      timeout: .nan\n")
    check = subprocess.run(
        [str(python), "-m", "xkd_ros.parameters", str(bad)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 1
    assert check.stderr.strip().endswith("parameter 'sync.timeout': nan is not a finite number"), check.stderr
    rclpy = subprocess.run([str(python), "-c", "import rclpy"], env=env, cwd=tmp_path, capture_output=True)
    assert rclpy.returncode != 0, "the venv has ROS: the check did not run without it"
