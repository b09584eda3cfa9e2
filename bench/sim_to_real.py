"""Sim-to-real: one model on the real labelled scans at hand, through its class map, as one table.

Run: `.venv/bin/python bench/sim_to_real.py --model models/xkd_synthetic.onnx [--out out/sim_to_real]`
(an exported .onnx, or a training checkpoint best.pt, run with the torch backend). Writes sim_to_real.json
and sim_to_real.md in --out and prints the markdown:

- SemanticKITTI scan `semantickitti_spvnas_000000` (HDL-64E, no camera: LiDAR-only head): mapped mIoU and
  per-class IoU on the whole scan and on its held-out half (`--holdout`, default left: a model fine-tuned on
  the other half, `data.train: {sector: right}`, is scored where it saw no label; every class of the left
  half also occurs in the right half);
- RELLIS-3D frame 000104 (OS1-64 and one camera, off-road): mapped, with and without the camera;
- nuScenes keyframe (HDL-32E, six cameras) without point labels: its 3-D boxes as weak labels, the share of
  the points in each box category labelled as that class, and the share of ego returns (within 1 m) left
  unlabelled.

Each is one frame: an anecdote of how far the model is from real data, not a benchmark. The data are read
from ../shared/data where the checkout has it, else from test/data (the same files).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from xkd_ros.classes import load_class_set
from xkd_ros.data import load_keyframe, load_rellis3d_frame
from xkd_ros.data.nuscenes import load_keyframe_boxes, points_in_boxes
from xkd_ros.data.semantickitti import SECTORS, SemanticKittiDataset
from xkd_ros.evaluate.scoring import MODES, ClassMapping, ego_returns, evaluate, score_boxes
from xkd_ros.pipeline import Segmenter

REPO = Path(__file__).resolve().parent.parent
SCANS = {
    "semantickitti": "semantickitti_spvnas_000000",
    "rellis3d": "rellis3d_000104",
    "nuscenes": "nuscenes_demo",
}


def default_data() -> Path:
    """../shared/data when it holds the three scans, else the copies under test/data."""
    shared = REPO.parent / "shared" / "data"
    return shared if all((shared / folder).is_dir() for folder in SCANS.values()) else REPO / "test" / "data"


def _summary(result, with_latency: bool = False) -> dict:
    summary = result.summary(result.mapping.target)
    if not with_latency:
        summary.pop("latency_ms")
    return summary


def mapping_to(segmenter: Segmenter, target: str) -> ClassMapping | str:
    """The model's map to `target`, or why there is none (said in the table, not an error)."""
    try:
        return ClassMapping.between(segmenter.classes, load_class_set(target))
    except ValueError as error:
        return f"no class map: {error}"


def semantickitti(segmenter: Segmenter, folder: Path, holdout: str) -> dict:
    mapping = mapping_to(segmenter, "semantickitti")
    if isinstance(mapping, str):
        return {"skipped": mapping}
    result = {}
    for part, sector in (("whole", None), (holdout, holdout)):
        frames = SemanticKittiDataset(folder, sector=sector)
        scored = evaluate(frames, segmenter, modes=("lidar_only",), mapping=mapping)
        result[part] = _summary(scored["lidar_only"])
        result[part]["points"] = sum(len(frame.points) for frame in frames)
    return result


def rellis3d(segmenter: Segmenter, folder: Path) -> dict:
    mapping = mapping_to(segmenter, "rellis3d")
    if isinstance(mapping, str):
        return {"skipped": mapping}
    frame = load_rellis3d_frame(folder)
    scored = evaluate([frame], segmenter, mapping=mapping)
    return {mode: _summary(result) for mode, result in scored.items()}


def nuscenes(segmenter: Segmenter, folder: Path) -> dict:
    mapping = mapping_to(segmenter, "nuscenes")
    if isinstance(mapping, str):
        return {"skipped": mapping}
    frame = load_keyframe(folder)
    boxes = load_keyframe_boxes(folder)
    categories = sorted({box.category for box in boxes})
    box_of_point = points_in_boxes(frame.xyz, boxes)
    category_of_box = np.array([categories.index(box.category) for box in boxes] + [-1])
    category_of_point = category_of_box[box_of_point]  # index -1 (no box) picks the trailing -1
    boxes_per_category = {name: sum(box.category == name for box in boxes) for name in categories}
    result = {}
    for mode, lidar_only in MODES.items():
        labels = segmenter.segment_frame(frame, lidar_only=lidar_only).labels
        scores = score_boxes(labels, category_of_point, categories, mapping)
        for name in categories:
            scores[name]["boxes"] = boxes_per_category[name]
        result[mode] = {"boxes": scores, "ego_returns": ego_returns(frame.xyz, labels)}
    return result


def run(model: Path, data: Path, holdout: str = "left", backend: str = "", threads: int = 0) -> dict:
    """Every table of the module docstring for `model`, as one dict (what sim_to_real.json holds)."""
    backend = backend or ("torch" if model.suffix == ".pt" else "onnxruntime")
    segmenter = Segmenter.from_model(model, backend=backend, threads=threads)
    report = {"model": str(model), "backend": backend, "classes": segmenter.classes.name, "data": str(data)}
    started = time.perf_counter()
    report["semantickitti"] = semantickitti(segmenter, data / SCANS["semantickitti"], holdout)
    report["rellis3d"] = rellis3d(segmenter, data / SCANS["rellis3d"])
    report["nuscenes"] = nuscenes(segmenter, data / SCANS["nuscenes"])
    report["seconds"] = time.perf_counter() - started
    return report


def _pct(value: float | None) -> str:
    return "-" if value is None or np.isnan(value) else f"{100 * value:.1f}"


def _iou_table(title: str, columns: dict[str, dict], note: str) -> list[str]:
    names = list(next(iter(columns.values()))["iou"])
    lines = [f"### {title}", "", note, "", "| class | " + " | ".join(columns) + " |"]
    lines.append("|---|" + "---:|" * len(columns))
    for key, label in (("miou", "mIoU (%)"), ("miou_labelled", "mIoU over labelled classes (%)")):
        lines.append(f"| **{label}** | " + " | ".join(f"**{_pct(c[key])}**" for c in columns.values()) + " |")
    for name in names:
        lines.append(f"| {name} | " + " | ".join(_pct(c["iou"][name]) for c in columns.values()) + " |")
    first = next(iter(columns.values()))
    lines.append(
        "| points scored / not scored | "
        + " | ".join(f"{c['points_scored']} / {c['points_not_scored']}" for c in columns.values())
        + " |"
    )
    lines += [
        "",
        f"Not predicted by this model (not scored): {', '.join(first['not_predicted']) or 'none'}.",
        "",
    ]
    return lines


def markdown(report: dict) -> str:
    """The report as markdown tables (IoU in %)."""
    lines = [
        f"## Real scans: `{report['model']}` ({report['classes']} classes, {report['backend']})",
        "",
        "One frame per data set: an anecdote, not a benchmark. mIoU is over the target classes the model's "
        "class map reaches that occur in the labels or the predictions; 'over labelled classes' leaves out "
        "classes only predicted. Labelled points of classes the model cannot predict are not scored; a "
        "prediction of a class without counterpart, or an invalid point, counts as wrong.",
        "",
    ]
    kitti = report["semantickitti"]
    if "skipped" in kitti:
        lines += ["### SemanticKITTI scan", "", kitti["skipped"], ""]
    else:
        parts = {f"{part} ({kitti[part]['points']} points)": kitti[part] for part in kitti}
        lines += _iou_table(
            "SemanticKITTI scan semantickitti_spvnas_000000 (HDL-64E, no camera: LiDAR-only head)",
            parts,
            f"The held-out half ({list(kitti)[1]}) is where a model fine-tuned on the other half is scored.",
        )
    rellis = report["rellis3d"]
    if "skipped" in rellis:
        lines += ["### RELLIS-3D frame", "", rellis["skipped"], ""]
    else:
        lines += _iou_table(
            "RELLIS-3D frame 000104 (OS1-64, off-road)",
            {"with camera": rellis["fusion"], "LiDAR only": rellis["lidar_only"]},
            "With camera: the fused head labels the points the camera sees, the LiDAR-only head the rest.",
        )
    scenes = report["nuscenes"]
    lines += ["### nuScenes keyframe (HDL-32E, 6 cameras): 3-D boxes as weak labels", ""]
    if "skipped" in scenes:
        return "\n".join([*lines, scenes["skipped"], ""])
    lines += [
        "Share of the LiDAR points inside each category's boxes that the model labels as that class.",
        "",
        "| category | boxes | points | with cameras (%) | LiDAR only (%) | with cameras, labelled as |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, entry in scenes["fusion"]["boxes"].items():
        cells = []
        for mode in MODES:
            recall = scenes[mode]["boxes"][name]["recall"]
            cells.append(recall if isinstance(recall, str) else _pct(recall))
        ranked = sorted(entry.get("predicted_as", {}).items(), key=lambda item: -item[1])
        cells.append(", ".join(f"{label} {count}" for label, count in ranked[:3]) or "-")
        lines.append(f"| {name} | {entry['boxes']} | {entry['points']} | " + " | ".join(cells) + " |")
    ego = {mode: scenes[mode]["ego_returns"] for mode in MODES}
    near = ego["fusion"]
    lines += [
        "",
        f"Ego returns (points within {near['radius_m']:g} m of the sensor: {near['points']}) "
        f"left unlabelled: {_pct(ego['fusion']['unlabelled_share'])} % with cameras, "
        f"{_pct(ego['lidar_only']['unlabelled_share'])} % LiDAR only.",
        "",
        f"Made by `bench/sim_to_real.py --model {report['model']}` in {report['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an exported .onnx or a checkpoint .pt")
    parser.add_argument("--data", type=Path, default=None, help="folder with the three real scans")
    parser.add_argument("--holdout", default="left", choices=sorted(SECTORS), help="SemanticKITTI half")
    parser.add_argument("--backend", default="", choices=("", "onnxruntime", "torch"))
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/sim_to_real"))
    args = parser.parse_args(argv)
    data = args.data or default_data()
    missing = [folder for folder in SCANS.values() if not (data / folder).is_dir()]
    if missing:
        parser.error(f"--data: {data} lacks {missing}")
    if not args.model.is_file():
        parser.error(f"--model: {args.model}: no such file")
    try:
        report = run(args.model, data, args.holdout, args.backend, args.threads)
    except (ValueError, FileNotFoundError) as error:
        print(f"sim_to_real: error: {error}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sim_to_real.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "sim_to_real.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
