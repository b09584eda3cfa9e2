"""The node's output cloud: every input point with its label, confidence and class colour, for rviz and logs.

One fixed layout (x, y, z, intensity, label, fused, confidence, rgb), filled by one bulk copy. `fused` is 1
where a camera's features went into the point's label (the fused head), 0 where the LiDAR-only head labelled
it: the share of the scene the cameras really cover, visible in rviz by colouring on that field.
Points keep their order and NaN points stay (is_dense False), so the output lines up with the input cloud
index for index. `rgb` is packed as PCL and rviz's RGB8 colour transformer expect: the bits 0x00RRGGBB read
as a float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from xkd_ros.classes import IGNORE_COLOR, IGNORE_INDEX
from xkd_ros.msgs.point_cloud2 import create_cloud, dtype_from_fields

__all__ = ["LABELED_CLOUD_FIELDS", "class_legend_markers", "create_labeled_cloud", "pack_rgb", "unpack_rgb"]

LABELED_CLOUD_FIELDS = (
    PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
    PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
    PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
    PointField(name="intensity", offset=12, datatype=PointField.FLOAT32, count=1),
    PointField(name="label", offset=16, datatype=PointField.UINT8, count=1),
    PointField(name="fused", offset=17, datatype=PointField.UINT8, count=1),
    PointField(name="confidence", offset=20, datatype=PointField.FLOAT32, count=1),
    PointField(name="rgb", offset=24, datatype=PointField.FLOAT32, count=1),
)
_POINT_STEP = 28
_DTYPE = dtype_from_fields(LABELED_CLOUD_FIELDS, _POINT_STEP)


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB -> (N,) float32 whose bits are 0x00RRGGBB (rviz RGB8, PCL's packed rgb)."""
    colors = np.asarray(colors)
    if colors.ndim != 2 or colors.shape[1] != 3 or colors.dtype != np.uint8:
        raise ValueError(f"colors: expected (N, 3) uint8 RGB, got {colors.shape} {colors.dtype}")
    rgb = colors.astype(np.uint32)
    return ((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).view(np.float32)


def unpack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(N,) float32 packed by `pack_rgb` -> (N, 3) uint8 RGB."""
    bits = np.ascontiguousarray(rgb, dtype=np.float32).view(np.uint32)
    return np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=-1).astype(np.uint8)


def create_labeled_cloud(
    header: Header,
    xyz: np.ndarray,
    intensity: np.ndarray | None,
    labels: np.ndarray,
    confidence: np.ndarray,
    colors: np.ndarray,
    fused: np.ndarray | None = None,
) -> PointCloud2:
    """A PointCloud2 of LABELED_CLOUD_FIELDS: `xyz` (N, 3), `intensity` (N,) (None: zeros, the layout stays
    fixed for consumers), `labels` (N,) uint8 class ids or IGNORE_INDEX, `confidence` (N,) float32, the
    class palette `colors` (K, 3) uint8, which colours each point (ignored points grey), and `fused` (N,)
    bool, a camera's features went into the label (None: 0 everywhere)."""
    xyz = np.asarray(xyz)
    n = len(xyz)
    labels, confidence = np.asarray(labels), np.asarray(confidence)
    if xyz.shape != (n, 3):
        raise ValueError(f"xyz: expected (N, 3), got {xyz.shape}")
    named = (("intensity", intensity), ("labels", labels), ("confidence", confidence), ("fused", fused))
    for name, array in named:
        if array is not None and np.shape(array) != (n,):
            raise ValueError(f"{name}: expected ({n},) for {n} points, got {np.shape(array)}")
    if labels.dtype != np.uint8:
        raise ValueError(f"labels: expected uint8, got {labels.dtype}")
    colors = np.asarray(colors)
    if (
        colors.ndim != 2
        or colors.shape[1] != 3
        or colors.dtype != np.uint8
        or not 0 < len(colors) < IGNORE_INDEX
    ):
        # uint8 checked: numpy would wrap a colour of 300 to 44 when filling the palette, silently
        raise ValueError(
            f"colors: expected a (K, 3) uint8 class palette with K < {IGNORE_INDEX}, "
            f"got {colors.shape} {colors.dtype}"
        )
    unknown = (labels >= len(colors)) & (labels != IGNORE_INDEX)
    if unknown.any():
        raise ValueError(
            f"labels: {np.unique(labels[unknown])[:10].tolist()} not in the palette of {len(colors)} classes"
        )
    palette = np.full((256, 3), IGNORE_COLOR, dtype=np.uint8)
    palette[: len(colors)] = colors
    points = np.zeros(n, dtype=_DTYPE)
    points["x"], points["y"], points["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if intensity is not None:
        points["intensity"] = intensity
    points["label"] = labels
    if fused is not None:
        points["fused"] = fused
    points["confidence"] = confidence
    points["rgb"] = pack_rgb(palette[labels])
    return create_cloud(header, LABELED_CLOUD_FIELDS, points, _POINT_STEP)


def class_legend_markers(names: Sequence[str], colors: np.ndarray, frame_id: str, stamp: Any) -> MarkerArray:
    """The class legend for rviz beside the labelled cloud: one text marker a class ("<id>: <name>" in its
    colour, `colors` (K, 3) uint8), stacked above the ground 20 m to the side in `frame_id` at `stamp`."""
    markers = MarkerArray()
    for index, (name, color) in enumerate(zip(names, colors, strict=True)):
        marker = Marker()
        marker.header.frame_id = frame_id
        marker.header.stamp = stamp
        marker.ns = "class_legend"
        marker.id = index
        marker.type = Marker.TEXT_VIEW_FACING
        marker.action = Marker.ADD
        marker.pose.position.x = 0.0
        marker.pose.position.y = -20.0
        marker.pose.position.z = 2.0 + 1.2 * (len(names) - index)
        marker.pose.orientation.w = 1.0
        marker.scale.z = 1.0
        r, g, b = (float(v) / 255.0 for v in color)
        marker.color.r, marker.color.g, marker.color.b, marker.color.a = r, g, b, 1.0
        marker.text = f"{index}: {name}"
        markers.markers.append(marker)
    return markers
