"""The real ROS 2 launch and command-line stack for the tests that run it: the wheels of ../shared/ros2-launch
installed into this venv (`make test` does it where that folder exists). Where it is absent, those tests skip
with the reason below; a machine with a ROS install has the real thing."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from conftest import REPO

__all__ = ["STACK", "STUBS", "missing", "with_stubs"]

STACK = REPO.parent / "shared" / "ros2-launch"
STUBS = STACK / "stubs"  # composition_interfaces, which launch_ros imports and no wheel provides
_MODULES = ("launch", "launch_ros", "ros2cli", "ros2launch", "ros2param", "ros2topic")


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
