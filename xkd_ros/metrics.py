"""Segmentation metrics: confusion matrix, per-class IoU, mIoU; latency percentiles. Plain numpy, no deps."""

from __future__ import annotations

import numpy as np

from xkd_ros.classes import IGNORE_INDEX


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts, rows = ground truth, columns = prediction; ignored ground truth is skipped."""
    labels = np.asarray(labels).ravel()
    predictions = np.asarray(predictions).ravel()
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ in length")
    keep = labels != IGNORE_INDEX
    labels, predictions = labels[keep].astype(np.int64), predictions[keep].astype(np.int64)
    if labels.size and (
        labels.max() >= num_classes or predictions.max() >= num_classes or predictions.min() < 0
    ):
        raise ValueError(f"class ids outside 0..{num_classes - 1}")
    return np.bincount(labels * num_classes + predictions, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of each class, NaN for classes absent from both ground truth and predictions."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU over the classes present in ground truth or predictions."""
    iou = iou_per_class(confusion)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def latency_percentiles(
    milliseconds: np.ndarray, percentiles: tuple[int, ...] = (50, 90, 99)
) -> dict[str, float]:
    """p50/p90/p99 (and mean) of latencies in ms."""
    values = np.asarray(milliseconds, dtype=np.float64)
    stats = {f"p{p}": float(np.percentile(values, p)) for p in percentiles}
    stats["mean"] = float(values.mean())
    return stats
