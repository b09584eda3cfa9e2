"""File formats the data sets share: headerless float32 scans, SemanticKITTI .label files, images, and the
one-file-per-scan folders of the KITTI layouts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from xkd_ros.classes import load_class_set


def read_scan_bin(path: Path, num_channels: int) -> np.ndarray:
    """float32 (N, num_channels) points of a headerless .bin (KITTI, nuScenes); partial points raise."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing point cloud")
    point_bytes = 4 * num_channels
    size = path.stat().st_size
    if size % point_bytes:
        raise ValueError(
            f"{path}: {size} bytes is not a multiple of {point_bytes} ({num_channels} float32 per point): "
            "truncated?"
        )
    return np.fromfile(path, dtype=np.float32).reshape(-1, num_channels)


def read_label_file(path: Path, num_points: int, classes: str) -> np.ndarray:
    """Training ids of a SemanticKITTI-format .label (uint32: semantic id in the low 16 bits, instance in the
    high ones) for a scan of `num_points`, mapped through the class set `classes`."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing label file")
    size = path.stat().st_size
    if size != 4 * num_points:
        raise ValueError(
            f"{path}: {size} bytes, expected {4 * num_points} (one uint32 for each of {num_points} points)"
        )
    raw = np.fromfile(path, dtype=np.uint32) & 0xFFFF
    return load_class_set(classes).map_raw(raw, source=str(path))


def read_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8 (OpenCV decodes to BGR)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"{path}: missing or not an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def check_all_present(folder: Path, scans: list[str], suffix: str) -> bool:
    """Whether `folder` exists; if it does, it must hold a file for every scan (FileNotFoundError naming
    the first one missing and how many are)."""
    if not folder.is_dir():
        return False
    present = {path.name for path in folder.iterdir()}
    missing = [scan for scan in scans if scan + suffix not in present]
    if missing:
        raise FileNotFoundError(
            f"{folder / (missing[0] + suffix)}: missing ({len(missing)} scan(s) lack one)"
        )
    return True
