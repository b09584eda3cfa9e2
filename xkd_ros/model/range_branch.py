"""The 3D branch: a range-view CNN (CENet / FRNet style) whose features are gathered back to every point and
fused with a per-point MLP, so points that share a range pixel still get their own feature."""

from __future__ import annotations

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
    head), reduced to D channels, upsampled to the full range image and read at each point's pixel.
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
        x = self.stem(self.input_norm(range_image))
        scales = []
        for layer in self.stages:
            x = layer(x)
            scales.append(x)
        size = scales[0].shape[-2:]
        pyramid = [scales[0]] + [functional.interpolate(s, size=size, mode="bilinear") for s in scales[1:]]
        feature_map = self.neck(torch.cat(pyramid, dim=1))
        feature_map = functional.interpolate(feature_map, size=range_image.shape[-2:], mode="bilinear")
        pixel_features = gather_pixels(feature_map, point_index)
        return self.fuse(torch.cat([pixel_features, self.point_mlp(point_features)], dim=1))
