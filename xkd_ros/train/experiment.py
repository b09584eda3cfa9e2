"""Experiment configuration: one YAML file per experiment (config/train/*.yaml), checked on load.

Every key is known: a typo is an error naming its path (e.g. `finetune.distil_weight`), not a silent default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PAIRS = ("pixel", "superpixel")
TEACHERS = ("none", "espnet_cityscapes")


@dataclass(frozen=True)
class DataConfig:
    """Where the frames come from. `root` is anything xkd_ros.data.open_frames reads, or a list of such: one
    training over several rigs (sensors, cameras), train and val frames from each, every frame with its
    own rig (the LiDAR profile and cameras pre-processing follows)."""

    root: str | list[str] = field(default="out/synth", metadata={"or_list": True})
    train: dict[str, Any] = field(default_factory=lambda: {"split": "train"})  # open_frames options
    val: dict[str, Any] = field(default_factory=lambda: {"split": "val"})
    # Held-out test frames of every root (open_frames options, e.g. {split: test}); empty: none. Never used
    # for model selection: best.pt is chosen on `val`, then scored once on these.
    test: dict[str, Any] = field(default_factory=dict)
    label_fraction: float = 1.0  # share of training frames whose labels fine-tuning may use
    max_train_frames: int = 0  # per root; 0: all
    max_val_frames: int = 0

    @property
    def roots(self) -> list[str]:
        return [self.root] if isinstance(self.root, str) else list(self.root)


@dataclass(frozen=True)
class PretrainConfig:
    """Stage 1: cross-modal contrastive pretraining, no labels. steps = 0 switches it off (the ablation)."""

    steps: int = 0
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 2
    temperature: float = 0.07
    max_pairs: int = 4096
    # "pixel": point-pixel pairs (one per point and camera that sees it); "superpixel": SLidR's pairs, point
    # and pixel embeddings averaged over the SLIC superpixels of each camera image
    pairs: str = "pixel"
    superpixels: int = 150  # SLIC segments per camera image ("superpixel" pairs)

    def __post_init__(self) -> None:
        if self.pairs not in PAIRS:
            raise ValueError(f"pretrain.pairs: expected one of {PAIRS}, got {self.pairs!r}")
        if self.superpixels < 1:
            raise ValueError(f"pretrain.superpixels: must be >= 1, got {self.superpixels}")


@dataclass(frozen=True)
class FinetuneConfig:
    """Stage 2: segmentation on the labelled frames, both heads, with distillation fused -> LiDAR-only."""

    steps: int = 100
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 2
    lovasz_weight: float = 1.0
    distill_weight: float = 1.0
    distill_temperature: float = 2.0
    class_weights: str = "inverse_sqrt"  # "inverse_sqrt" frequency on the labelled frames, or "none"
    # batches of frames WITHOUT labels drawn beside each labelled one: only the label-free losses run on them
    # (fused -> LiDAR distillation, teacher KD), so the unlabelled frames keep teaching after pretraining
    unlabelled_batches: int = 0

    def __post_init__(self) -> None:
        if self.unlabelled_batches < 0:
            raise ValueError(f"finetune.unlabelled_batches: must be >= 0, got {self.unlabelled_batches}")


@dataclass(frozen=True)
class TeacherConfig:
    """A frozen 2-D teacher distilled into the 3-D branch (2-D -> 3-D knowledge distillation): its per-pixel
    class probabilities, sampled at every point a camera sees, are the target of the model's teacher head
    (KL at `temperature`, times `weight`), in both stages and on every frame, labelled or not.

    kind: "none" or "espnet_cityscapes" (xkd_ros.model.teachers.EspnetTeacher, Cityscapes' 19 classes + void).
    path: the teacher's weights ("": its default lookup); width, height: the teacher's input size.
    cache: folder of the per-frame targets, keyed on the teacher's fingerprint and the frame's content, so
        seeds and rows reuse them ("": <run folder>/../.teacher_cache).
    """

    kind: str = "none"
    weight: float = 1.0
    temperature: float = 1.0
    path: str = ""
    width: int = 512
    height: int = 256
    cache: str = ""

    def __post_init__(self) -> None:
        if self.kind not in TEACHERS:
            raise ValueError(f"teacher.kind: expected one of {TEACHERS}, got {self.kind!r}")
        if not self.temperature > 0:
            raise ValueError(f"teacher.temperature: must be positive, got {self.temperature}")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-batch augmentation (never validation or test), seeded by (seed, stage, step): runs repeat.
    Geometry moves the points, the range image and the labels together and leaves point_uv alone (the
    point <-> pixel pairing is by index, as 2DPASS); image changes remap point_uv. Every default is off."""

    rotate: bool = False  # random yaw about z, in whole range-image columns (exact)
    flip: bool = False  # mirror y with probability 1/2
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # x, y, height and range times U(lo, hi)
    point_dropout: float = 0.0  # share of points dropped (with their labels)
    image_crop: float = 1.0  # random crop keeping >= this share of each image side, resized back; 1: off
    color_jitter: float = 0.0  # brightness, contrast, saturation each times U(1 - j, 1 + j)

    def __post_init__(self) -> None:
        scale = self.scale
        if not (
            isinstance(scale, list | tuple) and len(scale) == 2 and 0 < float(scale[0]) <= float(scale[1])
        ):
            raise ValueError(f"augment.scale: expected [lo, hi] with 0 < lo <= hi, got {scale!r}")
        if not 0 <= self.point_dropout < 1:
            raise ValueError(f"augment.point_dropout: must be in [0, 1), got {self.point_dropout}")
        if not 0 < self.image_crop <= 1:
            raise ValueError(f"augment.image_crop: must be in (0, 1], got {self.image_crop}")
        if not 0 <= self.color_jitter < 1:
            raise ValueError(f"augment.color_jitter: must be in [0, 1), got {self.color_jitter}")

    @property
    def active(self) -> bool:
        return self != AugmentConfig()


@dataclass(frozen=True)
class InitConfig:
    """Where a run's weights start (before any resume): `checkpoint` = a training checkpoint (best.pt ...)
    whose tensors of matching name and shape are loaded; the rest (e.g. heads of another class count) keep
    their fresh initialisation. For fine-tuning a synthetic model on one real scan. "": from scratch."""

    checkpoint: str = ""


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: dict[str, Any] = field(default_factory=dict)  # xkd_ros.preprocess.PreprocessConfig
    model: dict[str, Any] = field(default_factory=dict)  # xkd_ros.model.ModelConfig (num_* filled in)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    init: InitConfig = field(default_factory=InitConfig)
    # named override lists (`xkd-train --size full`): the same experiment at another scale
    sizes: dict[str, list[str]] = field(default_factory=dict)
    validate_every: int = 100
    checkpoint_every: int = 50
    log_every: int = 10
    threads: int = 0  # torch intra-op threads, 0: torch's default

    @classmethod
    def from_dict(cls, values: dict[str, Any], path: str = "") -> ExperimentConfig:
        return _build(cls, values or {}, f"{path}: " if path else "")

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] = (), size: str = "") -> ExperimentConfig:
        """The YAML at `path`, with `key.sub=value` overrides (values parsed as YAML); `size` names one of
        the file's `sizes`, whose overrides come first (so `overrides` win).

        One file serves both scales: without a size the reduced one that runs on 2 CPU cores, with e.g.
        `--size full` the full one for GPUs under torchrun.
        """
        values = yaml.safe_load(Path(path).read_text()) or {}
        if size:
            sizes = values.get("sizes") or {}
            if size not in sizes:
                raise ValueError(
                    f"{path}: no size {size!r} in its sizes (there are: {sorted(sizes) or 'none'})"
                )
            if not isinstance(sizes[size], list) or not all(isinstance(item, str) for item in sizes[size]):
                raise ValueError(f"{path}: sizes.{size}: expected a list of key.sub=value strings")
            overrides = [*sizes[size], *overrides]
        for override in overrides:
            key, separator, text = override.partition("=")
            if not separator:
                raise ValueError(f"override {override!r}: expected key.sub=value")
            node = values
            *parents, leaf = key.split(".")
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = yaml.safe_load(text)
        return cls.from_dict(values, str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """`cls` from `values`; `where` ("file: key.") prefixes every error."""
    label = where.rstrip(". :") or "experiment"
    if not isinstance(values, dict):
        raise ValueError(f"{label}: expected a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{label}: unknown keys {unknown} (known: {sorted(fields)})")
    built = {}
    for name, value in values.items():
        default = (
            fields[name].default_factory() if callable(fields[name].default_factory) else fields[name].default
        )
        key = f"{where}{name}"
        if fields[name].metadata.get("or_list") and isinstance(value, list):
            # a list of values of the default's type, at least one
            if not value or not all(isinstance(item, type(default)) for item in value):
                raise ValueError(
                    f"{key}: expected {type(default).__name__} or a non-empty list of them, got {value!r}"
                )
            built[name] = value
        elif dataclasses.is_dataclass(default):
            built[name] = _build(type(default), value, f"{key}.")
        elif isinstance(default, bool | int | float | str) and not isinstance(value, type(default)):
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            else:
                raise ValueError(f"{key}: expected {type(default).__name__}, got {value!r}")
            built[name] = value
        else:
            built[name] = value
    return cls(**built)
