"""The 2D branch: a ResNet-like encoder (torchvision's names, so ImageNet ResNet-18/34 weights load) and a
top-down decoder to stride 8 or 4, run on every camera image of the batch at once."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional

from xkd_ros.model.backbones import Lite0Encoder, PretrainedReport
from xkd_ros.model.config import ModelConfig
from xkd_ros.model.layers import conv_bn_act, stage

_RESNET_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")
_WRAPPER_PREFIXES = ("module.", "backbone.", "encoder.", "model.")


class ImageEncoder(nn.Module):
    """ResNet stem (conv1, bn1, max-pool) and layer1..layer3: features at strides 4, 8 and 16 (`widths`
    channels); the scratch backbone, trained from random unless `load_pretrained` gives it ResNet weights."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        stem, *widths = config.image_widths
        self.widths = tuple(widths)
        kernel = config.image_stem_kernel
        self.conv1 = nn.Conv2d(3, stem, kernel, 2, kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks = config.image_blocks
        self.layer1 = stage(stem, widths[0], blocks[0], 1, leaky=False)
        self.layer2 = stage(widths[0], widths[1], blocks[1], 2, leaky=False)
        self.layer3 = stage(widths[1], widths[2], blocks[2], 2, leaky=False)

    def forward(self, images: Tensor) -> list[Tensor]:
        c1 = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(images)))))
        c2 = self.layer2(c1)
        return [c1, c2, self.layer3(c2)]

    def load_pretrained(self, path: str | Path) -> PretrainedReport:
        """Load a local ResNet state dict (torchvision layout, optionally wrapped or prefixed) where shapes
        agree; everything else is reported, not raised, so a partial match still helps."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such pretrained weights file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
        if not isinstance(state, dict):
            raise ValueError(f"{path}: not a state dict but a {type(state).__name__}")
        # BatchNorm's num_batches_tracked counters are bookkeeping, not weights: neither loaded nor reported
        weights = {
            _strip_wrappers(key): value
            for key, value in state.items()
            if isinstance(value, Tensor) and not key.endswith("num_batches_tracked")
        }
        own = {
            key: value for key, value in self.state_dict().items() if not key.endswith("num_batches_tracked")
        }
        usable = {key: value for key, value in weights.items() if key.startswith(_RESNET_PREFIXES)}
        matched = {
            key: value for key, value in usable.items() if key in own and own[key].shape == value.shape
        }
        mismatches = tuple(
            f"{key}: file {tuple(value.shape)} vs encoder {tuple(own[key].shape)}"
            for key, value in sorted(usable.items())
            if key in own and key not in matched
        )
        if not matched:
            raise ValueError(f"{path}: no tensor fits the image encoder (is it a ResNet state dict?)")
        self.load_state_dict(matched, strict=False)
        return PretrainedReport(
            loaded=tuple(sorted(matched)),
            shape_mismatches=mismatches,
            missing=tuple(sorted(set(own) - set(usable))),
            unused=tuple(sorted(set(weights) - set(own))),
        )


def _strip_wrappers(key: str) -> str:
    while key.startswith(_WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


class ImageBranch(nn.Module):
    """images (B*M, 3, h, w) -> (B*M, C, h/s, w/s), s = image_output_stride: an FPN-like top-down decoder
    (1x1 laterals, bilinear upsample-add, one 3x3 conv) so the sampled features see both detail and context.

    The encoder is config.image_backbone's: the ResNet-like `ImageEncoder` ("scratch") or EfficientNet-Lite0's
    first stages (`Lite0Encoder`, ImageNet weights through backbones.load_backbone_weights). With
    image_backbone_frozen the encoder takes no gradient and its BatchNorm statistics stay as loaded (it stays
    in eval mode when the model trains); the decoder still trains.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.frozen = config.image_backbone_frozen
        self.encoder = (
            Lite0Encoder() if config.image_backbone == "efficientnet_lite0" else ImageEncoder(config)
        )
        if self.frozen:
            self.encoder.requires_grad_(False)
        channels = config.image_feature_dim
        levels = self.encoder.widths[1:] if config.image_output_stride == 8 else self.encoder.widths
        self.laterals = nn.ModuleList(nn.Conv2d(width, channels, 1) for width in levels)
        self.smooth = conv_bn_act(channels, channels, 3, leaky=False)

    def forward(self, images: Tensor) -> Tensor:
        scales = self.encoder(images)[-len(self.laterals) :]
        x = self.laterals[-1](scales[-1])
        for lateral, skip in zip(self.laterals[-2::-1], scales[-2::-1], strict=True):
            x = lateral(skip) + functional.interpolate(x, size=skip.shape[-2:], mode="bilinear")
        return self.smooth(x)

    def train(self, mode: bool = True) -> ImageBranch:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self
