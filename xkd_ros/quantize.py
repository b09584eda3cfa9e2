"""`xkd-quantize`: an exported model -> its int8 copy for the CPU (ONNX Runtime static quantization, QDQ).

Why: on the CPU the convolutions and fully connected layers are about two thirds of the float model's kernel
time; with int8 weights and activations ONNX Runtime runs them as QLinearConv / QGemm (VNNI dot products on
CPUs that have them), 2-3.6x faster here, for an accuracy change docs/quantization.md measures.

What: weights int8, symmetric, one scale per output channel; activations one scale per tensor, their ranges
calibrated on frames of the synthetic TRAINING split(s) (never val or test, which score the result), each
pre-processed as the model's own metadata says (`Segmenter.from_model(...).preprocess`) and fed as the
graph's inputs name them (`NetworkInputs.feed`). QDQ format: the result is standard ONNX (QuantizeLinear /
DequantizeLinear around float ops) that ONNX Runtime fuses into int8 kernels; only the ops of
`QUANTIZED_OPS` are quantized, the rest (gathers of the fusion sampling, soft-max, arg-max) stay float.
The graph keeps its inputs, outputs and dynamic axes, and carries the model's metadata plus a
"quantization" entry (method, calibration roots and frames, ops quantized), so `Segmenter.from_model` runs
it like any exported model.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from xkd_ros.inference.metadata import METADATA_KEY, read_metadata, sha256
from xkd_ros.pipeline import Segmenter

# The layers with weights, and the ops between them in the range and image branches: quantizing those too
# keeps whole residual blocks and the image pyramid in int8 instead of converting back to float after
# every convolution (0.61-0.73x the float time where Conv/Gemm/MatMul alone take 0.67-0.78x, on the
# nuScenes keyframe in six paired runs; the same mIoU).
# Soft-max, arg-max, Mul/Sub and the gathers of the fusion sampling stay float (quantizing them too
# changed 38 % of the nuScenes keyframe's labels).
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul", "LeakyRelu", "Relu", "Add", "Concat", "MaxPool", "Resize")
# Axes of the graph's inputs that are 0 for some scans: no camera (LiDAR-only), no point a camera sees, every
# point seen by one. ONNX Runtime 1.32's int8 Add (QLinearAdd) crashed the process on such an empty tensor
# (test/test_quantize.py), so an Add computed from these inputs stays float (`may_be_empty`); the other
# QUANTIZED_OPS ran empty tensors.
EMPTY_AXES = ("M", "S", "U")
FLOAT_IF_EMPTY = ("Add",)
# activation type name -> onnxruntime.quantization.QuantType member; weights are always QInt8
ACTIVATIONS = {"uint8": "QUInt8", "int8": "QInt8"}
# calibration method name -> onnxruntime.quantization.CalibrationMethod member
METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
CALIBRATION_SPLIT = "train"


class QuantizeError(ValueError):
    """A bad argument or input, in one sentence naming the file, folder or option."""


def calibration_frames(roots: Sequence[Path], frames: int) -> list[tuple[Path, Any]]:
    """(root, frame) for `frames` frames of the training split of the synthetic data sets `roots`, shared
    between the roots as evenly as they allow and evenly spaced within each (a split lists its scenes in
    order, so spacing spreads the frames over scenes); fewer when the splits hold fewer."""
    from xkd_ros.data.synthetic import SyntheticDataset  # the data extra; not needed to run a model

    if frames < 1:
        raise QuantizeError(f"--frames: {frames} is not >= 1")
    datasets = []
    for root in roots:
        if not root.is_dir():
            raise QuantizeError(f"--calibration {root}: no such folder")
        if not (root / "split.yaml").is_file():
            raise QuantizeError(
                f"--calibration {root}: not a synthetic data set (no split.yaml); calibration frames come "
                f"from the {CALIBRATION_SPLIT!r} split of a data set xkd-synth wrote"
            )
        try:
            dataset = SyntheticDataset(root, split=CALIBRATION_SPLIT)
        except (FileNotFoundError, ValueError) as error:
            raise QuantizeError(f"--calibration {root}: {error}") from None
        if not len(dataset):
            raise QuantizeError(f"--calibration {root}: its {CALIBRATION_SPLIT!r} split has no frames")
        datasets.append(dataset)
    shares = _shares(frames, [len(dataset) for dataset in datasets])
    chosen = []
    for root, dataset, share in zip(roots, datasets, shares, strict=True):
        for index in np.linspace(0, len(dataset) - 1, share).round().astype(int):
            chosen.append((root, dataset[int(index)]))
    return chosen


def _shares(frames: int, available: Sequence[int]) -> list[int]:
    """`frames` split between data sets of `available` frames: round-robin, none over what it holds."""
    shares = [0] * len(available)
    while sum(shares) < frames and any(s < a for s, a in zip(shares, available, strict=True)):
        for i, limit in enumerate(available):
            if shares[i] < limit and sum(shares) < frames:
                shares[i] += 1
    return shares


def calibration_inputs(model: Path, roots: Sequence[Path], frames: int) -> list[dict[str, np.ndarray]]:
    """The network inputs of the calibration frames, pre-processed as `model`'s metadata says and named as
    its graph's inputs."""
    from xkd_ros.preprocess import prepare_frame

    segmenter = _segmenter(model)
    names = list(segmenter.backend.input_names)
    inputs = []
    for root, frame in calibration_frames(roots, frames):
        try:
            inputs.append(prepare_frame(frame, segmenter.preprocess).feed(names))
        except ValueError as error:
            raise QuantizeError(f"--calibration {root}: frame {frame.name}: {error}") from None
    return inputs


def _segmenter(model: Path) -> Segmenter:
    """The model as the node would load it; errors name the file."""
    from xkd_ros.inference import BackendError

    if not model.is_file():
        raise QuantizeError(f"{model}: no such model file")
    try:
        return Segmenter.from_model(model)
    except (BackendError, ValueError, FileNotFoundError) as error:
        raise QuantizeError(str(error).splitlines()[0]) from None


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over prepared inputs, read one frame per range
    (`set_range`): frames differ in shape (points, cameras, range rows), which the histogram calibrators
    cannot stack, and one frame at a time keeps their memory to one frame's activations."""

    def __init__(self, inputs: Sequence[dict[str, np.ndarray]]) -> None:
        self._inputs = list(inputs)
        self._next = iter(self._inputs)

    def __len__(self) -> int:
        return len(self._inputs)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = iter(self._inputs[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._next, None)


def quantize(
    model: Path,
    out: Path,
    inputs: Sequence[dict[str, np.ndarray]],
    provenance: dict[str, Any],
    activation: str = "uint8",
    method: str = "minmax",
    exclude: Sequence[str] = (),
) -> dict[str, Any]:
    """Write the int8 QDQ copy of `model` calibrated on `inputs` to `out`, once `Segmenter.from_model` loads
    it; returns the "quantization" entry added to its metadata (`provenance`: the calibration roots and
    frame count, for that entry).

    The model is shape-inferred first (quant_pre_process: the dynamic axes stay symbolic), then quantized;
    `exclude` names nodes to keep in float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        description = read_metadata(model)
    except ValueError as error:
        raise QuantizeError(str(error)) from None
    with tempfile.TemporaryDirectory(prefix="xkd-quantize.") as folder:
        inferred, quantized = Path(folder) / "inferred.onnx", Path(folder) / "quantized.onnx"
        quant_pre_process(str(model), str(inferred))
        nodes = onnx.load(inferred).graph
        missing = sorted(set(exclude) - {node.name for node in nodes.node})
        if missing:
            raise QuantizeError(f"--exclude: no node {missing} in {model}")
        empty_safe = [node.name for node in may_be_empty(nodes) if node.op_type in FLOAT_IF_EMPTY]
        with _quiet():
            quantize_static(
                str(inferred),
                str(quantized),
                _Reader(inputs),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=getattr(QuantType, ACTIVATIONS[activation]),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(QUANTIZED_OPS),
                nodes_to_exclude=[*exclude, *empty_safe],
                calibrate_method=getattr(CalibrationMethod, METHODS[method]),
                extra_options={"CalibStridedMinMax": 1},  # one frame per range (_Reader), whatever the method
            )
        graph = onnx.load(quantized)
    entry = {
        "format": "QDQ",
        "weights": "int8, symmetric, per output channel",
        "activations": f"{activation}, asymmetric, per tensor",
        "calibration": method,
        **provenance,
        "ops_quantized": quantized_ops(graph),
        "kept_float": [*exclude, *empty_safe],
    }
    del graph.metadata_props[:]
    graph.metadata_props.add(key=METADATA_KEY, value=json.dumps({**description, "quantization": entry}))
    partial = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, partial)
    try:
        _segmenter(partial)  # loads as the node would (metadata and graph agree), or is not written
    except QuantizeError:
        partial.unlink()
        raise
    os.replace(partial, out)  # a reader never sees half a model
    return entry


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """quantize_static's chatter off: the root logger's advice to pre-process (done) and notes per node,
    the histogram calibrators' progress on stdout."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def may_be_empty(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes computed (directly or not) from a graph input with an axis of EMPTY_AXES."""
    tainted = {
        graph_input.name
        for graph_input in graph.input
        if any(dim.dim_param in EMPTY_AXES for dim in graph_input.type.tensor_type.shape.dim)
    }
    reached = []
    for node in graph.node:  # ONNX lists nodes in topological order
        if tainted.intersection(node.input):
            tainted.update(node.output)
            reached.append(node)
    return reached


def quantized_ops(graph: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each of QUANTIZED_OPS take a dequantized input (int8 kernels once ONNX Runtime
    fuses the QDQ pairs)."""
    dequantized = {node.output[0] for node in graph.graph.node if node.op_type == "DequantizeLinear"}
    counts = collections.Counter(
        node.op_type
        for node in graph.graph.node
        if node.op_type in QUANTIZED_OPS and node.input[0] in dequantized
    )
    return dict(sorted(counts.items()))


def check_out(model: Path, out: Path) -> None:
    """Refuse, before any work, an `out` that is a folder, not .onnx, or the model itself."""
    if out.is_dir():
        raise QuantizeError(f"--out {out}: is a folder; give the .onnx file to write")
    if out.suffix != ".onnx":
        raise QuantizeError(f"--out {out}: not an .onnx file name")
    if out.resolve() == model.resolve():
        raise QuantizeError(f"--out {out}: would overwrite the model it quantizes")


def agreement(model: Path, quantized: Path, inputs: Sequence[dict[str, np.ndarray]]) -> float:
    """Share of points whose label the quantized model gives as the float one does, over `inputs`."""
    import onnxruntime

    same = total = 0
    sessions = [
        onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for path in (model, quantized)
    ]
    for feed in inputs:
        labels = [session.run(["label"], feed)[0] for session in sessions]
        same += int((labels[0] == labels[1]).sum())
        total += labels[0].size
    return same / max(total, 1)


def model_card(model: Path, out: Path, entry: dict[str, Any], same: float, command: str) -> str:
    """Markdown card of a quantized model, as xkd-export writes one for the float model: the file's
    sha256 (which Segmenter.from_model checks), the command, the float model it came from and how it was
    quantized; the data, classes and rigs are the float model's card's."""
    ops = ", ".join(f"{count} {op}" for op, count in entry["ops_quantized"].items())
    roots = ", ".join(f"`{root}`" for root in entry["calibration_roots"])
    lines = [
        f"# {out.stem}",
        "",
        f"- File: `{out.name}`, {out.stat().st_size / 1e6:.2f} MB, sha256 `{sha256(out)}`",
        f"- Made by: `{command}`",
        f"- From: `{model.name}` (sha256 `{sha256(model)}`); data, classes, pre-processing and the rigs it "
        f"takes are that model's (its card: `{model.with_suffix('.md').name}`)",
        f"- Quantization: {entry['format']}, weights {entry['weights']}, activations {entry['activations']}, "
        f"{entry['calibration']} calibration on {entry['calibration_frames']} frames of the "
        f"{entry['calibration_split']} split of {roots}",
        f"- In int8: {ops}; kept in float: {len(entry['kept_float'])} nodes (Adds on tensors that can be "
        "empty, where ONNX Runtime 1.32's int8 Add crashes)",
        f"- Labels as the float model's on {100 * same:.1f} % of the calibration frames' points",
        "- For ONNX Runtime on the CPU (docs/quantization.md); TensorRT would build it as explicit int8, not "
        "verified (no GPU here)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """xkd-quantize: an exported model -> its int8 copy (QDQ, per-channel weights) for ONNX Runtime on the
    CPU, calibrated on frames of synthetic training splits."""
    parser = argparse.ArgumentParser(prog="xkd-quantize", description=main.__doc__)
    parser.add_argument("model", type=Path, help="an .onnx model written by xkd-export")
    parser.add_argument(
        "--calibration",
        type=Path,
        action="append",
        required=True,
        metavar="DATASET",
        help="a synthetic data set (xkd-synth) whose training split gives calibration frames; repeat for "
        "several rigs",
    )
    parser.add_argument("--frames", type=int, default=32, help="calibration frames in all (default 32)")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument(
        "--activations",
        choices=tuple(ACTIVATIONS),
        default="uint8",
        help="activation type (default uint8: on x86 ONNX Runtime fuses more of its int8 kernels for it)",
    )
    parser.add_argument(
        "--method",
        choices=tuple(METHODS),
        default="minmax",
        help="calibration of the activation ranges (default minmax; docs/quantization.md compares them)",
    )
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="NODE", help="a node to keep in float (repeat)"
    )
    args = parser.parse_args(argv)
    try:
        check_out(args.model, args.out)
        inputs = calibration_inputs(args.model, args.calibration, args.frames)
        provenance = {
            "calibration_roots": [str(root) for root in args.calibration],
            "calibration_split": CALIBRATION_SPLIT,
            "calibration_frames": len(inputs),
        }
        entry = quantize(
            args.model, args.out, inputs, provenance, args.activations, args.method, args.exclude
        )
    except QuantizeError as error:
        print(f"xkd-quantize: error: {error}", file=sys.stderr)
        return 2
    ops = ", ".join(f"{count} {op}" for op, count in entry["ops_quantized"].items())
    same = agreement(args.model, args.out, inputs)
    command = " ".join(["xkd-quantize", *(argv if argv is not None else sys.argv[1:])])
    args.out.with_suffix(".md").write_text(model_card(args.model, args.out, entry, same, command))
    print(
        f"{args.out}: {args.out.stat().st_size / 1e6:.1f} MB, {ops} in int8, calibrated on {len(inputs)} "
        f"frames; labels as the float model's on {100 * same:.1f} % of their points"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
