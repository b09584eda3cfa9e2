"""The 3D branch: a range-view CNN (CENet / FRNet style) whose features are gathered back to every point and
fused with a per-point MLP, so points that share a range pixel still get their own feature."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn
from torch.nn import functional

from xkd_ros.model.config import POINT_CHANNELS, RANGE_CHANNELS, ModelConfig
from xkd_ros.model.layers import conv_bn_act, linear_bn_act, stage


def gather_pixels(feature_map: Tensor, point_index: Tensor) -> Tensor:
    """(B, C, H, W) features at each point's (batch, row, col) pixel -> (N, C); a (N, 2) (row, col) index
    is one frame's, as xkd_ros.preprocess gives it to the exported model.

    One flat index into a (B*H*W, C) table: a single Gather in ONNX.
    """
    batch, channels, height, width = feature_map.shape
    table = feature_map.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    if point_index.shape[1] == 2:
        flat = point_index[:, 0] * width + point_index[:, 1]
    else:
        flat = (point_index[:, 0] * height + point_index[:, 1]) * width + point_index[:, 2]
    return table[flat]


class RangeBranch(nn.Module):
    """range_image (B, 6, H, W), point_features (N, 5), point_index (N, 3) -> per-point 3D feature (N, D).

    The stages' outputs are upsampled to the first stage's resolution and concatenated (CENet's multi-scale
    head), reduced to D channels, upsampled to the full range image and read at each point's pixel, where
    `fuse` joins them with the point MLP's feature (`forward` says in which order it computes this).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        stem, *widths = config.range_widths
        self.input_norm = nn.BatchNorm2d(RANGE_CHANNELS)
        self.stem = nn.Sequential(conv_bn_act(RANGE_CHANNELS, stem, 3), conv_bn_act(stem, stem, 3))
        inputs = (stem, *widths[:-1])
        self.stages = nn.ModuleList(
            stage(c_in, c_out, config.range_blocks, tuple(stride), leaky=True)
            for c_in, c_out, stride in zip(inputs, widths, config.range_strides, strict=True)
        )
        self.neck = conv_bn_act(sum(widths), config.feature_dim, 1)
        self.point_mlp = nn.Sequential(
            nn.BatchNorm1d(POINT_CHANNELS),
            linear_bn_act(POINT_CHANNELS, config.point_width),
            linear_bn_act(config.point_width, config.point_width),
        )
        self.fuse = nn.Sequential(
            linear_bn_act(config.feature_dim + config.point_width, config.feature_dim),
            linear_bn_act(config.feature_dim, config.feature_dim),
        )

    def forward(self, range_image: Tensor, point_features: Tensor, point_index: Tensor) -> Tensor:
        """The CENet head and the point fusion computed where each linear step is cheapest, with the
        weights of the plain formulation (`neck` over the concatenated upsampled scales, `fuse` over the
        concatenated pixel and point features):

        * the neck's 1x1 convolution is applied to each scale at its own resolution and the results are
          upsampled and summed: bilinear upsampling commutes with a 1x1 convolution, so this is the neck
          of the concatenation without upsampling and concatenating 272 channels (8k pixels on a 32-beam
          scan) first;
        * the first `fuse` layer's pixel half is applied to the map before it is upsampled and gathered (a
          per-channel linear map commutes with both): once per range pixel at the first stage's
          resolution instead of once per point, and no (N, D + point_width) concatenation.
        Equal to the plain formulation up to float rounding (test_model), in training and in the export.
        """
        x = self.stem(self.input_norm(range_image))
        scales = []
        for layer in self.stages:
            x = layer(x)
            scales.append(x)
        size = scales[0].shape[-2:]
        neck_conv, neck_norm, neck_act = self.neck
        weight, bias = self._folded(neck_conv.weight, neck_norm)
        bounds = list(itertools.accumulate((scale.shape[1] for scale in scales), initial=0))
        # slices, not split: an exported graph keeps the weights constant (quantizable as weights)
        mixed = functional.conv2d(scales[0], weight[:, : bounds[1]], bias)
        for scale, start, end in zip(scales[1:], bounds[1:-1], bounds[2:], strict=True):
            part = functional.conv2d(scale, weight[:, start:end])
            mixed = mixed + functional.interpolate(part, size=size, mode="bilinear")
        feature_map = neck_act(neck_norm(mixed) if bias is None else mixed)
        linear, norm, act = self.fuse[0]
        weight, bias = self._folded(linear.weight, norm)
        width = feature_map.shape[1]
        pixel_part = functional.conv2d(feature_map, weight[:, :width, None, None])
        pixel_part = functional.interpolate(pixel_part, size=range_image.shape[-2:], mode="bilinear")
        hidden = gather_pixels(pixel_part, point_index) + functional.linear(
            self.point_mlp(point_features), weight[:, width:], bias
        )
        return self.fuse[1:](act(norm(hidden) if bias is None else hidden))

    def _folded(self, weight: Tensor, norm: nn.Module) -> tuple[Tensor, Tensor | None]:
        """`weight` (out first) with the BatchNorm after it folded in, and the bias that leaves (added once,
        by the first of the summed convolutions or linear maps), in eval mode: the export folds a plain
        Conv's or Gemm's BatchNorm itself, not one after a sum of them. In training the weight as it is and
        None: the BatchNorm runs on the batch."""
        if self.training:
            return weight, None
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        shape = (-1,) + (1,) * (weight.dim() - 1)
        return weight * scale.view(shape), norm.bias - norm.running_mean * scale
