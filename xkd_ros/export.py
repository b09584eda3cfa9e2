"""`xkd-export`: a training checkpoint -> one self-describing ONNX file (+ model card) for the node.

The ONNX file carries what the node needs to feed it, as metadata: the pre-processing config, the class set
and the training provenance, so a model can never be run with the wrong pre-processing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from xkd_ros.model import ModelConfig, build_model
from xkd_ros.model.export import SegmentationExport, export_onnx
from xkd_ros.preprocess import PreprocessConfig, input_spec
from xkd_ros.train.checkpoint import load_checkpoint

METADATA_KEY = "xkd_ros"


def model_from_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained network (eval mode) and the checkpoint's metadata (no weights)."""
    state = load_checkpoint(path)
    for key in ("model_config", "preprocess", "classes", "model"):
        if key not in state:
            raise ValueError(f"{path}: not an xkd_ros training checkpoint (no {key!r})")
    model = build_model(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval(), {k: v for k, v in state.items() if k not in ("model", "optimizer", "torch_rng")}


def example_inputs(
    preprocess: PreprocessConfig, points: int = 1000, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random inputs of the right shapes and ranges for tracing (the number of points is dynamic)."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for name, (shape, dtype) in input_spec(preprocess).items():
        shape = tuple(points if size == "N" else size for size in shape)
        if name == "point_index":
            limits = np.array([preprocess.range_height, preprocess.range_width])
            array = rng.integers(0, limits, size=shape)
        elif name == "point_visible":
            array = rng.integers(0, 2, size=shape)
        elif name == "point_uv":
            array = rng.uniform(-1, 1, size=shape)
        else:
            array = rng.normal(size=shape)
        inputs[name] = torch.from_numpy(np.ascontiguousarray(array, dtype=dtype))
    return inputs


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Write `out` (.onnx) from `checkpoint`, with the pre-processing config and classes as ONNX metadata."""
    model, meta = model_from_checkpoint(checkpoint)
    preprocess = PreprocessConfig.from_dict(meta["preprocess"], f"{checkpoint}: preprocess")
    out = export_onnx(model, example_inputs(preprocess), out)
    graph = onnx.load(out)
    description = {
        "preprocess": meta["preprocess"],
        "classes": meta["classes"],
        "model_config": meta["model_config"],
        "inputs": list(SegmentationExport(model).input_names),
        "experiment": meta.get("experiment", {}).get("name", ""),
        "stage": meta.get("stage"),
        "step": meta.get("step"),
    }
    graph.metadata_props.add(key=METADATA_KEY, value=json.dumps(description))
    onnx.save(graph, out)
    return out


def read_metadata(onnx_path: str | Path) -> dict[str, Any]:
    """The xkd_ros description stored in an exported model (pre-processing, classes, model config)."""
    for prop in onnx.load(onnx_path, load_external_data=False).metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise ValueError(f"{onnx_path}: no {METADATA_KEY!r} metadata: not exported by xkd-export")


def main(argv: list[str] | None = None) -> int:
    """xkd-export: checkpoint -> ONNX (opset 18, dynamic point count) with its pre-processing as metadata."""
    parser = argparse.ArgumentParser(prog="xkd-export", description=main.__doc__)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by xkd-train (best.pt)")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    args = parser.parse_args(argv)
    path = export_checkpoint(args.checkpoint, args.out)
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB, sha256 {sha256(path)}")
    return 0
