"""The deployable graph: one frame in, a label and a confidence per point out, exported to ONNX with three
dynamic axes, so one file serves any rig: the points N, the cameras M and the range-image rows H."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from xkd_ros.model.network import FusionModel, LidarOnlyModel

FUSION_INPUTS = ("range_image", "point_features", "point_index", "images", "point_uv", "point_visible")
LIDAR_INPUTS = FUSION_INPUTS[:3]
ONNX_OPSET = 18
# The graph's symbolic axes, named as xkd_ros.preprocess.input_spec names them: (input, axis) -> symbol.
DYNAMIC_AXES = {
    ("range_image", 1): "H",
    ("point_features", 0): "N",
    ("point_index", 0): "N",
    ("images", 0): "M",
    ("point_uv", 0): "N",
    ("point_uv", 1): "M",
    ("point_visible", 0): "N",
    ("point_visible", 1): "M",
}


class SegmentationExport(nn.Module):
    """A one-frame wrapper: `label` (N,) int64 and `confidence` (N,) float32, then the raw logits.

    Inputs are one frame exactly as xkd_ros.preprocess gives them (NetworkInputs.as_dict()): range_image
    (6, H, W), point_index (N, 2); the batch axis of one is added inside the graph.

    A point any camera sees takes the fused head's softmax; the others take the LiDAR-only head's, which is
    trained for exactly those points (the fused head never saw image features there).
    """

    def __init__(self, model: FusionModel | LidarOnlyModel) -> None:
        super().__init__()
        self.model = model
        self.uses_images = isinstance(model, FusionModel)
        self.input_names = FUSION_INPUTS if self.uses_images else LIDAR_INPUTS
        logits = ("fused_logits", "lidar_logits") if self.uses_images else ("lidar_logits",)
        self.output_names = ("label", "confidence", *logits)

    def forward(
        self,
        range_image: Tensor,
        point_features: Tensor,
        point_index: Tensor,
        images: Tensor | None = None,
        point_uv: Tensor | None = None,
        point_visible: Tensor | None = None,
    ) -> tuple[Tensor, ...]:
        inputs = {
            "range_image": range_image.unsqueeze(0),
            "point_features": point_features,
            "point_index": point_index,
        }
        if not self.uses_images:
            lidar_logits = self.model(inputs)["lidar_logits"]
            confidence, label = torch.softmax(lidar_logits, dim=1).max(dim=1)
            return label, confidence, lidar_logits
        inputs.update(images=images, point_uv=point_uv, point_visible=point_visible)
        outputs = self.model(inputs)
        fused_logits, lidar_logits = outputs["fused_logits"], outputs["lidar_logits"]
        seen = point_visible.sum(dim=1, keepdim=True) > 0  # not amax: no maximum over M = 0 cameras
        probabilities = torch.where(
            seen, torch.softmax(fused_logits, dim=1), torch.softmax(lidar_logits, dim=1)
        )
        confidence, label = probabilities.max(dim=1)
        return label, confidence, fused_logits, lidar_logits


def export_onnx(
    model: FusionModel | LidarOnlyModel, inputs: dict[str, Tensor], path: str | Path, opset: int = ONNX_OPSET
) -> Path:
    """Write `model` (put in eval mode) as a single-file ONNX graph of SegmentationExport; `inputs` is one
    example frame as xkd_ros.preprocess gives it, with at least 2 points, 2 cameras and 8 range rows.

    N, M and H are dynamic (DYNAMIC_AXES). The tracer is told M >= 1 and H >= 8 (it would otherwise guard
    the M = 0 branch of FusionModel away or specialise small sizes); the graph itself has no such branch
    and runs at M = 0 too, as tested, which is how a LiDAR-only rig runs a fusion model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = SegmentationExport(model.eval()).eval()
    arguments = tuple(inputs[name] for name in wrapper.input_names)
    dims = {
        "N": torch.export.Dim("N", min=2),
        "M": torch.export.Dim("M", min=1),
        "H": torch.export.Dim("H", min=8),
    }
    dynamic_shapes = {
        name: {
            axis: dims[symbol] for (input_name, axis), symbol in DYNAMIC_AXES.items() if input_name == name
        }
        or None
        for name in wrapper.input_names
    }
    with torch.no_grad(), warnings.catch_warnings():
        # the exporter's own noise (torch 2.13): one warning per input sharing an axis, and a deprecation
        # inside torch.export's pytree code
        warnings.filterwarnings("ignore", message="# The axis name: .* will not be used")
        warnings.filterwarnings(
            "ignore", message=".*isinstance\\(treespec, LeafSpec\\)", category=FutureWarning
        )
        torch.onnx.export(
            wrapper,
            arguments,
            path,
            input_names=list(wrapper.input_names),
            output_names=list(wrapper.output_names),
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            dynamo=True,
            verbose=False,
            external_data=False,
        )
    return path
