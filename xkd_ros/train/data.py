"""Training data: frames from any data set, pre-processed once (the shared path) and kept in memory, and
batched by shape so that frames of several rigs (beam counts, camera counts) train together."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch

from xkd_ros.classes import IGNORE_INDEX
from xkd_ros.data.frame import Frame
from xkd_ros.preprocess import NetworkInputs, PreprocessConfig, batch, prepare_frame

# Per-point extras (first axis N: cut with the points by augmentation) and per-image ones ((M, h, w)).
POINT_EXTRAS = ("teacher", "teacher_seen")
IMAGE_EXTRAS = ("superpixels",)
# (frame, its inputs) -> (N, C) float16 teacher probabilities, (N,) bool seen (train.teacher.TeacherTargets)
TeacherFunction = Callable[[Frame, NetworkInputs], tuple[np.ndarray, np.ndarray]]


class Item(NamedTuple):
    """One training frame: network inputs, per-point labels (IGNORE_INDEX where unlabelled) and extras:
    "superpixels" (M, h, w) int32 SLIC ids of each network-size image, "teacher" (N, C) float16 and
    "teacher_seen" (N,) bool the frozen 2-D teacher's per-point probabilities - those asked for."""

    inputs: NetworkInputs
    labels: np.ndarray
    extras: dict[str, np.ndarray]


class PreparedFrames(torch.utils.data.Dataset):
    """Pre-processed frames and their labels; frames outside `labelled` carry IGNORE_INDEX everywhere.

    Pre-processing runs once per frame, on first use: the 2-core budget goes to the network. So do the
    extras: `superpixels` > 0 adds SLIC superpixels of that many segments per image, `teacher` the frozen
    teacher's per-point targets.
    """

    def __init__(
        self,
        frames: Sequence[Frame],
        config: PreprocessConfig,
        labelled: np.ndarray | None = None,
        superpixels: int = 0,
        teacher: TeacherFunction | None = None,
    ):
        self.frames = frames
        self.config = config
        self.labelled = (
            np.ones(len(frames), dtype=bool) if labelled is None else np.asarray(labelled, dtype=bool)
        )
        self.superpixels, self.teacher = superpixels, teacher
        self._cache: dict[int, Item] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> Item:
        if index not in self._cache:
            frame = self.frames[index]
            inputs = prepare_frame(frame, self.config)
            if frame.labels is None or not self.labelled[index]:
                labels = np.full(inputs.num_points, IGNORE_INDEX, dtype=np.uint8)
            else:
                labels = np.where(inputs.point_valid, frame.labels, IGNORE_INDEX).astype(np.uint8)
            extras = {}
            if self.superpixels:
                from xkd_ros.train.superpixels import slic_superpixels

                extras["superpixels"] = slic_superpixels(inputs.images, self.superpixels, self.config)
            if self.teacher is not None:
                extras["teacher"], extras["teacher_seen"] = self.teacher(frame, inputs)
            self._cache[index] = Item(inputs, labels, extras)
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


def collate(items: Sequence[Item]) -> dict[str, torch.Tensor]:
    """Batch of frames as tensors (preprocess.batch layout) plus `labels` (P,) int64 and the extras every
    item has: superpixels (frames * M, h, w) int64, teacher (P, C) float32, teacher_seen (P,) bool."""
    arrays = batch([item[0] for item in items])
    tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}
    tensors["labels"] = torch.from_numpy(np.concatenate([item[1] for item in items]).astype(np.int64))
    shared = set.intersection(*(set(item[2]) if len(item) > 2 else set() for item in items))
    for name in sorted(shared):
        joined = np.concatenate([item[2][name] for item in items])
        dtype = {"superpixels": np.int64, "teacher": np.float32}.get(name, joined.dtype)
        tensors[name] = torch.from_numpy(joined.astype(dtype, copy=False))
    return tensors
