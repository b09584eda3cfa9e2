"""Point-to-pixel fusion: sample each camera's 2D features at the points' projections, pool across the views
that see a point, and add the result to the 3D feature through a learned gate."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

from xkd_ros.model.config import ModelConfig
from xkd_ros.model.layers import linear_bn_act


def sample_views(image_features: Tensor, point_uv: Tensor, frame_sizes: list[int] | None) -> Tensor:
    """(B*M, C, h, w) features at every point's projection in each camera of its frame -> (N, M, C).

    `frame_sizes` splits the points into their frames (None: one frame, as an exported model sees). Bilinear,
    align_corners=False, border padding (a point in the last half pixel reads the edge). Two ways to the same
    values (a test holds them to 1e-12), each the fast one where it runs: an exported graph gathers pixel rows
    (`gather_views`), since ONNX Runtime's GridSample kernel spent 46 of the model's 82 ms on 2 CPU cores;
    eager PyTorch (training, the torch backend) calls grid_sample, whose kernel beats the gathers there.
    """
    if torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
        return gather_views(image_features, point_uv, frame_sizes)
    cameras = point_uv.shape[1]
    chunks = [point_uv] if frame_sizes is None else list(point_uv.split(frame_sizes))
    sampled = []
    for frame, uv in enumerate(chunks):  # once per frame: a batch is a few frames
        grid = uv.transpose(0, 1).unsqueeze(1)  # (M, 1, N_b, 2)
        views = image_features[frame * cameras : (frame + 1) * cameras]
        values = functional.grid_sample(views, grid, "bilinear", padding_mode="border", align_corners=False)
        sampled.append(values.squeeze(2).permute(2, 0, 1))  # (N_b, M, C)
    return sampled[0] if len(sampled) == 1 else torch.cat(sampled)


def gather_views(image_features: Tensor, point_uv: Tensor, frame_sizes: list[int] | None) -> Tensor:
    """`sample_views` by `gather_slots`, every point at every camera of its frame."""
    cameras = point_uv.shape[1]
    view = torch.arange(cameras, device=point_uv.device).unsqueeze(0)  # (1, M)
    if frame_sizes is not None and len(frame_sizes) > 1:
        frame = torch.repeat_interleave(
            torch.arange(len(frame_sizes), device=point_uv.device),
            torch.tensor(frame_sizes, device=point_uv.device),
        )
        view = view + frame.unsqueeze(1) * cameras  # (N, M)
    return gather_slots(image_features, point_uv, view)


def gather_slots(image_features: Tensor, uv: Tensor, view: Tensor) -> Tensor:
    """(views, C, h, w) features bilinearly sampled at uv (N, V, 2) in view `view` (N, V) (or broadcast to
    it) -> (N, V, C), as grid_sample(align_corners=False, padding_mode="border"): four gathers of C-float
    pixel rows and their weights (Gather, Floor, Clip: ops every ONNX runtime and TensorRT run fast). The
    exported graph samples only the visible (point, camera) pairs (xkd_ros.preprocess.fusion_slots)."""
    views, channels, height, width = image_features.shape
    table = image_features.permute(0, 2, 3, 1).reshape(views * height * width, channels)  # a row per pixel
    x = (((uv[..., 0] + 1) * width - 1) / 2).clamp(0, width - 1)
    y = (((uv[..., 1] + 1) * height - 1) / 2).clamp(0, height - 1)
    x0, y0 = x.floor(), y.floor()
    wx, wy = (x - x0).unsqueeze(2), (y - y0).unsqueeze(2)
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=width - 1), (y0 + 1).clamp(max=height - 1)
    row0, row1 = (view * height + y0) * width, (view * height + y1) * width
    top = table[row0 + x0] * (1 - wx) + table[row0 + x1] * wx
    bottom = table[row1 + x0] * (1 - wx) + table[row1 + x1] * wx
    return top * (1 - wy) + bottom * wy


class ViewFusion(nn.Module):
    """f3 (N, D), per-view 2D features (N, M, C), point_visible (N, M) -> fused (N, D).

    "gated" pools the visible views by their mean; "attention" weights them by their agreement with the
    point's own 3D feature (a view that sees an occluder disagrees). The gate decides per channel how much
    of the 2D feature to add; points no camera sees keep f3 unchanged, so the fused head degrades to LiDAR.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.query = (
            nn.Linear(config.feature_dim, config.image_feature_dim) if config.fusion == "attention" else None
        )
        self.project = linear_bn_act(config.image_feature_dim, config.feature_dim)
        self.gate = nn.Linear(2 * config.feature_dim, config.feature_dim)

    def pool_views(self, f3: Tensor, view_features: Tensor, point_visible: Tensor) -> Tensor:
        """(N, C): the visible views' features, averaged or attention-weighted; zero where no view sees it."""
        if self.query is None:
            weights = point_visible / point_visible.sum(dim=1, keepdim=True).clamp(min=1.0)
        else:
            scores = torch.bmm(view_features, self.query(f3).unsqueeze(2)).squeeze(2)
            scores = scores.masked_fill(point_visible <= 0, -1e4)  # finite: no NaN when no view sees a point
            weights = torch.softmax(scores / view_features.shape[2] ** 0.5, dim=1) * point_visible
        # batched (1, M) x (M, C) products: several times faster on CPU than a broadcast multiply and sum
        return torch.bmm(weights.unsqueeze(1), view_features).squeeze(1)

    def forward(self, f3: Tensor, view_features: Tensor, point_visible: Tensor) -> Tensor:
        f2 = self.project(self.pool_views(f3, view_features, point_visible))
        gate = torch.sigmoid(self.gate(torch.cat([f3, f2], dim=1)))
        # a sum, not amax: it is 0 over no views at all (M = 0), where a max has no value
        seen = (point_visible.sum(dim=1, keepdim=True) > 0).to(f3.dtype)
        return f3 + seen * gate * f2
