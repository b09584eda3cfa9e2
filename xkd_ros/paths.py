"""Where the shared files (config/, models/) are: a source checkout, a pip prefix or a ROS install."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "xkd_ros"


def _ament_share() -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except (ImportError, LookupError, OSError):  # no ROS, not in the index, or no AMENT_PREFIX_PATH
        return None


def share_dir() -> Path:
    """The folder holding config/ and models/: the checkout (editable installs, tests), then
    <prefix>/share/xkd_ros (pip and colcon installs), then the ament index (a sourced ROS workspace)."""
    candidates = [Path(__file__).resolve().parent.parent, Path(sys.prefix) / "share" / PACKAGE]
    for candidate in candidates:
        if (candidate / "config").is_dir():
            return candidate
    ament = _ament_share()
    if ament is not None and (ament / "config").is_dir():
        return ament
    raise FileNotFoundError(f"no config/ folder in {[str(c) for c in candidates]} nor in the ament index")


def config_path(*parts: str) -> Path:
    """A file under config/, e.g. config_path("classes", "synthetic.yaml")."""
    return share_dir().joinpath("config", *parts)


def default_model(backend: str) -> Path:
    """The shipped model a backend runs when none is given: the int8 copy for ONNX Runtime on the CPU
    (0.7x the float model's inference on 2 cores, within 1 mIoU on the synthetic test splits:
    docs/quantization.md), the float graph for TensorRT, which builds its own fp16 or int8 engine from it."""
    name = "xkd_synthetic.int8.onnx" if backend == "onnxruntime" else "xkd_synthetic.onnx"
    return share_dir() / "models" / name
