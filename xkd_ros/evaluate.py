"""`xkd-evaluate` (offline): a model over labelled frames, fusion and LiDAR-only side by side.

The same `Segmenter` call as the node, on frames from any data set `open_frames` reads, no DDS, so the result
is deterministic. Per mode: confusion matrix, per-class IoU, mIoU and latency percentiles; written as JSON,
markdown and PNG pictures (confusion matrices, per-class IoU bars, a labelled bird's-eye view).
`--map-to <class set>` scores a model on frames labelled in another class set through the model's class map
(`ClassSet.map_to`, config/classes/<model's>.yaml `maps`): per-class IoU over the target classes the map
reaches; the others are reported as not predicted by the model and their points are not scored (as
synthetic-to-real studies score the shared classes), and a prediction of a class with no counterpart counts
as wrong. `score_boxes` and `ego_returns` are the weak checks for a frame with 3-D boxes but no point labels.
`--live` scores a running segment_node on a replayed bag instead: the DDS side is xkd_ros.live, the scoring
(`score_live`) is here; `--record OUT` records that session (the replayed inputs and all the node published)
into one mcap bag OUT.
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

from xkd_ros.classes import IGNORE_INDEX, ClassSet, load_class_set
from xkd_ros.data import Frame, open_frames
from xkd_ros.data.render import label_text, render_bev
from xkd_ros.metrics import confusion_matrix, iou_per_class, latency_percentiles, mean_iou
from xkd_ros.pipeline import Segmenter

MODES = {"fusion": False, "lidar_only": True}  # mode -> lidar_only flag of Segmenter.segment_frame
NO_COUNTERPART = "(no counterpart)"  # the extra prediction column of a mapped confusion matrix


@dataclass(frozen=True, eq=False)
class ClassMapping:
    """A model's class set scored in another: `lut` (model id -> target id or IGNORE_INDEX) from the model's
    class file; `reached` (target K,) the target classes some model class maps to."""

    source: ClassSet
    target: ClassSet
    lut: np.ndarray

    @classmethod
    def between(cls, source: ClassSet, target: ClassSet) -> ClassMapping:
        return cls(source, target, source.map_to(target))

    @property
    def reached(self) -> np.ndarray:
        return np.isin(np.arange(self.target.num_classes), self.lut)

    @property
    def not_predicted(self) -> list[str]:
        return [name for name, hit in zip(self.target.names, self.reached, strict=True) if not hit]

    def predictions(self, labels: np.ndarray) -> np.ndarray:
        """Target ids of model labels; a class without counterpart and an invalid point (IGNORE_INDEX)
        become the extra id target K, counted wrong for every ground truth class."""
        table = np.full(256, self.target.num_classes, dtype=np.int64)
        mapped = self.lut != IGNORE_INDEX
        table[: self.source.num_classes][mapped] = self.lut[mapped]
        return table[np.asarray(labels, dtype=np.uint8)]

    def truth(self, labels: np.ndarray) -> np.ndarray:
        """Target labels with the classes the model cannot predict set to IGNORE_INDEX (not scored)."""
        labels = np.asarray(labels, dtype=np.uint8)
        scored = np.append(self.reached, np.zeros(256 - self.target.num_classes, dtype=bool))
        return np.where(scored[labels], labels, np.uint8(IGNORE_INDEX))


@dataclass
class ModeResult:
    """What one mode measured over the frames; with a mapping, the confusion has the extra column (and row)
    NO_COUNTERPART and `unscored` counts the labelled points of classes the model cannot predict."""

    confusion: np.ndarray
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    mapping: ClassMapping | None = None
    unscored: int = 0

    def summary(self, classes: ClassSet) -> dict:
        if self.mapping is None:
            iou = iou_per_class(self.confusion)
            scored = [(name, v) for name, v in zip(classes.names, iou, strict=True)]
            miou, extra = mean_iou(self.confusion), {}
        else:
            classes = self.mapping.target
            iou = iou_per_class(self.confusion)[: classes.num_classes]
            reached = self.mapping.reached
            scored = [(name, v) for name, v, hit in zip(classes.names, iou, reached, strict=True) if hit]
            values = iou[reached & np.isfinite(iou)]
            miou = float(values.mean()) if values.size else float("nan")
            labelled = iou[reached & (self.confusion.sum(axis=1)[: classes.num_classes] > 0)]
            extra = {
                # over the scored classes with labelled points only: a class the model predicts but the
                # frames lack scores 0 in `miou`, which on one scan weighs as much as a missed class
                "miou_labelled": float(labelled.mean()) if labelled.size else float("nan"),
                "mapped_from": self.mapping.source.name,
                "not_predicted": self.mapping.not_predicted,
                "points_scored": int(self.confusion.sum()),
                "points_not_scored": self.unscored,
            }
        return {
            "miou": miou,
            "iou": {name: None if np.isnan(v) else float(v) for name, v in scored},
            **extra,
            "latency_ms": {stage: latency_percentiles(np.array(v)) for stage, v in self.latency_ms.items()},
        }


def evaluate(
    frames: Sequence[Frame],
    segmenter: Segmenter,
    modes: Sequence[str] = tuple(MODES),
    mapping: ClassMapping | None = None,
) -> dict:
    """Confusion matrices and latencies per mode; frames must carry labels of the model's class set, or of
    `mapping.target` when a mapping is given."""
    expected = mapping.target if mapping is not None else segmenter.classes
    k = expected.num_classes + (mapping is not None)
    results = {mode: ModeResult(np.zeros((k, k), dtype=np.int64), mapping=mapping) for mode in modes}
    for frame in frames:
        if frame.labels is None or frame.classes != expected.name:
            raise ValueError(
                f"{frame.name}: needs labels of class set {expected.name!r}, has {frame.classes!r}"
            )
        truth = frame.labels if mapping is None else mapping.truth(frame.labels)
        for mode in modes:
            segmentation = segmenter.segment_frame(frame, lidar_only=MODES[mode])
            if mapping is None:
                predicted = np.where(segmentation.labels == 255, 0, segmentation.labels)  # invalid: wrong
            else:
                predicted = mapping.predictions(segmentation.labels)
                results[mode].unscored += int(
                    ((truth == IGNORE_INDEX) & (frame.labels != IGNORE_INDEX)).sum()
                )
            results[mode].confusion += confusion_matrix(truth, predicted, k)
            for stage, ms in segmentation.timings.items():
                results[mode].latency_ms.setdefault(stage, []).append(ms)
    return results


def score_boxes(
    predicted: np.ndarray, box_index: np.ndarray, categories: Sequence[str], mapping: ClassMapping
) -> dict[str, dict]:
    """Weak labels from 3-D boxes: per box category (a class name of `mapping.target`), the boxes, the points
    inside them and the share of those the model labels as that class (after the map), or "not predicted"
    where the map reaches no such class. `predicted` (N,) model labels, `box_index` (N,) the category index
    of each point's box or -1."""
    mapped = mapping.predictions(predicted)
    scores = {}
    for index, category in enumerate(categories):
        inside = box_index == index
        entry: dict = {"points": int(inside.sum())}
        if category not in mapping.target.names:
            raise ValueError(f"box category {category!r} is not a class of {mapping.target.name!r}")
        target = mapping.target.index(category)
        if not mapping.reached[target]:
            entry["recall"] = "not predicted by this model"
        else:
            hits = mapped[inside] == target
            entry["recall"] = float(hits.mean()) if hits.size else None
            counts = np.bincount(mapped[inside], minlength=mapping.target.num_classes + 1)
            names = (*mapping.target.names, NO_COUNTERPART)
            entry["predicted_as"] = {names[i]: int(c) for i, c in enumerate(counts) if c}
        scores[category] = entry
    return scores


def ego_returns(xyz: np.ndarray, labels: np.ndarray, radius: float = 1.0) -> dict:
    """Points within `radius` of the sensor (the vehicle's own body, no-return placeholders) and the share
    of them the model left unlabelled (IGNORE_INDEX), which should be all."""
    near = np.linalg.norm(np.asarray(xyz, dtype=np.float64), axis=1) < radius
    unlabelled = labels[near] == IGNORE_INDEX
    return {
        "radius_m": radius,
        "points": int(near.sum()),
        "unlabelled_share": float(unlabelled.mean()) if near.any() else None,
    }


def confusion_picture(confusion: np.ndarray, names: Sequence[str], cell: int = 28) -> np.ndarray:
    """Row-normalised confusion matrix (ground truth rows, predictions columns) as a BGR image."""
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    k, margin = len(rows), 130
    heat = cv2.applyColorMap((rows * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    heat = cv2.resize(heat, (k * cell, k * cell), interpolation=cv2.INTER_NEAREST)
    picture = np.full((k * cell + margin, k * cell + margin, 3), 255, dtype=np.uint8)
    picture[margin:, margin:] = heat
    for i, name in enumerate(names):
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


def iou_bars(summaries: dict[str, dict], names: Sequence[str], width: int = 700) -> np.ndarray:
    """Per-class IoU bars, one colour per mode, as a BGR image."""
    palette = [(200, 120, 40), (60, 160, 230), (90, 180, 90)]
    bar, gap, left = 10, 8, 130
    height = len(names) * (bar * len(summaries) + gap) + 30
    picture = np.full((height, width, 3), 255, dtype=np.uint8)
    for i, name in enumerate(names):
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


def bev_comparison(
    frame: Frame, segmenter: Segmenter, size: int = 500, mapping: ClassMapping | None = None
) -> np.ndarray:
    """Bird's-eye views of one frame: ground truth, fusion, LiDAR-only (predictions in the target's colours
    through `mapping`, grey where a class has no counterpart)."""
    classes = segmenter.classes if mapping is None else mapping.target
    panels = [("ground truth", frame.labels)]
    for mode, lidar_only in MODES.items():
        labels = segmenter.segment_frame(frame, lidar_only=lidar_only).labels
        if mapping is not None:
            labels = mapping.predictions(labels)
            labels = np.where(labels < classes.num_classes, labels, IGNORE_INDEX).astype(np.uint8)
        panels.append((mode, labels))
    tiles = []
    for title, labels in panels:
        tile = render_bev(frame.xyz, classes.colorize(labels), size=size)
        label_text(tile, title, origin=(8, size - 12))
        tiles.append(tile)
    return np.hstack(tiles)


def write_report(
    results: dict,
    segmenter: Segmenter,
    frames: Sequence[Frame],
    out: Path,
    model: str,
    mapping: ClassMapping | None = None,
) -> dict:
    """report.json, report.md and the PNG pictures in `out`; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    classes = segmenter.classes if mapping is None else mapping.target
    summaries = {mode: result.summary(classes) for mode, result in results.items()}
    report = {"model": model, "frames": len(frames), "classes": classes.name, "modes": summaries}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    names = classes.names if mapping is None else (*classes.names, NO_COUNTERPART)
    scored = list(summaries[next(iter(summaries))]["iou"])
    for mode, result in results.items():
        cv2.imwrite(str(out / f"confusion_{mode}.png"), confusion_picture(result.confusion, names))
    cv2.imwrite(str(out / "iou_per_class.png"), iou_bars(summaries, scored))
    cv2.imwrite(str(out / "bev.png"), bev_comparison(frames[0], segmenter, mapping=mapping))
    modes = list(summaries)
    through = (
        "" if mapping is None else f", model classes {mapping.source.name} mapped by {mapping.source.source}"
    )
    lines = [
        f"# Evaluation of `{model}` on {len(frames)} frames ({classes.name}{through})",
        "",
        "| | " + " | ".join(modes) + " |",
        "|---|" + "---:|" * len(modes),
        "| **mIoU (%)** | " + " | ".join(f"**{100 * summaries[m]['miou']:.1f}**" for m in modes) + " |",
    ]
    for name in scored:
        cells = [summaries[m]["iou"][name] for m in modes]
        lines.append(
            f"| {name} | " + " | ".join("-" if c is None else f"{100 * c:.1f}" for c in cells) + " |"
        )
    if mapping is not None:
        first = summaries[modes[0]]
        lines.append(f"| not predicted by this model | {', '.join(first['not_predicted']) or '-'} |")
        lines.append(f"| labelled points of those (not scored) | {first['points_not_scored']} |")
    for stage in summaries[modes[0]]["latency_ms"]:
        cells = [summaries[m]["latency_ms"][stage] for m in modes]
        lines.append(
            f"| {stage} p50 / p90 | " + " | ".join(f"{c['p50']:.1f} / {c['p90']:.1f}" for c in cells) + " |"
        )
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return report


def score_live(outputs: dict, truth: dict, totals: Sequence[float], classes: ClassSet) -> dict:
    """mIoU and per-class IoU of the node's labels against the ground truth of the same scans, and the
    node's processing time per scan (its ~/debug/total_ms of the labelled scans)."""
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
        "--model", type=Path, default=None, help="an .onnx model (default: the shipped one for the backend)"
    )
    parser.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch"))
    parser.add_argument("--split", default=None, help="split of a synthetic data set (e.g. val)")
    parser.add_argument(
        "--map-to",
        default=None,
        metavar="CLASS_SET",
        help="score on frames labelled in this class set (e.g. semantickitti) through the model's class map",
    )
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
    parser.add_argument(
        "--record",
        type=Path,
        default=None,
        metavar="OUT",
        help="live mode: record the session (inputs and all the node published) into the new mcap bag OUT",
    )
    args = parser.parse_args(argv)
    if not args.rate > 0:
        parser.error(f"--rate: {args.rate:g} is not > 0")
    from xkd_ros.paths import default_model

    if args.record is not None and not args.live:
        parser.error("--record: only with --live (it records a live session)")
    if args.record is not None and args.record.exists():
        parser.error(f"--record: {args.record} exists already; a recording goes to a new folder")
    if args.live:
        return _live(args)
    model = args.model or default_model(args.backend)
    frames = open_frames(args.data, **({"split": args.split} if args.split else {}))
    if args.max_frames:
        frames = frames[: args.max_frames]
    segmenter = Segmenter.from_model(model, backend=args.backend, threads=args.threads)
    mapping = None
    if args.map_to:
        try:
            mapping = ClassMapping.between(segmenter.classes, load_class_set(args.map_to))
        except (ValueError, FileNotFoundError) as error:
            parser.error(f"--map-to: {error}")
    try:
        results = evaluate(frames, segmenter, mapping=mapping)
    except ValueError as error:
        print(f"xkd-evaluate: error: {error}", file=sys.stderr)
        return 1
    report = write_report(results, segmenter, frames, args.out, str(model), mapping)
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
        result = run_live(recording, env, args.node, rate=args.rate, timeout=args.timeout, record=args.record)
    except (LiveError, RosbagError) as error:
        print(f"xkd-evaluate: error: {error}", file=sys.stderr)
        return 1
    report = result.report(load_class_set(recording.classes))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "live_report.json").write_text(json.dumps(report, indent=2) + "\n")
    recorded = report["scans_recorded"]
    print(f"{report['scans_labelled']} of {recorded} scans labelled: mIoU {100 * report['miou']:.1f} %")
    if args.record is not None:
        messages = report["session_messages"]
        print(
            f"session recorded: {args.record} ({sum(messages.values())} messages on {len(messages)} topics)"
        )
    lost = result.lost()
    if lost:
        print(f"xkd-evaluate: error: {describe_lost(lost, recorded)}", file=sys.stderr)
        return 1
    return 0
