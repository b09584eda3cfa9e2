"""Checkpoints that survive interruption and load without running code.

Written to a temporary file and renamed over the old one (atomic on POSIX), so a run killed mid-write keeps
its previous checkpoint; read with torch.load(weights_only=True), which refuses pickled code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` (tensors, numbers, strings, lists, dicts) atomically to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(state, temporary)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by save_checkpoint, on the CPU; anything but plain data is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle and zip errors of a truncated or foreign file
        raise ValueError(f"{path}: not a readable checkpoint: {error}") from None
