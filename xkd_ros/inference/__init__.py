"""Inference backends: one `Backend` interface, chosen by name, so the node, the evaluator and the demo run
the same network on ONNX Runtime (the CPU default), PyTorch (development) or, later, TensorRT.

Nothing here imports torch unless the torch backend is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xkd_ros.inference.backend import Backend, BackendError
from xkd_ros.inference.onnxruntime import OnnxRuntimeBackend

BACKENDS = ("onnxruntime", "torch")

__all__ = ["BACKENDS", "Backend", "BackendError", "OnnxRuntimeBackend", "create_backend"]


def create_backend(kind: str, model_path: str | Path, **options: Any) -> Backend:
    """The backend `kind` ("onnxruntime": a .onnx file; "torch": a training checkpoint) for `model_path`."""
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(model_path, **options)
    if kind == "torch":
        from xkd_ros.inference.torch import TorchBackend  # needs the `train` extra

        return TorchBackend(model_path, **options)
    raise BackendError(f"backend: {kind!r} is not one of {BACKENDS}")
