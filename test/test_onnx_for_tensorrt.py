"""The exported model as TensorRT needs it, checked with onnx alone (TensorRT cannot be installed here):
static camera count and resolution, no data-dependent shapes but the point count, Softmax as one op, and
only operators TensorRT's ONNX parser supports."""

import collections

import onnx
import pytest
from conftest import REPO

from xkd_ros.export import read_metadata

MODEL = REPO / "models/xkd_synthetic.onnx"
# Operators of onnx-tensorrt's supported list (TensorRT 10) that a segmentation network of this kind may use.
TENSORRT_OPS = {
    "Add", "ArgMax", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "Conv", "Div", "Equal",
    "Exp", "Expand", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gemm", "Greater",
    "GridSample", "Identity", "LeakyRelu", "Less", "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg", "Pad",
    "ReduceMax", "ReduceMean", "ReduceSum", "Relu", "Reshape", "Resize", "Shape", "Sigmoid", "Slice",
    "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze", "Where",
}  # fmt: skip
DATA_DEPENDENT = {"NonZero", "Unique", "Loop", "If", "Scan", "NonMaxSuppression", "Compress"}


@pytest.fixture(scope="module")
def model():
    return onnx.shape_inference.infer_shapes(onnx.load(MODEL), strict_mode=True)


def dims(value):
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_only_the_point_count_is_dynamic(model):
    preprocess = read_metadata(MODEL)["preprocess"]
    shapes = {i.name: dims(i) for i in model.graph.input}
    cameras = len(preprocess["cameras"])
    assert shapes["images"] == [cameras, 3, preprocess["image_height"], preprocess["image_width"]]
    assert shapes["range_image"] == [6, preprocess["range_height"], preprocess["range_width"]]
    for name in ("point_features", "point_index", "point_uv", "point_visible"):
        assert shapes[name][0] == "points"
        assert all(isinstance(d, int) and d > 0 for d in shapes[name][1:]), name
    symbols = {
        d for v in [*model.graph.value_info, *model.graph.output] for d in dims(v) if isinstance(d, str)
    }
    assert symbols == {"points"}  # every intermediate shape is static or the point count itself


def test_operators_are_tensorrt_ones(model):
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
