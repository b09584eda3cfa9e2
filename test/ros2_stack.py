"""A ROS user's workspace and shell with the real ROS 2 launch and command-line stack, for the tests that run
it (test_ros2_tools, test_launch) and bench/bench_launch.py, which times the same steps: one copy of each.

The stack is the wheels of ../shared/ros2-launch installed into this venv (`make test` does it where that
folder exists); where it is absent, those tests skip and the bench stops with the reason `missing` gives; a
machine with a ROS install has the real thing. Plain Python (no pytest), so the bench imports it too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

__all__ = [
    "PACKAGE_FILES",
    "REPO",
    "STACK",
    "colcon_build",
    "copy_package",
    "daemons",
    "missing",
    "start",
    "stop",
    "user_shell",
    "with_stubs",
]

REPO = Path(__file__).resolve().parent.parent
STACK = REPO.parent / "shared" / "ros2-launch"
STUBS = STACK / "stubs"  # composition_interfaces, which launch_ros imports and no wheel provides
_MODULES = ("launch", "launch_ros", "ros2cli", "ros2launch", "ros2param", "ros2topic")
# What a source checkout of the package holds, as colcon and pip build it.
PACKAGE_FILES = ("package.xml", "setup.py", "setup.cfg", "resource", "xkd_ros", "config", "launch", "models")
# Runs a command with SIGINT at its default, as a terminal starts it. A process inherits an ignored SIGINT
# (pytest started in the background by a script, `nohup make test &`, ignores it), and `ros2 launch` started
# so never hears the Ctrl-C of `stop`: seen here, the launch then hangs until killed.
_WITH_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def missing() -> str | None:
    """Why the real stack cannot run here, or None where it can."""
    reason = "no ../shared/ros2-launch (the real launch/ros2cli stack, see its README)"
    if not STACK.is_dir():
        return reason
    absent = [name for name in _MODULES if importlib.util.find_spec(name) is None]
    if absent or not (Path(sys.executable).parent / "ros2").is_file():
        what = ", ".join(absent) or "ros2"
        return f"{reason}: not installed in this venv ({what} missing; make test installs it)"
    return None


def with_stubs(env: dict[str, str]) -> dict[str, str]:
    """`env` with ../shared/ros2-launch/stubs on PYTHONPATH (after what is there)."""
    paths = [p for p in (env.get("PYTHONPATH", ""), str(STUBS)) if p]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


def copy_package(destination: Path) -> Path:
    """A copy of the package's sources in `destination` (created), without caches and build metadata."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in PACKAGE_FILES:
        path = REPO / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(path, destination / name, ignore=ignore)
        elif path.exists():
            shutil.copy2(path, destination / name)
    return destination


def colcon_build(workspace: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`colcon build --packages-select xkd_ros` in `workspace` (its src/ holding the package), as a user
    runs it; stdout and stderr captured."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "colcon"), "build", "--packages-select", "xkd_ros"],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def user_shell(workspace: Path, env: dict[str, str], ros_log: Path, tmp: Path) -> dict[str, str]:
    """The environment of a user's shell after `source install/setup.bash` over the ROS underlay (this venv,
    where a ROS machine has /opt/ros/<distro>), on `env`'s domain; ROS logs in `ros_log`, temporary files
    in `tmp` (launch_ros leaves its launch_params_* files there); the stubs launch_ros needs on PYTHONPATH."""
    underlay = {
        **env,
        "AMENT_PREFIX_PATH": sys.prefix,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "ROS_LOG_DIR": str(ros_log),
        "TMPDIR": str(tmp),
    }
    sourced = subprocess.run(
        ["bash", "-c", "source install/setup.bash && env -0"],
        cwd=workspace,
        env=underlay,
        capture_output=True,
        timeout=60,
        check=True,
    )
    return with_stubs(dict(line.split("=", 1) for line in sourced.stdout.decode().split("\0") if "=" in line))


def start(shell: dict[str, str], args: list[str], log: Path) -> subprocess.Popen:
    """A long-running command in its own process group (so that Ctrl-C reaches all of it), with SIGINT at
    its default, run in the workspace, output to `log`."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-c", _WITH_SIGINT, *args],
            env=shell,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=shell["PWD"],
        )


def stop(process: subprocess.Popen, timeout: float = 30.0) -> int:
    """Ctrl-C to the process group, as a terminal sends it; killed when it does not end in `timeout`; what
    the group left behind is killed too."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.returncode


def daemons(domain_id: str) -> list[int]:
    """Processes of a ros2 daemon serving `domain_id` (ros2cli names it on its command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ros2-daemon" in argv and domain_id.encode() in argv[argv.index(b"--ros-domain-id") + 1 :][:1]:
            found.append(int(entry.name))
    return found
