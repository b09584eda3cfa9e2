"""Checkpoints that survive interruption and load without running code, and the network one holds.

Below both training (which writes them) and export / the torch backend (which read them).

Written to a temporary file and renamed over the old one (atomic on POSIX), so a run killed mid-write keeps
its previous checkpoint; read with torch.load(weights_only=True), which refuses pickled code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from xkd_ros.model.config import ModelConfig
from xkd_ros.model.network import build_model


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


def model_from_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained network (eval mode) and the checkpoint's metadata (no weights)."""
    state = load_checkpoint(path)
    for key in ("model_config", "preprocess", "classes", "model"):
        if key not in state:
            raise ValueError(f"{path}: not an xkd_ros training checkpoint (no {key!r})")
    model = build_model(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval(), {k: v for k, v in state.items() if k not in ("model", "optimizer", "torch_rng")}
