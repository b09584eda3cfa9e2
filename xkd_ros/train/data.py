"""Training data: frames from any data set, pre-processed once (the shared path) and kept in memory."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from xkd_ros.data.classes import IGNORE_INDEX
from xkd_ros.data.frame import Frame
from xkd_ros.preprocess import NetworkInputs, PreprocessConfig, batch, prepare_frame


class PreparedFrames(torch.utils.data.Dataset):
    """Pre-processed frames and their labels; frames outside `labelled` carry IGNORE_INDEX everywhere.

    Pre-processing runs once per frame, on first use: the 2-core budget goes to the network.
    """

    def __init__(self, frames: Sequence[Frame], config: PreprocessConfig, labelled: np.ndarray | None = None):
        self.frames = frames
        self.config = config
        self.labelled = (
            np.ones(len(frames), dtype=bool) if labelled is None else np.asarray(labelled, dtype=bool)
        )
        self._cache: dict[int, tuple[NetworkInputs, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> tuple[NetworkInputs, np.ndarray]:
        if index not in self._cache:
            frame = self.frames[index]
            inputs = prepare_frame(frame, self.config)
            if frame.labels is None or not self.labelled[index]:
                labels = np.full(inputs.num_points, IGNORE_INDEX, dtype=np.uint8)
            else:
                labels = np.where(inputs.point_valid, frame.labels, IGNORE_INDEX).astype(np.uint8)
            self._cache[index] = (inputs, labels)
        return self._cache[index]

    def class_frequencies(self, num_classes: int) -> np.ndarray:
        """Labelled points per class over the labelled frames (for class weights)."""
        counts = np.zeros(num_classes, dtype=np.int64)
        for index in np.flatnonzero(self.labelled):
            labels = self[index][1]
            counts += np.bincount(labels[labels != IGNORE_INDEX], minlength=num_classes)[:num_classes]
        return counts


def labelled_subset(num_frames: int, fraction: float, seed: int) -> np.ndarray:
    """A fixed, seeded choice of round(fraction * num_frames) frames (at least one) whose labels are used."""
    if not 0 < fraction <= 1:
        raise ValueError(f"data.label_fraction must be in (0, 1], got {fraction}")
    count = max(1, round(fraction * num_frames))
    chosen = np.random.default_rng(seed).permutation(num_frames)[:count]
    mask = np.zeros(num_frames, dtype=bool)
    mask[chosen] = True
    return mask


def collate(items: Sequence[tuple[NetworkInputs, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Batch of frames as tensors (preprocess.batch layout) plus `labels` (P,) int64."""
    arrays = batch([inputs for inputs, _ in items])
    tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}
    tensors["labels"] = torch.from_numpy(np.concatenate([labels for _, labels in items]).astype(np.int64))
    return tensors
