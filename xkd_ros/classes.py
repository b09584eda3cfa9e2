"""Class taxonomies as data: config/classes/<name>.yaml lists the training classes (id = position, name,
rviz colour) and maps every raw id of the data set to a class name or to `ignore`.

A class set may also map its classes onto another data set's (`maps: {<other>: {class: other class or
null}}`), so a model trained on one set is scored on scans labelled in the other (`ClassSet.map_to`). Every
class is listed there: a class with no counterpart is written `null` (said, not forced onto a near one).

Labels inside a `Frame` are training ids (uint8) of one class set, with IGNORE_INDEX for points that carry
no usable label. A raw id the file does not list is an error: a silent mapping hides a wrong data set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
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
    maps: dict[str, dict[str, str | None]] = field(default_factory=dict)  # other set -> class -> its class

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

    def map_to(self, other: ClassSet) -> np.ndarray:
        """(num_classes,) uint8: this set's training id -> `other`'s training id, IGNORE_INDEX where the
        class has no counterpart there. The map is this file's `maps.<other.name>`; a missing map or a
        target name `other` lacks raises ValueError naming the file."""
        if other.name == self.name:
            return np.arange(self.num_classes, dtype=np.uint8)
        if other.name not in self.maps:
            raise ValueError(
                f"{self.source}: maps: no map to class set {other.name!r} (maps to: {sorted(self.maps)})"
            )
        lut = np.full(self.num_classes, IGNORE_INDEX, dtype=np.uint8)
        for name, target in self.maps[other.name].items():
            if target is None:
                continue
            if target not in other.names:
                raise ValueError(
                    f"{self.source}: maps.{other.name}.{name}: {target!r} is not a class of {other.name!r} "
                    f"({other.source})"
                )
            lut[self.names.index(name)] = other.names.index(target)
        return lut

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
        return cls(
            str(data.get("name", path.stem)), names, colors, lut, str(path), _read_maps(path, data, names)
        )


def _read_maps(path: Path, data: dict, names: tuple[str, ...]) -> dict[str, dict[str, str | None]]:
    """`maps` of a class file, checked on this side: each map names every class of the file exactly once
    (null where there is no counterpart). Target names are checked by `map_to` against the other set."""
    maps = data.get("maps") or {}
    if not isinstance(maps, dict):
        raise ValueError(f"{path}: maps: expected {{class set: {{class: class or null}}}}")
    checked = {}
    for other, entries in maps.items():
        if not isinstance(entries, dict):
            raise ValueError(f"{path}: maps.{other}: expected {{class: class of {other} or null}}")
        unknown = sorted(str(name) for name in entries if name not in names)
        missing = [name for name in names if name not in entries]
        if unknown or missing:
            raise ValueError(
                f"{path}: maps.{other}: "
                + "; ".join(
                    part
                    for part in (
                        f"{unknown} are not classes of this file" if unknown else "",
                        f"{missing} not listed (write null for a class with no counterpart)"
                        if missing
                        else "",
                    )
                    if part
                )
            )
        bad = [name for name, target in entries.items() if target is not None and not isinstance(target, str)]
        if bad:
            raise ValueError(f"{path}: maps.{other}: {bad}: expected a class name or null")
        checked[str(other)] = {str(name): target for name, target in entries.items()}
    return checked


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
