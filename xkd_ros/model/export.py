"""The deployable graph: one frame in, a label and a confidence per point out, exported to ONNX with dynamic
axes, so one file serves any rig: the points N, the cameras M and the range-image rows H, and per scan the
S points some camera sees, their V camera slots and the U others (xkd_ros.preprocess.fusion_slots)."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import onnxscript.optimizer
import torch
from torch import Tensor, nn

from xkd_ros.model.fusion import gather_slots
from xkd_ros.model.network import FusionModel, LidarOnlyModel
from xkd_ros.preprocess import GRAPH_INPUT_NAMES, INPUT_NAMES

FUSION_INPUTS = GRAPH_INPUT_NAMES
LIDAR_INPUTS = INPUT_NAMES[:3]
ONNX_OPSET = 18
# The graph's symbolic axes, named as xkd_ros.preprocess.input_spec names them: (input, axis) -> symbol.
DYNAMIC_AXES = {
    ("range_image", 1): "H",
    ("point_features", 0): "N",
    ("point_index", 0): "N",
    ("images", 0): "M",
    ("fused_index", 0): "S",
    ("fused_uv", 0): "S",
    ("fused_uv", 1): "V",
    ("fused_view", 0): "S",
    ("fused_view", 1): "V",
    ("fused_visible", 0): "S",
    ("fused_visible", 1): "V",
    ("lidar_index", 0): "U",
    ("output_source", 0): "N",
}


class SegmentationExport(nn.Module):
    """A one-frame wrapper: `label` (N,) int64, `confidence` (N,) float32 and `logits` (N, K) of the head
    each point took.

    Inputs are one frame as xkd_ros.preprocess gives them (NetworkInputs.feed(input_names)): range_image
    (6, H, W), point_index (N, 2) (the batch axis of one is added inside the graph), and for a fusion model
    the compact camera inputs: only the S points some camera sees are fused, at their V visible cameras.

    A point any camera sees takes the fused head; the other U points take the LiDAR-only head, which is
    trained for exactly those points (the fused head never saw image features there). Each head runs only
    on its own points: the same labels and confidences as FusionModel.forward's dense path (tested), at the
    cost of the visible pairs instead of all N x M.
    """

    def __init__(self, model: FusionModel | LidarOnlyModel) -> None:
        super().__init__()
        self.model = model
        self.uses_images = isinstance(model, FusionModel)
        self.input_names = FUSION_INPUTS if self.uses_images else LIDAR_INPUTS
        self.output_names = ("label", "confidence", "logits")

    def forward(
        self,
        range_image: Tensor,
        point_features: Tensor,
        point_index: Tensor,
        images: Tensor | None = None,
        fused_index: Tensor | None = None,
        fused_uv: Tensor | None = None,
        fused_view: Tensor | None = None,
        fused_visible: Tensor | None = None,
        lidar_index: Tensor | None = None,
        output_source: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        model = self.model
        f3 = model.range_branch(range_image.unsqueeze(0), point_features, point_index)
        if not self.uses_images:
            logits = model.lidar_head(f3)
        else:
            view_features = gather_slots(model.image_branch(images), fused_uv, fused_view)
            fused = model.fusion(f3[fused_index], view_features, fused_visible)
            both = torch.cat([model.fused_head(fused), model.lidar_head(f3[lidar_index])])
            logits = both[output_source]
        confidence, label = torch.softmax(logits, dim=1).max(dim=1)
        return label, confidence, logits


def export_onnx(
    model: FusionModel | LidarOnlyModel, inputs: dict[str, Tensor], path: str | Path, opset: int = ONNX_OPSET
) -> Path:
    """Write `model` (put in eval mode) as a single-file ONNX graph of SegmentationExport; `inputs` is one
    example frame as NetworkInputs.feed gives it, with at least 2 points, 2 cameras, 8 range rows and 2 of
    S, U and V (the tracer specialises sizes 0 and 1).

    Every axis of DYNAMIC_AXES is dynamic. The tracer is told M, S, U, V >= 1 and H >= 8; the graph has no
    branch on them and runs at M = 0 and S = 0 or U = 0 too, as tested, which is how a LiDAR-only rig runs a
    fusion model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = SegmentationExport(model.eval()).eval()
    arguments = tuple(inputs[name] for name in wrapper.input_names)
    dims = {
        "N": torch.export.Dim("N", min=2),
        "M": torch.export.Dim("M", min=1),
        "H": torch.export.Dim("H", min=8),
        "S": torch.export.Dim("S", min=1),
        "U": torch.export.Dim("U", min=1),
        "V": torch.export.Dim("V", min=1),
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
    # Fold what depends on the weights alone (BatchNorms folded into sliced weights, RangeBranch._folded):
    # the exporter's own pass stops at 8192-element inputs, which would leave Conv and Gemm weights computed
    # at run time, where quantization would treat them as activations.
    graph = onnxscript.optimizer.optimize(
        onnx.load(path), input_size_limit=1 << 24, output_size_limit=1 << 24
    )
    onnx.save(graph, path)
    return path
