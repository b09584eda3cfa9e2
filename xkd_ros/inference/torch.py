"""PyTorch backend, for development: runs a training checkpoint exactly as the exported graph would."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from xkd_ros.inference.backend import BackendError, check_inputs
from xkd_ros.model.checkpoint import model_from_checkpoint
from xkd_ros.model.export import SegmentationExport
from xkd_ros.preprocess import PreprocessConfig, graph_input_spec


class TorchBackend:
    """A checkpoint from xkd-train behind the same inputs and outputs as the exported ONNX model."""

    name = "torch"

    def __init__(self, model_path: str | Path, threads: int = 0, device: str = "cpu") -> None:
        self.model_path = Path(model_path)
        try:
            model, meta = model_from_checkpoint(self.model_path)
        except (FileNotFoundError, ValueError) as error:
            raise BackendError(str(error)) from None
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.wrapper = SegmentationExport(model).to(self.device).eval()
        self.input_names = tuple(self.wrapper.input_names)
        self.output_names = tuple(self.wrapper.output_names)
        spec = graph_input_spec(PreprocessConfig.from_dict(meta["preprocess"], f"{model_path}: preprocess"))
        self._expected = {name: (spec[name][1], len(spec[name][0])) for name in self.input_names}

    @torch.inference_mode()
    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(inputs, self._expected, str(self.model_path))
        tensors = [
            torch.from_numpy(np.ascontiguousarray(inputs[name])).to(self.device) for name in self.input_names
        ]
        outputs = self.wrapper(*tensors)
        return {name: value.cpu().numpy() for name, value in zip(self.output_names, outputs, strict=True)}
