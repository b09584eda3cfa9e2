"""The package as a ROS user gets it: built by colcon into a workspace, files where ros2 run/launch look."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE_FILES = ["package.xml", "setup.py", "setup.cfg", "resource", "xkd_ros", "config", "launch", "models"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A colcon workspace holding a copy of the package plus a launch file and a model file, built once."""
    root = tmp_path_factory.mktemp("ws")
    source = root / "src/xkd_ros"
    source.mkdir(parents=True)
    for name in PACKAGE_FILES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy2(path, source / name)
    (source / "launch").mkdir(exist_ok=True)
    (source / "launch/probe.launch.py").write_text("# installed by data_files?\n")
    (source / "models").mkdir(exist_ok=True)
    (source / "models/probe.onnx").write_bytes(b"\x08\x07")
    colcon = Path(sys.executable).parent / "colcon"
    result = subprocess.run(
        [
            str(colcon),
            "--log-base",
            "log",
            "build",
            "--paths",
            "src/xkd_ros",
            "--build-base",
            "build",
            "--install-base",
            "install",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return root / "install/xkd_ros"


def test_colcon_installs_share_files_and_ament_index(workspace):
    share = workspace / "share/xkd_ros"
    assert (workspace / "share/ament_index/resource_index/packages/xkd_ros").is_file()
    assert (share / "package.xml").read_text() == (REPO / "package.xml").read_text()
    for config in (REPO / "config").rglob("*"):
        if config.is_file():
            assert (share / config.relative_to(REPO)).read_bytes() == config.read_bytes()
    assert (share / "launch/probe.launch.py").is_file()
    assert (share / "models/probe.onnx").read_bytes() == b"\x08\x07"


def test_console_scripts_land_in_lib_package_and_run(workspace):
    script = workspace / "lib/xkd_ros/xkd-demo"
    assert os.access(script, os.X_OK)
    site = next((workspace / "lib").glob("python3*/site-packages"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert probe.returncode == 0, probe.stderr
    assert "the main job, end to end over real DDS" in probe.stdout
    where = subprocess.run(
        [sys.executable, "-c", "import xkd_ros.msgs, xkd_ros.geometry; print(xkd_ros.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        cwd=workspace,
    )
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
