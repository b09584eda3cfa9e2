"""What an exported model says about itself, read on the runtime side: no torch, no onnx package.

`xkd-export` writes one JSON description into the ONNX file's metadata under METADATA_KEY (pre-processing,
class set, model config, the rigs it takes) and records the file's sha256 in the model card beside it
(models/<name>.md). The node, the evaluator, the TensorRT engine builder and the training tools all read
them through this module, so the key, the limits and the digest have one definition below the pipeline and
above nothing: export imports them from here, not the other way round.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import onnxruntime

__all__ = ["MAX_CAMERAS", "METADATA_KEY", "RANGE_ROWS", "check_model_card", "read_metadata", "sha256"]

METADATA_KEY = "xkd_ros"
# What xkd-export declares an exported graph runs, and tests it on: 0 to MAX_CAMERAS cameras (0: the
# LiDAR-only head labels every point) and RANGE_ROWS range-image rows (16- to 128-beam scanners and beyond).
MAX_CAMERAS = 8
RANGE_ROWS = (8, 256)
# How xkd_ros.export.model_card records the file's digest: "- File: `<name>.onnx`, <size>, sha256 `<hex>`".
_CARD_SHA256 = re.compile(r"^- File: .*\bsha256 `([0-9a-f]{64})`", re.MULTILINE)


def sha256(path: str | Path) -> str:
    """The hex sha256 of a file, read in blocks (models may be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_model_card(path: str | Path) -> str:
    """Refuse a model file whose sha256 differs from the one its model card (`path` with .md) records.

    Returns what was checked, for the log: models a user exported without a card (or a card without a
    digest) are allowed, with a note saying the checksum was not verified.
    """
    path = Path(path)
    card = path.with_suffix(".md")
    if not path.is_file():
        return ""  # the backend reports a missing model, in its words
    if not card.is_file():
        return f"no model card {card.name} beside it: sha256 not verified"
    match = _CARD_SHA256.search(card.read_text(errors="replace"))
    if match is None:
        return f"its model card {card.name} records no sha256: not verified"
    recorded, actual = match.group(1), sha256(path)
    if actual != recorded:
        raise ValueError(
            f"{path}: sha256 {actual} differs from {recorded} recorded in its model card {card}: the file is "
            "damaged or not the model the card describes"
        )
    return f"sha256 matches its model card {card.name}"


def metadata_session(path: str | Path) -> onnxruntime.InferenceSession:
    """A CPU session only to read a model's metadata (no graph optimisation: nothing will run on it)."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def read_metadata(path: str | Path, session: onnxruntime.InferenceSession | None = None) -> dict[str, Any]:
    """The description xkd-export stored in the model at `path` (from `session` when one is already open);
    ValueError naming the file when there is none or it is not JSON."""
    if session is None:
        session = metadata_session(path)
    metadata = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in metadata:
        raise ValueError(f"{path}: no {METADATA_KEY!r} metadata: not exported by xkd-export")
    try:
        return json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: {METADATA_KEY!r} metadata is not JSON: {error}") from None
