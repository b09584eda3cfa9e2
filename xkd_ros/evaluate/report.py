"""The written report of an offline evaluation and its pictures, from xkd_ros.evaluate.scoring's results.

`write_report` writes report.json (the summaries of every mode), report.md (one table: mIoU, per-class IoU
and latency percentiles, modes side by side) and the PNG pictures: a row-normalised confusion matrix per
mode, per-class IoU bars and a bird's-eye view of the first frame (ground truth, fusion, LiDAR-only).
`write_live_report` writes the JSON of a live evaluation (`xkd-evaluate --live`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from xkd_ros.classes import IGNORE_INDEX
from xkd_ros.data.render import label_text, render_bev
from xkd_ros.evaluate.scoring import MODES, NO_COUNTERPART, ClassMapping

if TYPE_CHECKING:  # annotations only: the frames and the Segmenter are the caller's
    from xkd_ros.data import Frame
    from xkd_ros.pipeline import Segmenter


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


def write_live_report(report: dict, out: Path) -> None:
    """live_report.json in `out` (made if missing): a live evaluation's report (LiveResult.report)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "live_report.json").write_text(json.dumps(report, indent=2) + "\n")
