"""`xkd-evaluate` (offline): a model over labelled frames, fusion and LiDAR-only side by side.

The same `Segmenter` call as the node, on frames from any data set `open_frames` reads, no DDS, so the result
is deterministic. Per mode: confusion matrix, per-class IoU, mIoU and latency percentiles; written as JSON,
markdown and PNG pictures (confusion matrices, per-class IoU bars, a labelled bird's-eye view).
`--live` scores a running segment_node on a replayed bag instead: the DDS side is xkd_ros.live, the scoring
(`score_live`) is here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from xkd_ros.data import Frame, load_class_set, open_frames
from xkd_ros.data.classes import ClassSet
from xkd_ros.data.render import label_text, render_bev
from xkd_ros.metrics import confusion_matrix, iou_per_class, latency_percentiles, mean_iou
from xkd_ros.pipeline import Segmenter

MODES = {"fusion": False, "lidar_only": True}  # mode -> lidar_only flag of Segmenter.segment_frame


@dataclass
class ModeResult:
    """What one mode measured over the frames."""

    confusion: np.ndarray
    latency_ms: dict[str, list[float]] = field(default_factory=dict)

    def summary(self, classes: ClassSet) -> dict:
        iou = iou_per_class(self.confusion)
        return {
            "miou": mean_iou(self.confusion),
            "iou": {
                name: None if np.isnan(v) else float(v) for name, v in zip(classes.names, iou, strict=True)
            },
            "latency_ms": {stage: latency_percentiles(np.array(v)) for stage, v in self.latency_ms.items()},
        }


def evaluate(frames: Sequence[Frame], segmenter: Segmenter, modes: Sequence[str] = tuple(MODES)) -> dict:
    """Confusion matrices and latencies per mode; frames must carry labels of the model's class set."""
    k = segmenter.classes.num_classes
    results = {mode: ModeResult(np.zeros((k, k), dtype=np.int64)) for mode in modes}
    for frame in frames:
        if frame.labels is None or frame.classes != segmenter.classes.name:
            raise ValueError(
                f"{frame.name}: needs labels of class set {segmenter.classes.name!r}, has {frame.classes!r}"
            )
        for mode in modes:
            segmentation = segmenter.segment_frame(frame, lidar_only=MODES[mode])
            predicted = np.where(segmentation.labels == 255, 0, segmentation.labels)  # invalid: counted wrong
            results[mode].confusion += confusion_matrix(frame.labels, predicted, k)
            for stage, ms in segmentation.timings.items():
                results[mode].latency_ms.setdefault(stage, []).append(ms)
    return results


def confusion_picture(confusion: np.ndarray, classes: ClassSet, cell: int = 28) -> np.ndarray:
    """Row-normalised confusion matrix (ground truth rows, predictions columns) as a BGR image."""
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    k, margin = len(rows), 130
    heat = cv2.applyColorMap((rows * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    heat = cv2.resize(heat, (k * cell, k * cell), interpolation=cv2.INTER_NEAREST)
    picture = np.full((k * cell + margin, k * cell + margin, 3), 255, dtype=np.uint8)
    picture[margin:, margin:] = heat
    for i, name in enumerate(classes.names):
        y = margin + i * cell + cell // 2 + 4
        cv2.putText(picture, name[:14], (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        column = np.full((cell, margin - 4, 3), 255, dtype=np.uint8)
        cv2.putText(
            column, name[:14], (2, cell // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA
        )
        picture[4:margin, margin + i * cell : margin + (i + 1) * cell] = cv2.rotate(
            column, cv2.ROTATE_90_COUNTERCLOCKWISE
        )
    return picture


def iou_bars(summaries: dict[str, dict], classes: ClassSet, width: int = 700) -> np.ndarray:
    """Per-class IoU bars, one colour per mode, as a BGR image."""
    palette = [(200, 120, 40), (60, 160, 230), (90, 180, 90)]
    bar, gap, left = 10, 8, 130
    height = len(classes.names) * (bar * len(summaries) + gap) + 30
    picture = np.full((height, width, 3), 255, dtype=np.uint8)
    for i, name in enumerate(classes.names):
        top = 20 + i * (bar * len(summaries) + gap)
        cv2.putText(
            picture, name[:16], (4, top + bar), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA
        )
        for j, summary in enumerate(summaries.values()):
            value = summary["iou"][name] or 0.0
            y = top + j * bar
            end = left + int(value * (width - left - 60))
            cv2.rectangle(picture, (left, y), (end, y + bar - 2), palette[j], -1)
            text = f"{100 * value:.0f}"
            cv2.putText(
                picture,
                text,
                (end + 4, y + bar - 2),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.35,
                (0, 0, 0),
                1,
                cv2.LINE_AA,
            )
    for j, mode in enumerate(summaries):
        cv2.putText(
            picture, mode, (left + 120 * j, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, palette[j], 1, cv2.LINE_AA
        )
    return picture


def bev_comparison(frame: Frame, segmenter: Segmenter, size: int = 500) -> np.ndarray:
    """Bird's-eye views of one frame: ground truth, fusion, LiDAR-only."""
    classes = segmenter.classes
    panels = [("ground truth", frame.labels)]
    for mode, lidar_only in MODES.items():
        panels.append((mode, segmenter.segment_frame(frame, lidar_only=lidar_only).labels))
    tiles = []
    for title, labels in panels:
        tile = render_bev(frame.xyz, classes.colorize(labels), size=size)
        label_text(tile, title, origin=(8, size - 12))
        tiles.append(tile)
    return np.hstack(tiles)


def write_report(results: dict, segmenter: Segmenter, frames: Sequence[Frame], out: Path, model: str) -> dict:
    """report.json, report.md and the PNG pictures in `out`; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    classes = segmenter.classes
    summaries = {mode: result.summary(classes) for mode, result in results.items()}
    report = {"model": model, "frames": len(frames), "classes": classes.name, "modes": summaries}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    for mode, result in results.items():
        cv2.imwrite(str(out / f"confusion_{mode}.png"), confusion_picture(result.confusion, classes))
    cv2.imwrite(str(out / "iou_per_class.png"), iou_bars(summaries, classes))
    cv2.imwrite(str(out / "bev.png"), bev_comparison(frames[0], segmenter))
    modes = list(summaries)
    lines = [
        f"# Evaluation of `{model}` on {len(frames)} frames ({classes.name})",
        "",
        "| | " + " | ".join(modes) + " |",
        "|---|" + "---:|" * len(modes),
        "| **mIoU (%)** | " + " | ".join(f"**{100 * summaries[m]['miou']:.1f}**" for m in modes) + " |",
    ]
    for name in classes.names:
        cells = [summaries[m]["iou"][name] for m in modes]
        lines.append(
            f"| {name} | " + " | ".join("-" if c is None else f"{100 * c:.1f}" for c in cells) + " |"
        )
    for stage in summaries[modes[0]]["latency_ms"]:
        cells = [summaries[m]["latency_ms"][stage] for m in modes]
        lines.append(
            f"| {stage} p50 / p90 | " + " | ".join(f"{c['p50']:.1f} / {c['p90']:.1f}" for c in cells) + " |"
        )
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return report


def score_live(outputs: dict, truth: dict, totals: list, classes: ClassSet) -> dict:
    """mIoU and per-class IoU of the node's labels against the ground truth of the same scans, and the
    node's processing time per scan (its ~/debug/total_ms)."""
    k = classes.num_classes
    confusion = np.zeros((k, k), dtype=np.int64)
    matched = sorted(set(outputs) & set(truth))
    for stamp in matched:
        confusion += confusion_matrix(truth[stamp], np.where(outputs[stamp] == 255, 0, outputs[stamp]), k)
    iou = iou_per_class(confusion)
    return {
        "scans_labelled": len(matched),
        "scans_with_ground_truth": len(truth),
        "miou": mean_iou(confusion) if matched else float("nan"),
        "iou": {name: None if np.isnan(v) else float(v) for name, v in zip(classes.names, iou, strict=True)},
        "node_total_ms": latency_percentiles(np.array(totals)) if totals else {},
    }


def main(argv: list[str] | None = None) -> int:
    """xkd-evaluate (offline): per-class IoU, mIoU and latency of a model on labelled frames."""
    parser = argparse.ArgumentParser(prog="xkd-evaluate", description=main.__doc__)
    parser.add_argument("data", type=Path, help="anything open_frames reads (a synthetic split, a bag, ...)")
    parser.add_argument(
        "--model", type=Path, default=None, help="an .onnx model (default: models/xkd_synthetic.onnx)"
    )
    parser.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch"))
    parser.add_argument("--split", default=None, help="split of a synthetic data set (e.g. val)")
    parser.add_argument("--max-frames", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/eval"))
    parser.add_argument(
        "--live",
        action="store_true",
        help="live mode: replay `data` (a bag with a label topic) while a running segment_node labels it",
    )
    parser.add_argument("--node", default="segment", help="live mode: the node's name (its output topics)")
    parser.add_argument("--rate", type=float, default=1.0, help="live mode: replay speed factor (default 1)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="live mode: seconds to wait at most once the replay starts (default: scaled with the recording)",
    )
    args = parser.parse_args(argv)
    if not args.rate > 0:
        parser.error(f"--rate: {args.rate:g} is not > 0")
    from xkd_ros.paths import share_dir

    if args.live:
        return _live(args)
    model = args.model or share_dir() / "models/xkd_synthetic.onnx"
    frames = open_frames(args.data, **({"split": args.split} if args.split else {}))
    if args.max_frames:
        frames = frames[: args.max_frames]
    segmenter = Segmenter.from_model(model, backend=args.backend, threads=args.threads)
    report = write_report(evaluate(frames, segmenter), segmenter, frames, args.out, str(model))
    summary = ", ".join(f"{mode} {100 * r['miou']:.1f}" for mode, r in report["modes"].items())
    print(f"{len(frames)} frames: mIoU {summary}; report in {args.out}")
    return 0


def _live(args: argparse.Namespace) -> int:
    """xkd-evaluate --live: replay the bag to the running node and score what it published. The node runs
    already, so this joins its graph as the environment says (ROS_DOMAIN_ID, discovery range), adding only
    the large-data Fast DDS profile where none is set. Exit status 1 when a scan was not labelled."""
    from xkd_ros.data.rosbag import RosbagError
    from xkd_ros.live import LiveError, Recording, describe_lost, run_live
    from xkd_ros.paths import config_path

    env = dict(os.environ)
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(config_path("fastdds.xml")))
    try:
        recording = Recording.from_bag(args.data)
        if recording.label_topic is None:
            raise LiveError(f"{args.data}: no label topic in the bag, nothing to score the labels against")
        result = run_live(recording, env, args.node, rate=args.rate, timeout=args.timeout)
    except (LiveError, RosbagError) as error:
        print(f"xkd-evaluate: error: {error}", file=sys.stderr)
        return 1
    report = result.report(load_class_set(recording.classes))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "live_report.json").write_text(json.dumps(report, indent=2) + "\n")
    recorded = report["scans_recorded"]
    print(f"{report['scans_labelled']} of {recorded} scans labelled: mIoU {100 * report['miou']:.1f} %")
    lost = result.lost()
    if lost:
        print(f"xkd-evaluate: error: {describe_lost(lost, recorded)}", file=sys.stderr)
        return 1
    return 0
