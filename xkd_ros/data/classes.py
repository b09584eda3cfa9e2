"""Class taxonomies as data: config/classes/<name>.yaml lists the training classes (id = position, name,
rviz colour) and maps every raw id of the data set to a class name or to `ignore`.

Labels inside a `Frame` are training ids (uint8) of one class set, with IGNORE_INDEX for points that carry
no usable label. A raw id the file does not list is an error: a silent mapping hides a wrong data set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import yaml

from xkd_ros.paths import config_path

IGNORE_INDEX = 255
IGNORE = "ignore"
IGNORE_COLOR = (128, 128, 128)
# A class set's name: a file stem under config/classes, never a path (no separator, no leading dot).
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True, eq=False)
class ClassSet:
    """Training classes of one data set, their colours, and the lookup from raw ids."""

    name: str
    names: tuple[str, ...]
    colors: np.ndarray  # (K, 3) uint8 RGB
    raw_to_train: np.ndarray  # (max raw id + 1,) int16: training id, IGNORE_INDEX, or -1 for unknown
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def map_raw(self, raw_ids: np.ndarray, source: str = "labels") -> np.ndarray:
        """Training ids (uint8) of raw ids; unknown raw ids raise ValueError naming `source` and the ids."""
        raw_ids = np.asarray(raw_ids)
        inside = (raw_ids >= 0) & (raw_ids < len(self.raw_to_train))
        train = np.full(raw_ids.shape, -1, dtype=np.int16)
        train[inside] = self.raw_to_train[raw_ids[inside]]
        if (train < 0).any():
            unknown = np.unique(raw_ids[train < 0])[:10].tolist()
            raise ValueError(
                f"{source}: raw class id(s) {unknown} are not in class set {self.name!r} ({self.source})"
            )
        return train.astype(np.uint8)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """RGB uint8 colour per label (grey for ignored points)."""
        palette = np.full((256, 3), IGNORE_COLOR, dtype=np.uint8)
        palette[: self.num_classes] = self.colors
        return palette[np.asarray(labels, dtype=np.uint8)]

    @classmethod
    def from_yaml(cls, path: str | Path) -> ClassSet:
        path = Path(path)
        data = yaml.safe_load(path.read_text())
        try:
            classes = data["classes"]
            names = tuple(str(entry["name"]) for entry in classes)
            colors = np.array([entry["color"] for entry in classes], dtype=np.uint8).reshape(len(names), 3)
            raw = {int(k): str(v) for k, v in data["raw"].items()}
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{path}: expected 'classes' (name, color) and 'raw' (id: name): {error}"
            ) from None
        if len(names) >= IGNORE_INDEX or len(set(names)) != len(names):
            raise ValueError(f"{path}: classes: names must be unique and fewer than {IGNORE_INDEX}")
        lut = np.full(max(raw) + 1 if raw else 0, -1, dtype=np.int16)
        for raw_id, name in raw.items():
            if name == IGNORE:
                lut[raw_id] = IGNORE_INDEX
            elif name in names:
                lut[raw_id] = names.index(name)
            else:
                raise ValueError(f"{path}: raw.{raw_id}: {name!r} is neither a class nor {IGNORE!r}")
        return cls(str(data.get("name", path.stem)), names, colors, lut, str(path))


def load_class_set(name: str) -> ClassSet:
    """The class set config/classes/<name>.yaml.

    `name` is a name, never a path: it comes from model files, bag sidecars and data set splits, which must
    not make the process open files of their choosing. A file a user names goes to ClassSet.from_yaml.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"class set {name!r}: not a class set name (letters, digits, '_', '-', '.'; no path); "
            f"known: {sorted(p.stem for p in config_path('classes').glob('*.yaml'))}"
        )
    return _load_class_set(name)


@cache
def _load_class_set(name: str) -> ClassSet:
    path = config_path("classes", f"{name}.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such class set")
    return ClassSet.from_yaml(path)
