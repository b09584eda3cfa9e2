"""Training data: frames from any data set, pre-processed once (the shared path) and kept in memory, and
batched by shape so that frames of several rigs (beam counts, camera counts) train together."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence

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

    def shape_key(self, index: int) -> tuple[int, int]:
        """(H, M) of frame `index`: its rig's beam count and the cameras it has images of."""
        return self[index][0].shape_key

    def class_frequencies(self, num_classes: int) -> np.ndarray:
        """Labelled points per class over the labelled frames (for class weights)."""
        counts = np.zeros(num_classes, dtype=np.int64)
        for index in np.flatnonzero(self.labelled):
            labels = self[index][1]
            counts += np.bincount(labels[labels != IGNORE_INDEX], minlength=num_classes)[:num_classes]
        return counts


class ShapeBatches(torch.utils.data.Sampler[list[int]]):
    """Batches of up to `batch_size` items that share a key (preprocess.batch needs one (H, M) a batch), in
    a random order fixed by `seed` and the epoch: every run, and every rank, draws the same.

    An epoch shuffles the items, cuts each key's items, in that order, into batches (the last of a key may be
    smaller) and shuffles the batches, so the rigs take turns in proportion to their frames. Under
    DistributedDataParallel rank r of `num_replicas` takes every num_replicas-th batch from the r-th, the
    list first padded with its own start so that every rank steps as often.
    """

    def __init__(
        self, keys: Sequence[Hashable], batch_size: int, seed: int, num_replicas: int = 1, rank: int = 0
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if not keys:
            raise ValueError("ShapeBatches: no items to batch")
        self.keys = list(keys)
        self.batch_size, self.seed = batch_size, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """Every batch of the current epoch, before the split between ranks."""
        rng = np.random.default_rng([self.seed, self.epoch])
        groups: dict[Hashable, list[int]] = {}
        for index in rng.permutation(len(self.keys)).tolist():
            groups.setdefault(self.keys[index], []).append(index)
        cut = [
            group[start : start + self.batch_size]
            for group in groups.values()
            for start in range(0, len(group), self.batch_size)
        ]
        cut = [cut[i] for i in rng.permutation(len(cut))]
        padding = -len(cut) % self.num_replicas
        return cut + [cut[i % len(cut)] for i in range(padding)]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        return len(self.batches()) // self.num_replicas


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
