"""The TensorRT engine cache: a serialized engine is only valid for one ONNX file, TensorRT version, GPU
and build setting, so each engine is stored under a digest of all of them with a JSON sidecar naming them.

No TensorRT here: the cache logic is plain files and is tested on any machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CACHE_DIR = Path("~/.cache/xkd_ros/engines")


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; `profile`, `cameras` and `rows` are the (min, opt, max) point count,
    camera count and range-image rows of its optimization profile."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profile: tuple[int, int, int]
    cameras: tuple[int, int, int]
    rows: tuple[int, int, int]

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")
        for name, lowest, what in (("profile", 1, "points"), ("cameras", 0, "cameras"), ("rows", 1, "rows")):
            value = getattr(self, name)
            try:
                triple = tuple(int(v) for v in value)
            except (TypeError, ValueError):
                triple = ()
            if len(triple) != 3 or not lowest <= triple[0] <= triple[1] <= triple[2]:
                raise ValueError(f"{name}: expected {lowest} <= min <= opt <= max {what}, got {value}")
            object.__setattr__(self, name, triple)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            **{name: list(getattr(self, name)) for name in ("profile", "cameras", "rows")},
        }

    def digest(self) -> str:
        """16 hex digits of the SHA-256 of the key's fields (sorted JSON): stable across runs and machines."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def engine_path(cache_dir: str | Path, key: EngineKey) -> Path:
    """Where the engine for `key` lives: `xkd_<digest>.engine`; its sidecar is the same name with .json."""
    return Path(cache_dir).expanduser() / f"xkd_{key.digest()}.engine"


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def find_engine(cache_dir: str | Path, key: EngineKey) -> Path | None:
    """The cached engine for `key`, or None when it is missing, empty, or its sidecar is not `key`."""
    path = engine_path(cache_dir, key)
    try:
        if path.stat().st_size == 0:
            return None
        stored = json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError):
        return None
    return path if stored == key.to_dict() else None


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def store_engine(cache_dir: str | Path, key: EngineKey, serialized: bytes) -> Path:
    """Write the engine, then its sidecar, each atomically (a reader never sees half a file)."""
    if not serialized:
        raise ValueError("store_engine: empty engine")
    path = engine_path(cache_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar_path(path).unlink(missing_ok=True)  # until the new sidecar lands, find_engine sees no engine
    _atomic_write(path, bytes(serialized))
    _atomic_write(sidecar_path(path), (json.dumps(key.to_dict(), indent=2, sort_keys=True) + "\n").encode())
    return path
