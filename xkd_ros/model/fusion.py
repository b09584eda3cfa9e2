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

    `frame_sizes` splits the points into their frames (None: one frame). The Python loop runs once per frame
    (a batch is a few frames; an exported model sees one), each a single grid_sample over the M cameras.
    Border padding: a point in the last half pixel of an image (u in [W - 0.5, W)) reads the edge, not zeros.
    """
    cameras = point_uv.shape[1]
    chunks = [point_uv] if frame_sizes is None else list(point_uv.split(frame_sizes))
    sampled = []
    for frame, uv in enumerate(chunks):
        grid = uv.transpose(0, 1).unsqueeze(1)  # (M, 1, N_b, 2)
        views = image_features[frame * cameras : (frame + 1) * cameras]
        values = functional.grid_sample(views, grid, "bilinear", padding_mode="border", align_corners=False)
        sampled.append(values.squeeze(2).permute(2, 0, 1))  # (N_b, M, C)
    return sampled[0] if len(sampled) == 1 else torch.cat(sampled)


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
        seen = (point_visible.amax(dim=1, keepdim=True) > 0).to(f3.dtype)
        return f3 + seen * gate * f2
