"""Per-point targets of the frozen 2-D teacher, computed once per frame and cached on disk.

The teacher (xkd_ros.model.teachers.EspnetTeacher) runs on each frame's ORIGINAL camera images, in the
order of the pre-processed frame's cameras, and its class probabilities are sampled at every point's
pixels (mean over the cameras that see it). That costs about a tenth of a second an image on a CPU, so the
result is kept in `<cache>/<teacher fingerprint>/<frame name>-<content hash>.npz`: the fingerprint covers
the weights and input size, the content hash the images and the point projections, so seeds, rows and
runs with other settings reuse what is still true and never what is not.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from xkd_ros.data.frame import Frame
from xkd_ros.preprocess import NetworkInputs
from xkd_ros.train.experiment import TeacherConfig


def build_teacher(config: TeacherConfig) -> Any:
    """The frozen teacher `config.kind` names (only "espnet_cityscapes" so far)."""
    from xkd_ros.model.teachers import EspnetTeacher

    return EspnetTeacher(config.path or None, width=config.width, height=config.height)


class TeacherTargets:
    """`(frame, inputs) -> (teacher (N, C) float16, seen (N,) bool)`, from the cache when it holds them.

    teacher: the frozen teacher (`point_targets(images, point_uv, point_visible)`, `fingerprint`); cache: the
    folder of the cached targets. Counts `computed` and `cached` frames, for the run's record.
    """

    def __init__(self, teacher: Any, cache: str | Path) -> None:
        self.teacher = teacher
        self.folder = Path(cache) / teacher.fingerprint
        self.computed = self.cached = 0

    def __call__(self, frame: Frame, inputs: NetworkInputs) -> tuple[np.ndarray, np.ndarray]:
        images = [frame.images[camera] for camera in inputs.cameras]
        path = self.folder / f"{_safe(frame.name)}-{_content_hash(images, inputs)}.npz"
        if path.is_file():
            with np.load(path) as stored:
                self.cached += 1
                return stored["teacher"], stored["seen"]
        if images:
            probabilities, seen = self.teacher.point_targets(images, inputs.point_uv, inputs.point_visible)
        else:  # no camera: nothing seen, the KD term has no points of this frame
            probabilities = np.zeros((inputs.num_points, self.teacher.NUM_CLASSES), dtype=np.float16)
            seen = np.zeros(inputs.num_points, dtype=bool)
        probabilities, seen = probabilities.astype(np.float16), seen.astype(bool)
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.stem}.tmp.npz")  # renamed: a killed run leaves no torn file
        np.savez_compressed(temporary, teacher=probabilities, seen=seen)
        temporary.replace(path)
        self.computed += 1
        return probabilities, seen


def _content_hash(images: list[np.ndarray], inputs: NetworkInputs) -> str:
    digest = hashlib.sha256()
    for array in (*images, inputs.point_uv, inputs.point_visible):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name or "frame")[-80:]
