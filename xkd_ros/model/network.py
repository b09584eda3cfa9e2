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

    forward(inputs) -> fused_logits, lidar_logits (N, K); with embeddings=True also point_embedding (N, E),
    pixel_embedding (N, M, E) and image_embedding (frames * M, E, h, w), the pixel projection of the whole
    2D feature map (stride image_output_stride), all L2-normalised over E, for the cross-modal contrastive
    pretraining (pixel pairs, or SLidR's superpixel pooling of image_embedding); with teacher=True also
    teacher_logits (N, teacher_classes) from the 3D feature f3 alone, the student of 2D -> 3D distillation
    from a frozen image teacher, so it trains the 3D branch for points no camera sees at inference too.
    Neither flag is set by the export, so the deployed graph carries no projection or teacher head.
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
        if config.teacher_classes > 0:
            self.teacher_head = nn.Sequential(
                linear_bn_act(config.feature_dim, config.feature_dim),
                nn.Linear(config.feature_dim, config.teacher_classes),
            )

    def forward(
        self, inputs: dict[str, Tensor], embeddings: bool = False, teacher: bool = False
    ) -> dict[str, Tensor]:
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
        if teacher and not hasattr(self, "teacher_head"):
            raise ValueError("teacher=True needs a teacher head: set model.teacher_classes > 0")
        f3 = self.range_branch(range_image, inputs["point_features"], inputs["point_index"])
        if cameras == 0:  # a LiDAR-only rig, or no image arrived: nothing to sample, f3 is the fused feature
            feature_map = None
            view_features = f3.new_zeros(len(f3), 0, self.config.image_feature_dim)
            fused = f3
        else:
            feature_map = self.image_branch(images)
            view_features = sample_views(feature_map, point_uv, frame_sizes)
            fused = self.fusion(f3, view_features, inputs["point_visible"])
        outputs = {"fused_logits": self.fused_head(fused), "lidar_logits": self.lidar_head(f3)}
        if embeddings:
            outputs["point_embedding"] = functional.normalize(self.point_projection(f3), dim=-1)
            outputs["pixel_embedding"] = functional.normalize(self.pixel_projection(view_features), dim=-1)
            outputs["image_embedding"] = self._image_embedding(feature_map, images)
        if teacher:
            outputs["teacher_logits"] = self.teacher_head(f3)
        return outputs

    def _image_embedding(self, feature_map: Tensor | None, images: Tensor) -> Tensor:
        """pixel_projection on every pixel of the 2D feature map, (views, E, h, w); with no cameras an empty
        map of the size the images would have given."""
        if feature_map is None:
            stride = self.config.image_output_stride
            height, width = (-(-size // stride) for size in images.shape[-2:])
            return images.new_zeros(0, self.config.embedding_dim, height, width)
        projected = self.pixel_projection(feature_map.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return functional.normalize(projected, dim=1)


def build_model(config: ModelConfig) -> FusionModel | LidarOnlyModel:
    """The network a config describes: FusionModel, or LidarOnlyModel when config.use_images is False."""
    return FusionModel(config) if config.use_images else LidarOnlyModel(config)
