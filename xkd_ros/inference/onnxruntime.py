"""ONNX Runtime backend: the embedded default (CPU); CUDA or TensorRT providers where installed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from xkd_ros.inference.backend import BackendError, check_inputs

_DTYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(bool)": np.dtype(bool),
}


class OnnxRuntimeBackend:
    """One InferenceSession; `threads` caps intra-op threads (0: ONNX Runtime decides).

    Its worker threads sleep between jobs instead of spin-waiting: on a 2-core machine the spinning threads
    took the core the node's next scan, DDS and image decoding need (1.8x the CPU per scan on a shared VM,
    docs/performance.md)."""

    name = "onnxruntime"

    def __init__(
        self, model_path: str | Path, threads: int = 0, providers: Sequence[str] = ("CPUExecutionProvider",)
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise BackendError(f"{self.model_path}: no such ONNX model")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = set(ort.get_available_providers())
        chosen = [p for p in providers if p in available]
        if not chosen:
            raise BackendError(
                f"providers: none of {list(providers)} is available (available: {sorted(available)})"
            )
        try:
            self.session = ort.InferenceSession(str(self.model_path), options, providers=chosen)
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise BackendError(f"{self.model_path}: cannot load: {error}") from None
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self._expected = {
            i.name: (_DTYPES.get(i.type, np.dtype(np.float32)), len(i.shape))
            for i in self.session.get_inputs()
        }

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(inputs, self._expected, str(self.model_path))
        outputs = self.session.run(None, {name: inputs[name] for name in self.input_names})
        return dict(zip(self.output_names, outputs, strict=True))
