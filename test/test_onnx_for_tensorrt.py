"""The exported model as TensorRT needs it, checked with onnx alone (TensorRT cannot be installed here):
dynamic points, cameras and range rows and nothing else (every intermediate shape follows from those), fixed
image size, Softmax as one op, and only operators TensorRT's ONNX parser supports.

Run on a tiny model exported now and on the shipped models/xkd_synthetic.onnx (which passes once it is
re-exported with the rig-agnostic graph)."""

import collections
import re

import onnx
import pytest
from conftest import REPO
from tiny_model import tiny_model

from xkd_ros.inference.metadata import read_metadata

MODEL = REPO / "models/xkd_synthetic.onnx"
# Operators of onnx-tensorrt's supported list (TensorRT 10) that a segmentation network of this kind may use.
TENSORRT_OPS = {
    "Add", "ArgMax", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "Conv", "Div", "Equal",
    "Exp", "Expand", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gemm", "Greater",
    "GridSample", "Identity", "LeakyRelu", "Less", "LessOrEqual", "MatMul", "Max", "MaxPool", "Min", "Mul",
    "Neg", "Pad", "Range", "ReduceMax", "ReduceMean", "ReduceSum", "Relu", "Reshape", "Resize", "Shape",
    "Sigmoid", "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze",
    "Where",
}  # fmt: skip
DATA_DEPENDENT = {"NonZero", "Unique", "Loop", "If", "Scan", "NonMaxSuppression", "Compress"}


@pytest.fixture(scope="module", params=["tiny", "shipped"])
def exported(request, tmp_path_factory):
    path = tiny_model(tmp_path_factory.mktemp("tiny")) if request.param == "tiny" else MODEL
    return path, onnx.shape_inference.infer_shapes(onnx.load(path), strict_mode=True)


def dims(value):
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_points_cameras_and_rows_are_the_only_dynamic_axes(exported):
    path, model = exported
    preprocess = read_metadata(path)["preprocess"]
    shapes = {i.name: dims(i) for i in model.graph.input}
    assert shapes == {
        "range_image": [6, "H", preprocess["range_width"]],
        "point_features": ["N", 5],
        "point_index": ["N", 2],
        "images": ["M", 3, preprocess["image_height"], preprocess["image_width"]],
        "fused_index": ["S"],
        "fused_uv": ["S", "V", 2],
        "fused_view": ["S", "V"],
        "fused_visible": ["S", "V"],
        "lidar_index": ["U"],
        "output_source": ["N"],
    }
    symbols = {
        d for v in [*model.graph.value_info, *model.graph.output] for d in dims(v) if isinstance(d, str)
    }
    # every intermediate shape is static or follows from the input axes (e.g. "((H - 1)//2) + 1", "S + U"):
    # no shape depends on data inside the graph (the per-scan sizes S, U, V are inputs' axes)
    found = set().union(*(re.findall(r"[A-Za-z_]\w*", symbol) for symbol in symbols))
    assert found <= {"N", "M", "H", "S", "U", "V"}
    assert {"N", "S"} <= found


def test_operators_are_tensorrt_ones(exported):
    _, model = exported
    ops = collections.Counter(node.op_type for node in model.graph.node)
    assert not set(ops) & DATA_DEPENDENT
    assert set(ops) <= TENSORRT_OPS, set(ops) - TENSORRT_OPS
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)  # no custom ops, no plugins
    assert ops["Softmax"] >= 1
    assert ops["Exp"] == 0  # Softmax stays one op, not decomposed into Exp / ReduceSum / Div
    # The fusion's bilinear sampling: four row gathers (Gather, GatherND in every TensorRT), not GridSample.
    assert ops["GridSample"] == 0
    assert ops["Floor"] == 2
    assert {opset.version for opset in model.opset_import if opset.domain in ("", "ai.onnx")} == {18}
