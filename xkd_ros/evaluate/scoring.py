"""Offline scoring: the numbers of an evaluation, with no DDS, no pictures and no torch.

Per mode (fusion and LiDAR-only, the same `Segmenter.segment_frame` call as the node) `evaluate` gathers a
confusion matrix and the stage latencies over labelled frames, and `ModeResult.summary` turns them into
per-class IoU, mIoU and latency percentiles. A `ClassMapping` scores a model on frames labelled in another
class set through the model's class map (`ClassSet.map_to`, config/classes/<model's>.yaml `maps`): per-class
IoU over the target classes the map reaches; the others are reported as not predicted by the model and their
points are not scored (as synthetic-to-real studies score the shared classes), and a prediction of a class
with no counterpart counts as wrong. `score_boxes` and `ego_returns` are the weak checks for a frame with 3-D
boxes but no point labels; `score_live` scores what a running node published (collected by
xkd_ros.evaluate.live) against the ground truth of the same scans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from xkd_ros.classes import IGNORE_INDEX, ClassSet
from xkd_ros.metrics import confusion_matrix, iou_per_class, latency_percentiles, mean_iou

if TYPE_CHECKING:  # annotations only: a Segmenter is passed in, and the scoring stays light to import
    from xkd_ros.data import Frame
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
