"""Metrics against hand-computed values."""

import numpy as np
import pytest

from xkd_ros.classes import IGNORE_INDEX
from xkd_ros.metrics import confusion_matrix, iou_per_class, latency_percentiles, mean_iou


def test_confusion_and_iou_by_hand():
    labels = np.array([0, 0, 1, 1, 2, IGNORE_INDEX])
    predictions = np.array([0, 1, 1, 1, 0, 2])
    confusion = confusion_matrix(labels, predictions, 4)
    assert confusion[:3, :3].tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    iou = iou_per_class(confusion)
    np.testing.assert_allclose(iou[:3], [1 / 3, 2 / 3, 0.0])
    assert np.isnan(iou[3])  # never seen nor predicted: not counted
    assert mean_iou(confusion) == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)


def test_out_of_range_ids_raise():
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        confusion_matrix(np.array([0, 3]), np.array([0, 0]), 3)


def test_latency_percentiles():
    stats = latency_percentiles(np.arange(1, 101))
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["mean"] == pytest.approx(50.5)
