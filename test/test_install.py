"""The runtime dependencies cover what the node imports: declared in setup.py (pip) and package.xml (rosdep),
and a fresh venv with `pip install <package>` and no extras runs the parameter check (a runtime import
missing from install_requires fails there with ModuleNotFoundError, as jsonschema once did)."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE_FILES = ["package.xml", "setup.py", "setup.cfg", "resource", "xkd_ros", "config", "launch", "models"]
# rosdep keys of the Python libraries the node imports (ROS packages are keyed by their own name).
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "jsonschema": "python3-jsonschema",
    "onnxruntime": "python3-onnxruntime-pip",
}


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


def test_package_xml_declares_every_runtime_import(node_imports):
    root = ET.parse(REPO / "package.xml").getroot()
    exec_depends = {e.text for tag in ("depend", "exec_depend") for e in root.iter(tag)}
    missing = sorted({ROSDEP_KEYS.get(name, name) for name in node_imports} - exec_depends)
    assert not missing, f"imported by the node, missing from package.xml exec_depend: {missing}"


@pytest.mark.timeout(300)
def test_fresh_venv_without_extras_runs_the_parameter_check(tmp_path):
    """pip install of the package alone (no extras, pinned by constraints.txt; pip's cache makes it ~15 s
    after the first time), then the check the node makes at start-up, with no ROS in that venv."""
    source = tmp_path / "xkd_ros"
    source.mkdir()
    for name in PACKAGE_FILES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, source / name)
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
