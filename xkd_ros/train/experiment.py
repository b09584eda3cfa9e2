"""Experiment configuration: one YAML file per experiment (config/train/*.yaml), checked on load.

Every key is known: a typo is an error naming its path (e.g. `finetune.distil_weight`), not a silent default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class DataConfig:
    """Where the frames come from. `root` is anything xkd_ros.data.open_frames reads, or a list of such: one
    training over several rigs (sensors, cameras), train and val frames from each, every frame with its
    own rig (the LiDAR profile and cameras pre-processing follows)."""

    root: str | list[str] = field(default="out/synth", metadata={"or_list": True})
    train: dict[str, Any] = field(default_factory=lambda: {"split": "train"})  # open_frames options
    val: dict[str, Any] = field(default_factory=lambda: {"split": "val"})
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


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: dict[str, Any] = field(default_factory=dict)  # xkd_ros.preprocess.PreprocessConfig
    model: dict[str, Any] = field(default_factory=dict)  # xkd_ros.model.ModelConfig (num_* filled in)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    validate_every: int = 100
    checkpoint_every: int = 50
    log_every: int = 10
    threads: int = 0  # torch intra-op threads, 0: torch's default

    @classmethod
    def from_dict(cls, values: dict[str, Any], path: str = "") -> ExperimentConfig:
        return _build(cls, values or {}, f"{path}: " if path else "")

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
        """The YAML at `path`, with `key.sub=value` overrides (values parsed as YAML)."""
        values = yaml.safe_load(Path(path).read_text()) or {}
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
