"""A small plain trainer: stage 1 contrastive pretraining, stage 2 few-label segmentation with distillation.

One loop for both stages; state (stage, step, model, optimiser, RNG) is checkpointed atomically every
`checkpoint_every` steps, and a run started again resumes where it stopped. Multi-process data parallel
through torchrun (DistributedDataParallel, gloo on CPU): rank 0 logs, validates and writes.

Model selection and the final score are apart: best.pt is the step with the best validation mIoU
(deployed head), and the test frames (`data.test`), never looked at during training, are scored once, from
best.pt, after it. Optional pieces: a frozen 2-D teacher distilled into the 3-D branch (`teacher`),
superpixel-pooled contrastive pairs (`pretrain.pairs`), label-free losses on the unlabelled frames during
fine-tuning (`finetune.unlabelled_batches`), seeded augmentation of training batches (`augment`), and a
start from another run's weights (`init.checkpoint`).
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import ConcatDataset, DataLoader, Subset
from tqdm import tqdm

from xkd_ros.classes import load_class_set
from xkd_ros.data import Frame, open_frames
from xkd_ros.metrics import confusion_matrix, iou_per_class, mean_iou
from xkd_ros.model import ModelConfig, build_model
from xkd_ros.model.checkpoint import load_checkpoint, save_checkpoint
from xkd_ros.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig
from xkd_ros.train.augment import augment
from xkd_ros.train.data import Item, PreparedFrames, ShapeBatches, collate, labelled_subset
from xkd_ros.train.experiment import ExperimentConfig
from xkd_ros.train.losses import distillation_loss, info_nce, segmentation_loss, superpixel_info_nce
from xkd_ros.train.teacher import TeacherTargets, build_teacher

STAGES = ("pretrain", "finetune")
CHECKPOINT = "checkpoint.pt"  # the latest state, for resuming
BEST = "best.pt"  # the weights with the best validation mIoU (deployed head)
LOG_FIELDS = (
    "stage",
    "step",
    "seconds",
    "loss",
    "info_nce",
    "superpixel_nce",
    "teacher_kd",
    "lidar_seg",
    "fused_seg",
    "distill",
    "unlabelled_distill",
    "unlabelled_teacher_kd",
    "val_lidar_miou",
    "val_fused_miou",
    "val_deployed_miou",
)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _endless(loader: DataLoader, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        loader.batch_sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _first(frames: Sequence[Frame], count: int) -> Sequence[Frame]:
    """The first `count` frames (all for 0), read lazily: a data set's frames are read when used."""
    return Subset(frames, range(min(count, len(frames)))) if count else frames


class Trainer:
    """Trains `config` into `out_dir`: checkpoint.pt, best.pt, log.csv, metrics.json, config.yaml.

    metrics.json: the validation result at the last step (lidar, fused, deployed: miou, iou) as before, and
    "last" (the same, with its step), "best" (best.pt's validation and step), with `data.test` "test" (best.pt
    on the test frames of all roots), "test_step" and "test_per_root", then "training_seconds" and what was
    loaded at the start ("init", "backbone") and how the teacher targets came ("teacher_targets").
    """

    def __init__(self, config: ExperimentConfig, out_dir: str | Path) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)  # weights and sampling; numpy draws use seeded Generators
        self.preprocess = PreprocessConfig.from_dict(config.preprocess, "preprocess")
        train_frames, val_frames, test_frames, classes = [], [], {}, set()
        self.trained_on: list[dict[str, Any]] = []
        for root in config.data.roots:
            train = _first(open_frames(root, **config.data.train), config.data.max_train_frames)
            val = _first(open_frames(root, **config.data.val), config.data.max_val_frames)
            if not len(train) or not len(val):
                raise ValueError(f"{root}: {len(train)} training and {len(val)} validation frames; need both")
            train_frames.append(train)
            val_frames.append(val)
            classes |= {train[0].classes, val[0].classes}
            if config.data.test:
                test = open_frames(root, **config.data.test)
                if not len(test):
                    raise ValueError(f"{root}: no test frames for data.test {config.data.test}")
                test_frames[root] = test
                classes.add(test[0].classes)
            rig = train[0].rig
            self.trained_on.append({"root": root, "lidar": rig.lidar.to_dict(), "cameras": rig.names})
        if len(classes) != 1 or None in classes:
            raise ValueError(
                f"{', '.join(config.data.roots)}: train, val and test frames need labels of one class set, "
                f"got {classes}"
            )
        self.class_set = load_class_set(classes.pop())
        train_data = ConcatDataset(train_frames)
        labelled = labelled_subset(len(train_data), config.data.label_fraction, config.seed)
        model_values = {**config.model, "num_classes": self.class_set.num_classes}
        self.teacher: TeacherTargets | None = None
        if config.teacher.kind != "none":
            if not model_values.get("use_images", True):
                raise ValueError(
                    "teacher.kind: the 2-D teacher's head is the fusion model's; model.use_images=false"
                )
            cache = config.teacher.cache or self.out_dir.resolve().parent / ".teacher_cache"
            self.teacher = TeacherTargets(build_teacher(config.teacher), cache)
            model_values["teacher_classes"] = self.teacher.teacher.NUM_CLASSES
        self.model_config = ModelConfig.from_dict(model_values)
        pretrained_normalisation = (tuple(self.preprocess.mean), tuple(self.preprocess.std))
        if self.model_config.image_backbone != "scratch" and pretrained_normalisation != (
            IMAGENET_MEAN,
            IMAGENET_STD,
        ):
            # the pre-trained encoder undoes the ImageNet normalisation inside its graph to get its own
            backbone, mean, std = self.model_config.image_backbone, self.preprocess.mean, self.preprocess.std
            raise ValueError(
                f"model.image_backbone {backbone} needs preprocess mean/std = ImageNet's {IMAGENET_MEAN} / "
                f"{IMAGENET_STD}, got {mean} / {std}"
            )
        superpixel_pairs = config.pretrain.pairs == "superpixel" and config.pretrain.steps > 0
        superpixels = config.pretrain.superpixels if superpixel_pairs and self.model_config.use_images else 0
        self.train_data = PreparedFrames(train_data, self.preprocess, labelled, superpixels, self.teacher)
        self.val_data = PreparedFrames(ConcatDataset(val_frames), self.preprocess)
        self.test_data = {
            root: PreparedFrames(frames, self.preprocess) for root, frames in test_frames.items()
        }
        if config.finetune.unlabelled_batches and labelled.all():
            raise ValueError(
                f"finetune.unlabelled_batches: {config.finetune.unlabelled_batches} but every training frame "
                f"is labelled (data.label_fraction {config.data.label_fraction}); lower the fraction or set 0"
            )
        self.model = build_model(self.model_config)
        self.network: nn.Module = self.model
        if dist.is_initialized():
            self.network = DistributedDataParallel(self.model, find_unused_parameters=True)
        self.stage, self.step, self.best_miou = STAGES[0], 0, -1.0
        self.optimizer = self._optimizer(self.stage)
        self.history: list[dict[str, Any]] = []

    # ---- stages ---------------------------------------------------------------------------------------
    def _stage_config(self, stage: str) -> Any:
        return self.config.pretrain if stage == "pretrain" else self.config.finetune

    def _stage_steps(self, stage: str) -> int:
        if stage == "pretrain" and not self.model_config.use_images:
            return 0  # nothing to align without cameras: the LiDAR-only baseline starts at fine-tuning
        return self._stage_config(stage).steps

    def _optimizer(self, stage: str) -> torch.optim.Optimizer:
        stage_config = self._stage_config(stage)
        return torch.optim.AdamW(
            self.model.parameters(), lr=stage_config.lr, weight_decay=stage_config.weight_decay
        )

    def _loader(self, stage: str, unlabelled: bool = False) -> DataLoader:
        """Seeded batches (lists of Items) of frames that share a range-image height and camera count
        (several rigs): all training frames to pretrain, the labelled ones to fine-tune, or the unlabelled."""
        data = self.train_data
        indices = range(len(data))
        if stage == "finetune":
            indices = np.flatnonzero(data.labelled != unlabelled).tolist()
            data = Subset(data, indices)
        replicas = (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)
        sampler = ShapeBatches(
            [self.train_data.shape_key(index) for index in indices],
            self._stage_config(stage).batch_size,
            seed=self.config.seed + STAGES.index(stage) + 2 * unlabelled,
            num_replicas=replicas[0],
            rank=replicas[1],
        )
        return DataLoader(data, batch_sampler=sampler, collate_fn=list)

    def _batch(self, items: list[Item], stage: str, step: int, stream: int) -> dict[str, torch.Tensor]:
        """Training items -> tensors, augmented with draws seeded by (seed, stage, step, rank, stream)."""
        if self.config.augment.active:
            rng = np.random.default_rng([self.config.seed, STAGES.index(stage), step, _rank(), stream])
            items = [augment(item, self.config.augment, rng, self.preprocess) for item in items]
        return collate(items)

    def _class_weights(self) -> torch.Tensor | None:
        if self.config.finetune.class_weights == "none":
            return None
        counts = self.train_data.class_frequencies(self.class_set.num_classes).astype(np.float64)
        weights = np.where(counts > 0, 1 / np.sqrt(np.maximum(counts, 1)), 0.0)
        weights *= (counts > 0).sum() / max(weights.sum(), 1e-12)  # mean 1 over the classes present
        return torch.as_tensor(weights, dtype=torch.float32)

    # ---- one step -------------------------------------------------------------------------------------
    def _forward(self, batch: dict[str, torch.Tensor], embeddings: bool = False) -> dict[str, torch.Tensor]:
        if self.teacher is not None:
            return self.network(batch, embeddings=embeddings, teacher=True)
        return self.network(batch, embeddings=embeddings) if embeddings else self.network(batch)

    def _teacher_kd(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """KL(teacher || teacher head) at teacher.temperature on the points a camera saw, times weight."""
        teacher = self.config.teacher
        target = torch.log(batch["teacher"].clamp_min(1e-6))  # log-probabilities as logits
        kd = distillation_loss(out["teacher_logits"], target, teacher.temperature, mask=batch["teacher_seen"])
        return teacher.weight * kd

    def _pretrain_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self._forward(batch, embeddings=True)
        pretrain = self.config.pretrain
        terms = {}
        if pretrain.pairs == "superpixel":
            terms["superpixel_nce"] = superpixel_info_nce(
                out["point_embedding"],
                out["image_embedding"],
                batch["superpixels"],
                batch["point_uv"],
                batch["point_visible"],
                batch["point_index"][:, 0],
                pretrain.temperature,
                pretrain.max_pairs,
            )
        else:
            terms["info_nce"] = info_nce(
                out["point_embedding"],
                out["pixel_embedding"],
                batch["point_visible"],
                pretrain.temperature,
                pretrain.max_pairs,
            )
        if self.teacher is not None:
            terms["teacher_kd"] = self._teacher_kd(out, batch)
        return terms

    def _label_free_terms(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict:
        """The fine-tuning terms that need no labels: fused -> LiDAR distillation and teacher KD."""
        finetune, terms = self.config.finetune, {}
        if self.model_config.use_images and finetune.distill_weight:
            distill = distillation_loss(
                out["lidar_logits"], out["fused_logits"], finetune.distill_temperature
            )
            terms["distill"] = finetune.distill_weight * distill
        if self.teacher is not None:
            terms["teacher_kd"] = self._teacher_kd(out, batch)
        return terms

    def _finetune_terms(
        self, batch: dict[str, torch.Tensor], class_weights: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        out = self._forward(batch)
        finetune = self.config.finetune
        labels = batch["labels"]
        terms = {
            "lidar_seg": segmentation_loss(out["lidar_logits"], labels, class_weights, finetune.lovasz_weight)
        }
        if self.model_config.use_images:
            terms["fused_seg"] = segmentation_loss(
                out["fused_logits"], labels, class_weights, finetune.lovasz_weight
            )
        return terms | self._label_free_terms(out, batch)

    def _unlabelled_terms(self, batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Label-free terms on batches of unlabelled frames, summed: unlabelled_distill, ..._teacher_kd."""
        terms: dict[str, torch.Tensor] = {}
        for batch in batches:
            for name, value in self._label_free_terms(self._forward(batch), batch).items():
                terms[f"unlabelled_{name}"] = terms.get(f"unlabelled_{name}", 0) + value
        return terms

    # ---- validation -----------------------------------------------------------------------------------
    def validate(self) -> dict[str, Any]:
        """Per-class IoU of the LiDAR-only head, the fused head, and the deployed output (fused where a
        camera sees the point, LiDAR-only elsewhere) on the validation frames."""
        return self._scores(self._confusions(self.model, self.val_data))

    @torch.no_grad()
    def _confusions(self, model: nn.Module, data: PreparedFrames) -> dict[str, np.ndarray]:
        """Confusion matrix of each head of `model` on `data` (not augmented)."""
        training = model.training
        model.eval()
        k = self.class_set.num_classes
        heads = ("lidar", "fused", "deployed") if self.model_config.use_images else ("lidar",)
        confusion = {head: np.zeros((k, k), dtype=np.int64) for head in heads}
        for index in range(len(data)):
            batch = collate([data[index]])
            out = model(batch)
            labels = batch["labels"].numpy()
            predictions = {"lidar": out["lidar_logits"].argmax(1).numpy()}
            if self.model_config.use_images:
                predictions["fused"] = out["fused_logits"].argmax(1).numpy()
                seen = (batch["point_visible"] > 0).any(1).numpy()  # False for all where M = 0
                predictions["deployed"] = np.where(seen, predictions["fused"], predictions["lidar"])
            for head, predicted in predictions.items():
                confusion[head] += confusion_matrix(labels, predicted, k)
        model.train(training)
        return confusion

    def _scores(self, confusion: dict[str, np.ndarray]) -> dict[str, Any]:
        result = {}
        for head, matrix in confusion.items():
            iou = iou_per_class(matrix)
            result[head] = {
                "miou": mean_iou(matrix),
                "iou": dict(
                    zip(self.class_set.names, [None if np.isnan(v) else float(v) for v in iou], strict=True)
                ),
            }
        return result

    def test(self, best: dict[str, Any] | None = None) -> dict[str, Any]:
        """best.pt (selected on validation; its state `best` when the caller has read it already) on the test
        frames: "test" over all roots, "test_per_root", "test_step" (the step it holds); the current weights,
        and test_step None, when there is no best.pt."""
        model, step = self.model, None
        if best is None and (self.out_dir / BEST).is_file():
            best = load_checkpoint(self.out_dir / BEST)
        if best is not None:
            state = best
            model = build_model(self.model_config)
            model.load_state_dict(state["model"])
            step = state["step"]
        per_root = {root: self._confusions(model, data) for root, data in self.test_data.items()}
        total = {
            head: sum(confusions[head] for confusions in per_root.values())
            for head in next(iter(per_root.values()))
        }
        return {
            "test": self._scores(total),
            "test_step": step,
            "test_per_root": {root: self._scores(confusions) for root, confusions in per_root.items()},
        }

    # ---- starting weights -----------------------------------------------------------------------------
    def _initialise(self) -> dict[str, Any]:
        """For a fresh run (not a resumed one): init.checkpoint's weights, else a pretrained image backbone's
        (Part A's load_backbone_weights, for model.image_backbone other than "scratch"). What loaded."""
        path = self.config.init.checkpoint
        if path:
            return {"init": load_matching(self.model, load_checkpoint(path)["model"], path)}
        if self.model_config.image_backbone != "scratch" and self.model_config.use_images:
            from xkd_ros.model.backbones import load_backbone_weights

            return {"backbone": str(load_backbone_weights(self.model))}
        return {}

    # ---- checkpoints ----------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "format": "xkd_ros.train/1",
            "experiment": self.config.to_dict(),
            "model_config": self.model_config.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "trained_on": self.trained_on,
            "classes": self.class_set.name,
            "stage": self.stage,
            "step": self.step,
            "best_miou": self.best_miou,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def resume(self) -> bool:
        """Load out_dir/checkpoint.pt if it exists; True when a run was resumed."""
        path = self.out_dir / CHECKPOINT
        if not path.is_file():
            return False
        state = load_checkpoint(path)
        if state["model_config"] != self.model_config.to_dict():
            raise ValueError(f"{path}: written for another model config; use another --out or delete it")
        self.model.load_state_dict(state["model"])
        self.stage, self.step, self.best_miou = state["stage"], state["step"], state["best_miou"]
        self.optimizer = self._optimizer(self.stage)
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        return True

    def _log(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        path = self.out_dir / "log.csv"
        new = not path.is_file()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)

    # ---- the loop -------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Run (or finish) both stages; returns the final validation result, also in metrics.json."""
        main = _rank() == 0
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        loaded = {} if self.resume() else self._initialise()
        class_weights = self._class_weights()
        started = time.perf_counter()
        self.model.train()
        for stage in STAGES[STAGES.index(self.stage) :]:
            if stage != self.stage:
                self.stage, self.step = stage, 0
                self.optimizer = self._optimizer(stage)
            steps = self._stage_steps(stage)
            if self.step >= steps:
                continue
            batches = _endless(self._loader(stage), epoch=self.step)
            extra = self.config.finetune.unlabelled_batches if stage == "finetune" else 0
            unlabelled = _endless(self._loader(stage, unlabelled=True), epoch=self.step) if extra else None
            progress = tqdm(range(self.step, steps), desc=f"{self.config.name} {stage}", disable=not main)
            for step in progress:
                batch = self._batch(next(batches), stage, step, 0)
                if stage == "pretrain":
                    terms = self._pretrain_terms(batch)
                else:
                    terms = self._finetune_terms(batch, class_weights)
                    others = [self._batch(next(unlabelled), stage, step, 1 + i) for i in range(extra)]
                    terms |= self._unlabelled_terms(others)
                losses = {
                    "loss": sum(terms.values()),
                    **{name: value.detach() for name, value in terms.items()},
                }
                self.optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                self.optimizer.step()
                done = self.step = step + 1  # the states saved below are after this step
                row = {"stage": stage, "step": done, "seconds": round(time.perf_counter() - started, 1)}
                row |= {name: round(value.item(), 5) for name, value in losses.items()}
                if stage == "finetune" and (done % self.config.validate_every == 0 or done == steps) and main:
                    result = self.validate()
                    row |= {f"val_{head}_miou": round(r["miou"], 4) for head, r in result.items()}
                    deployed = result.get("deployed", result["lidar"])["miou"]
                    if deployed > self.best_miou:
                        self.best_miou = deployed
                        save_checkpoint({**self._state(), "validation": result}, self.out_dir / BEST)
                if main and (done % self.config.log_every == 0 or "val_lidar_miou" in row or done == steps):
                    self._log(row)
                    progress.set_postfix(loss=row["loss"])
                if main and (done % self.config.checkpoint_every == 0 or done == steps):
                    save_checkpoint(self._state(), self.out_dir / CHECKPOINT)
        if not main:
            return {}
        seconds = round(time.perf_counter() - started, 1)
        result = self.validate()
        result["last"] = {"step": self.step, **result}
        best = load_checkpoint(self.out_dir / BEST) if (self.out_dir / BEST).is_file() else None
        if best is not None:
            result["best"] = {"step": best["step"], **best["validation"]}
        if self.test_data:
            result |= self.test(best)
        result["training_seconds"] = seconds
        result |= loaded
        if self.teacher is not None:
            result["teacher_targets"] = {
                "cache": str(self.teacher.folder),
                "computed": self.teacher.computed,
                "cached": self.teacher.cached,
            }
        (self.out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        return result


def load_matching(model: nn.Module, weights: dict[str, torch.Tensor], source: str = "") -> dict[str, Any]:
    """Copy the tensors of `weights` whose name and shape match `model`'s into it; the others (a head of
    another class count, a branch the checkpoint lacks) keep their fresh values. Returns what happened."""
    own = model.state_dict()
    matching = {
        name: value for name, value in weights.items() if name in own and own[name].shape == value.shape
    }
    model.load_state_dict(matching, strict=False)
    return {
        "checkpoint": source,
        "loaded": len(matching),
        "of": len(own),
        "reinitialised": sorted(set(own) - set(matching)),
        "unused": sorted(set(weights) - set(matching)),
    }


def train(config: ExperimentConfig, out_dir: str | Path) -> dict[str, Any]:
    """Train `config` into `out_dir`, under torchrun when WORLD_SIZE > 1 (gloo)."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")
    try:
        return Trainer(config, out_dir).fit()
    finally:
        if distributed:
            dist.destroy_process_group()
