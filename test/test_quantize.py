"""xkd-quantize: the int8 copy of an exported model labels as the float one does, loads as any exported
model (its metadata carried, a "quantization" entry added), is QDQ, and bad arguments are one line, exit 2.

The model is the tiny one (test/tiny_model.py) and the calibration data a one-scene synthetic set of small
frames written here: what is tested is the wiring, not the accuracy of the shipped model (docs/
quantization.md measures that)."""

import dataclasses

import numpy as np
import onnx
import onnxruntime
import pytest
from tiny_model import tiny_model

from xkd_ros.data.synthetic import SyntheticDataset, load_config
from xkd_ros.data.synthetic.generator import generate
from xkd_ros.inference.metadata import read_metadata
from xkd_ros.pipeline import Segmenter
from xkd_ros.preprocess import prepare_frame
from xkd_ros.quantize import main

SMALL = {  # one scene of three frames, small cameras and few firings: a second to write
    "camera": {"width": 160, "height": 90},
    "lidar": {"azimuth_steps": 360},
    "sequence": {"frames_per_scene": 3},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, load_config(overrides=SMALL), 3, {"train": 3})
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory, data):
    """The tiny float model and its int8 copy, calibrated on train frames 0 and 2 (frame 1 left out)."""
    folder = tmp_path_factory.mktemp("tiny")
    model = tiny_model(folder)
    quantized = folder / "tiny.int8.onnx"
    assert main([str(model), "--calibration", str(data), "--frames", "2", "--out", str(quantized)]) == 0
    return model, quantized


def test_quantized_model_is_qdq_and_carries_the_metadata(models, data):
    model, quantized = models
    ops = {node.op_type for node in onnx.load(quantized).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    float_meta, meta = read_metadata(model), read_metadata(quantized)
    entry = meta.pop("quantization")
    assert meta == float_meta
    assert entry["calibration_roots"] == [str(data)]
    assert entry["calibration_split"] == "train"
    assert entry["calibration_frames"] == 2
    assert entry["ops_quantized"]["Conv"] > 0
    assert entry["ops_quantized"]["Gemm"] > 0


def test_quantized_model_has_a_card_the_segmenter_verifies(models):
    """xkd-quantize writes the card beside the model, as xkd-export does: its sha256 is what from_model
    checks, so a damaged int8 file is refused at start-up."""
    model, quantized = models
    card = quantized.with_suffix(".md").read_text()
    assert f"- Made by: `xkd-quantize {model} --calibration" in card
    assert Segmenter.from_model(quantized).model_check.startswith("sha256 matches its model card")
    damaged = quantized.read_bytes()
    quantized.with_name("copy.int8.onnx").write_bytes(damaged[:-1] + bytes([damaged[-1] ^ 1]))
    quantized.with_name("copy.int8.md").write_text(card.replace(quantized.name, "copy.int8.onnx"))
    with pytest.raises(ValueError, match="sha256"):
        Segmenter.from_model(quantized.with_name("copy.int8.onnx"))


@pytest.mark.parametrize("lidar_only", [False, True], ids=["fusion", "lidar_only"])
def test_quantized_model_labels_as_the_float_one(models, data, lidar_only):
    """On a frame that was not calibrated on, through the Segmenter as the node runs it (which refuses a
    model whose metadata and graph disagree); LiDAR-only too (no image: no fused point)."""
    model, quantized = models
    frame = SyntheticDataset(data, "train")[1]
    float_labels, int8_labels = (
        Segmenter.from_model(path).segment_frame(frame, lidar_only=lidar_only).labels
        for path in (model, quantized)
    )
    assert float_labels.shape == int8_labels.shape == (len(frame.points),)
    assert np.mean(float_labels == int8_labels) > 0.9


@pytest.mark.parametrize("seen", ["every point", "no point"])
def test_scans_without_fused_or_lidar_only_points_run(models, data, seen):
    """Empty fused (S = 0) or LiDAR-only (U = 0) point sets: ONNX Runtime 1.32's int8 Add crashed the
    process on such empty tensors before the Adds computed from them were kept float."""
    model, quantized = models
    segmenter = Segmenter.from_model(model)
    inputs = prepare_frame(SyntheticDataset(data, "train")[1], segmenter.preprocess)
    visible = np.full_like(inputs.point_visible, 1.0 if seen == "every point" else 0.0)
    feed = dataclasses.replace(inputs, point_visible=visible).feed(segmenter.backend.input_names)
    assert min(len(feed["fused_index"]), len(feed["lidar_index"])) == 0
    float_labels, int8_labels = (
        onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["label"], feed)[0]
        for path in (model, quantized)
    )
    assert np.mean(float_labels == int8_labels) > 0.9


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("missing model", "missing.onnx"),
        ("missing folder", "nowhere"),
        ("not a synthetic set", "plain"),
        ("no train split", "valonly"),
        ("no frames", "--frames"),
        ("overwrite the model", "--out"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(models, data, tmp_path, capsys, case, named):
    model, _ = models
    calibration, frames, out = data, "2", tmp_path / "out.onnx"
    if case == "missing model":
        model = tmp_path / "missing.onnx"
    elif case == "missing folder":
        calibration = tmp_path / "nowhere"
    elif case == "not a synthetic set":
        calibration = tmp_path / "plain"
        calibration.mkdir()
    elif case == "no train split":
        calibration = tmp_path / "valonly"
        generate(calibration, load_config(overrides=SMALL), 3, {"val": 1})
        capsys.readouterr()  # its progress bar
    elif case == "no frames":
        frames = "0"
    else:
        out = model
    argv = [str(model), "--calibration", str(calibration), "--frames", frames, "--out", str(out)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("xkd-quantize: error: ")
    assert named in error
    assert not (tmp_path / "out.onnx").exists()
    assert "Traceback" not in error
