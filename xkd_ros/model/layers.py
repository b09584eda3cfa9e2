"""Small building blocks, standard ops only, so every export target (ONNX, TensorRT) takes them."""

from __future__ import annotations

from torch import Tensor, nn

Stride = int | tuple[int, int]


def activation(leaky: bool) -> nn.Module:
    """LeakyReLU in the LiDAR branch (CENet, FRNet), ReLU in the ResNet-like one (its pretrained weights)."""
    return nn.LeakyReLU(0.1, inplace=True) if leaky else nn.ReLU(inplace=True)


def conv_bn_act(in_channels: int, out_channels: int, kernel: int, stride: Stride = 1, leaky: bool = True):
    """Conv (no bias: the BatchNorm has one) + BatchNorm + activation, 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        activation(leaky),
    )


def linear_bn_act(in_features: int, out_features: int) -> nn.Sequential:
    """One per-point MLP layer; the BatchNorm folds into the Linear at export."""
    return nn.Sequential(
        nn.Linear(in_features, out_features, bias=False), nn.BatchNorm1d(out_features), activation(True)
    )


class BasicBlock(nn.Module):
    """The ResNet basic block, with torchvision's attribute names so ResNet weights load by key."""

    def __init__(self, in_channels: int, out_channels: int, stride: Stride = 1, leaky: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = activation(leaky)
        self.downsample = None
        if stride not in (1, (1, 1)) or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(out)) + shortcut)


def stage(in_channels: int, out_channels: int, blocks: int, stride: Stride, leaky: bool) -> nn.Sequential:
    """`blocks` basic blocks, the first one strided (torchvision's `layerN`)."""
    return nn.Sequential(
        BasicBlock(in_channels, out_channels, stride, leaky),
        *(BasicBlock(out_channels, out_channels, 1, leaky) for _ in range(blocks - 1)),
    )
