"""Inference backends: one `Backend` interface, chosen by name, so the node, the evaluator and the demo run
the same network on ONNX Runtime (the CPU default), TensorRT (the vehicle GPU) or PyTorch (development).

Nothing here imports torch or tensorrt unless that backend is asked for.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from xkd_ros.inference.backend import Backend, BackendError
from xkd_ros.inference.onnxruntime import OnnxRuntimeBackend

BACKENDS = ("onnxruntime", "tensorrt", "torch")

__all__ = ["BACKENDS", "Backend", "BackendError", "OnnxRuntimeBackend", "choose_backend", "create_backend"]


def choose_backend(kind: str) -> tuple[str, str]:
    """The backend to use for `kind` and why: "auto" takes TensorRT where it and a CUDA device are there (the
    fastest on a vehicle GPU), else ONNX Runtime (the fastest here on the CPU)."""
    if kind != "auto":
        if kind not in BACKENDS:
            raise BackendError(f"backend: {kind!r} is not one of {(*BACKENDS, 'auto')}")
        return kind, "set by the backend parameter"
    if importlib.util.find_spec("tensorrt") is None:
        return "onnxruntime", "auto: tensorrt is not installed"
    if importlib.util.find_spec("torch") is None:
        return "onnxruntime", "auto: torch (for CUDA buffers) is not installed"
    import torch

    if not torch.cuda.is_available():
        return "onnxruntime", "auto: no CUDA device"
    return "tensorrt", f"auto: TensorRT and {torch.cuda.get_device_name(0)} are available"


def create_backend(kind: str, model_path: str | Path, **options: Any) -> Backend:
    """The backend `kind` ("onnxruntime" or "tensorrt": a .onnx file; "torch": a training checkpoint)."""
    kind, _ = choose_backend(kind)
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(model_path, **options)
    if kind == "tensorrt":
        from xkd_ros.inference.tensorrt import TensorRTBackend  # needs tensorrt and a CUDA device

        return TensorRTBackend(model_path, **options)
    from xkd_ros.inference.torch import TorchBackend  # needs the `train` extra

    return TorchBackend(model_path, **options)
