"""The xModel-KD network in PyTorch: the fusion model, the LiDAR-only baseline and the export wrapper.

Needs the `train` extra (torch); inference without torch goes through xkd_ros.inference and an ONNX file.
"""

from xkd_ros.model.backbones import Lite0Encoder, PretrainedReport, load_backbone_weights
from xkd_ros.model.config import FUSION_KINDS, IMAGE_BACKBONES, POINT_CHANNELS, RANGE_CHANNELS, ModelConfig
from xkd_ros.model.export import FUSION_INPUTS, LIDAR_INPUTS, ONNX_OPSET, SegmentationExport, export_onnx
from xkd_ros.model.fusion import ViewFusion, gather_views, sample_views
from xkd_ros.model.image_branch import ImageBranch, ImageEncoder
from xkd_ros.model.network import FusionModel, LidarOnlyModel, build_model
from xkd_ros.model.range_branch import RangeBranch, gather_pixels

__all__ = [
    "FUSION_INPUTS",
    "FUSION_KINDS",
    "IMAGE_BACKBONES",
    "LIDAR_INPUTS",
    "ONNX_OPSET",
    "POINT_CHANNELS",
    "RANGE_CHANNELS",
    "FusionModel",
    "ImageBranch",
    "ImageEncoder",
    "LidarOnlyModel",
    "Lite0Encoder",
    "ModelConfig",
    "PretrainedReport",
    "RangeBranch",
    "SegmentationExport",
    "ViewFusion",
    "build_model",
    "export_onnx",
    "gather_pixels",
    "gather_views",
    "load_backbone_weights",
    "sample_views",
]
