"""A tiny model exported by xkd-export, for the tests of the model, the pipeline and the backends.

Its weights are random but its BatchNorm statistics come from inputs of real scale, so its labels and
confidences vary as a trained model's do; a second of exporting instead of a training run. It stands in for
the shipped models/xkd_synthetic.onnx where a test needs a graph of the current export (dynamic points,
cameras and range rows) whatever the shipped file is.
"""

from __future__ import annotations

from pathlib import Path

import torch

from xkd_ros.classes import load_class_set
from xkd_ros.export import export_checkpoint
from xkd_ros.model import ModelConfig, build_model
from xkd_ros.model.checkpoint import save_checkpoint
from xkd_ros.preprocess import PreprocessConfig

TINY_MODEL = {
    "range_widths": [4, 8, 8],
    "range_strides": [[1, 2], [2, 2]],
    "point_width": 4,
    "feature_dim": 8,
    "image_widths": [4, 4, 8, 8],
    "image_blocks": [1, 1, 1],
    "image_feature_dim": 4,
    "embedding_dim": 6,
}
TINY_PREPROCESS = {"range_width": 128, "image_width": 96, "image_height": 56}


def calibrate_batch_norm(model: torch.nn.Module, preprocess: PreprocessConfig, seed: int = 0) -> None:
    """BatchNorm statistics of one random frame of real scale (metres, intensity 0..1, normalised RGB) in
    place of the initial (0, 1), which would saturate every head."""
    generator = torch.Generator().manual_seed(seed)
    points, cameras, rows, width = 400, 3, 32, preprocess.range_width
    xyz = torch.randn(points, 3, generator=generator) * torch.tensor([20.0, 20.0, 1.5])
    features = torch.cat([xyz, torch.rand(points, 1, generator=generator), xyz.norm(dim=1, keepdim=True)], 1)
    inputs = {
        "range_image": torch.rand(1, 6, rows, width, generator=generator) * 20,
        "point_features": features,
        "point_index": torch.stack(
            [
                torch.zeros(points, dtype=torch.int64),
                torch.randint(0, rows, (points,), generator=generator),
                torch.randint(0, width, (points,), generator=generator),
            ],
            dim=1,
        ),
        "images": torch.randn(
            cameras, 3, preprocess.image_height, preprocess.image_width, generator=generator
        ),
        "point_uv": torch.rand(points, cameras, 2, generator=generator) * 2 - 1,
        "point_visible": (torch.rand(points, cameras, generator=generator) < 0.5).float(),
    }
    with torch.no_grad():
        model.train()(inputs)
    model.eval()


def tiny_checkpoint(path: Path, use_images: bool = True, classes: str = "synthetic") -> Path:
    """A checkpoint as xkd-train writes it (model config, pre-processing, class set, weights)."""
    config = ModelConfig.from_dict(
        {**TINY_MODEL, "num_classes": load_class_set(classes).num_classes, "use_images": use_images}
    )
    preprocess = PreprocessConfig.from_dict(TINY_PREPROCESS)
    torch.manual_seed(0)
    model = build_model(config)
    calibrate_batch_norm(model, preprocess)
    state = {
        "model_config": config.to_dict(),
        "preprocess": preprocess.to_dict(),
        "classes": classes,
        "model": model.state_dict(),
        "experiment": {"name": "tiny", "data": {"root": "test/data", "label_fraction": 1.0}},
        "stage": "finetune",
        "step": 0,
    }
    return save_checkpoint(state, path)


def tiny_model(folder: Path, use_images: bool = True) -> Path:
    """`xkd-export` of `tiny_checkpoint` into `folder`: the .onnx (returned) and its model card."""
    name = "tiny" if use_images else "tiny_lidar"
    checkpoint = tiny_checkpoint(folder / f"{name}.pt", use_images)
    return export_checkpoint(checkpoint, folder / f"{name}.onnx")
