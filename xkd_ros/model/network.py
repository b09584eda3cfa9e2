"""The xModel-KD networks: the camera-LiDAR fusion model (fused head + LiDAR-only head on the shared 3D
feature, the distillation's teacher and student) and the LiDAR-only baseline with the same 3D branch."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional

from xkd_ros.model.config import ModelConfig
from xkd_ros.model.fusion import ViewFusion, sample_views
from xkd_ros.model.image_branch import ImageBranch
from xkd_ros.model.layers import linear_bn_act
from xkd_ros.model.range_branch import RangeBranch


def segmentation_head(config: ModelConfig) -> nn.Sequential:
    """Per-point classifier: one hidden layer, then logits over num_classes."""
    return nn.Sequential(
        linear_bn_act(config.feature_dim, config.feature_dim),
        nn.Linear(config.feature_dim, config.num_classes),
    )


class LidarOnlyModel(nn.Module):
    """The LiDAR-only baseline: the fusion model's 3D branch and LiDAR head, under the same attribute names,
    so a fusion checkpoint's distilled student loads into it (load_state_dict(strict=False))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.range_branch = RangeBranch(config)
        self.lidar_head = segmentation_head(config)

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """`lidar_logits` (N, K) from range_image, point_features and point_index."""
        f3 = self.range_branch(inputs["range_image"], inputs["point_features"], inputs["point_index"])
        return {"lidar_logits": self.lidar_head(f3)}


class FusionModel(nn.Module):
    """Range-view 3D branch + multi-camera 2D branch, fused per point (xModel-KD).

    Rig-agnostic: M = point_uv.shape[1] cameras a frame, any M from 0 (images has frames * M rows, each
    frame's cameras in its rig's order), all through one shared image branch; and any range-image height
    (the rig's beam count). With M = 0 the image branch does not run and the fused feature is f3, so the
    fused head sees what it sees for a point no camera covers.

    forward(inputs) -> fused_logits, lidar_logits (N, K); with embeddings=True also point_embedding (N, E)
    and pixel_embedding (N, M, E), L2-normalised, for the cross-modal contrastive pretraining (only then, so
    the exported graph carries no projection heads).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.range_branch = RangeBranch(config)
        self.lidar_head = segmentation_head(config)
        self.image_branch = ImageBranch(config)
        self.fusion = ViewFusion(config)
        self.fused_head = segmentation_head(config)
        self.point_projection = nn.Linear(config.feature_dim, config.embedding_dim)
        self.pixel_projection = nn.Linear(config.image_feature_dim, config.embedding_dim)

    def forward(self, inputs: dict[str, Tensor], embeddings: bool = False) -> dict[str, Tensor]:
        """Inputs as xkd_ros.preprocess names them; point_batch_sizes is needed when a batch has > 1 frame."""
        range_image, images, point_uv = inputs["range_image"], inputs["images"], inputs["point_uv"]
        frames, cameras = range_image.shape[0], point_uv.shape[1]
        if images.shape[0] != frames * cameras:
            raise ValueError(
                f"images: {images.shape[0]} rows for {frames} frames of {cameras} cameras (point_uv); "
                f"expected {frames * cameras}"
            )
        frame_sizes = None
        if "point_batch_sizes" in inputs:
            frame_sizes = [int(size) for size in inputs["point_batch_sizes"].tolist()]
            if len(frame_sizes) != frames:
                raise ValueError(f"point_batch_sizes has {len(frame_sizes)} entries for {frames} frames")
        elif frames != 1:
            raise ValueError(f"point_batch_sizes is needed to split the points of {frames} frames")
        f3 = self.range_branch(range_image, inputs["point_features"], inputs["point_index"])
        if cameras == 0:  # a LiDAR-only rig, or no image arrived: nothing to sample, f3 is the fused feature
            view_features = f3.new_zeros(len(f3), 0, self.config.image_feature_dim)
            fused = f3
        else:
            view_features = sample_views(self.image_branch(images), point_uv, frame_sizes)
            fused = self.fusion(f3, view_features, inputs["point_visible"])
        outputs = {"fused_logits": self.fused_head(fused), "lidar_logits": self.lidar_head(f3)}
        if embeddings:
            outputs["point_embedding"] = functional.normalize(self.point_projection(f3), dim=-1)
            outputs["pixel_embedding"] = functional.normalize(self.pixel_projection(view_features), dim=-1)
        return outputs


def build_model(config: ModelConfig) -> FusionModel | LidarOnlyModel:
    """The network a config describes: FusionModel, or LidarOnlyModel when config.use_images is False."""
    return FusionModel(config) if config.use_images else LidarOnlyModel(config)
