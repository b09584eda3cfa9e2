"""The one pre-processing path of training, evaluation and the node: scan + images + rig -> network inputs.

numpy and OpenCV only (no torch: the node runs the network with ONNX Runtime), vectorised over points and
pixels. What depends on the sensors comes from the rig, not from this config: the range image's height, row
binning, intensity scale and ego-return radius from its LiDAR profile (`rig.lidar`, xkd_ros.geometry.lidar),
the cameras from its camera list. So one network serves rigs of any beam count and any cameras. `prepare`
returns a `NetworkInputs` whose array names are the ONNX input names:

==============  ============  =======  =================================================================
name            shape         dtype    content
==============  ============  =======  =================================================================
range_image     (6, H, W)     float32  RANGE_CHANNELS range, x, y, z, intensity, valid: per pixel the
                                       NEAREST point (ties: lowest point index); empty pixels 0.
                                       H = rig.lidar.beams, W = config.range_width
point_features  (N, 5)        float32  POINT_FEATURES x, y, z, intensity, range of every point
point_index     (N, 2)        int64    (row, col) of each point's range pixel, also for points that lost
                                       the pixel to a nearer one and for invalid points
images          (M, 3, h, w)  float32  RGB resized to (image_height, image_width) by `resize_image`,
                                       (x/255 - mean) / std: the rig's cameras that have an image, in
                                       the rig's order (`NetworkInputs.cameras`); M = 0 without any
point_uv        (N, M, 2)     float32  grid_sample coordinates (align_corners=False) of each point in
                                       each of those cameras, 0 where not visible
point_visible   (N, M)        float32  1 where the camera sees the point (in front, inside the image,
                                       not occluded), else 0
==============  ============  =======  =================================================================

An exported graph takes the camera part compactly (`NetworkInputs.feed`, GRAPH_INPUT_NAMES): only the
points some camera sees are fused, and only at the cameras that see them, so its cost follows the S visible
points and their V <= M views rather than all N x M pairs (on the nuScenes keyframe 21,753 of 208,128 pairs
are visible; the dense sampling was 44 % of the graph's time):

==============  ============  =======  =================================================================
fused_index     (S,)          int64    the points any camera sees, ascending
fused_uv        (S, V, 2)     float32  point_uv of those points at their visible cameras, in rig order,
                                       padded (fused_visible 0) to V = the most cameras seeing one point
fused_view      (S, V)        int64    the camera (row of images) of each slot
fused_visible   (S, V)        float32  1 for a visible slot, 0 for padding
lidar_index     (U,)          int64    the points no camera sees (U = N - S): the LiDAR-only head's
output_source   (N,)          int64    each point's row among the S fused then U LiDAR-only results
==============  ============  =======  =================================================================

plus, for the caller (not network inputs), `cameras` (the M camera names) and `point_valid` (N,) bool: the
point has finite coordinates and a range above `rig.lidar.min_range` (0: above zero). Invalid points (NaN,
the all-zero "no return" points of organised clouds such as Ouster's, the ego vehicle's own returns nearer
than min_range) keep their place in every per-point array so predictions stay aligned with the cloud, but
get zero features, no visibility and take no part in the range image.

Units: range, x, y and z are raw metres (the network normalises internally); the range feature (range_image
channel 0 and point_features column 4) is clipped to `max_range`, x, y, z are not. z is the height above
the ground, z + `rig.lidar.mount_height` (the LiDAR frame's z otherwise), so rigs that mount their LiDAR at
different heights show the network the same road. Intensity is divided by
`rig.lidar.intensity_scale` (the value of a full-strength return: 255 for ROS Velodyne drivers, 1 for KITTI's
remission), so every sensor feeds the network about 0..1; a non-finite intensity becomes 0.

Range-image geometry (LiDAR frame: x forward, y left, z up):

* column: ``col = floor(0.5 * (1 - atan2(y, x) / pi) * W)``, clipped to [0, W-1]. x forward lands in the
  centre column W/2, the left side (y > 0) left of it, the rear wraps at the image border (as RangeNet++).
* row with a `ring` channel, the highest beam on top: ``row = H - 1 - ring`` for lidar.ring_order
  "bottom_up" (ring 0 the lowest beam: Velodyne, Hesai, the synthetic LiDAR), ``row = ring`` for "top_down"
  (Ouster). Rings must lie in [0, lidar.beams).
* row otherwise, from the elevation ``pitch = atan2(z, hypot(x, y))``: the row of the nearest beam of
  `rig.lidar.beam_elevations_deg()`. For beams evenly spread over the field of view that is
  ``row = floor((fov_up - pitch) / (fov_up - fov_down) * H)``, clipped to [0, H-1].

Camera coordinates: a point projecting to pixel (u, v) of the ORIGINAL image (OpenCV convention, pixel centres
at integers) gets ``x = (u + 0.5) / W_orig * 2 - 1``, ``y = (v + 0.5) / H_orig * 2 - 1``: the coordinate
torch.nn.functional.grid_sample(align_corners=False) expects for the resized image, which covers the same
field of view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

import cv2
import numpy as np

from xkd_ros.geometry import CameraIntrinsics, LidarProfile, Rig, project_visible

if TYPE_CHECKING:
    from xkd_ros.data.frame import Frame

RANGE_CHANNELS = ("range", "x", "y", "z", "intensity", "valid")
# The fractions of its calibrated size an image may come at: libjpeg's scaled decoding (1/2, 1/4, 1/8).
IMAGE_REDUCTIONS = (1, 2, 4, 8)
POINT_FEATURES = ("x", "y", "z", "intensity", "range")
INPUT_NAMES = ("range_image", "point_features", "point_index", "images", "point_uv", "point_visible")
FUSION_SLOT_NAMES = ("fused_index", "fused_uv", "fused_view", "fused_visible", "lidar_index", "output_source")
GRAPH_INPUT_NAMES = INPUT_NAMES[:4] + FUSION_SLOT_NAMES
# What each symbolic axis of input_spec and graph_input_spec counts, for messages.
AXIS_NAMES = {
    "N": "points",
    "M": "cameras",
    "H": "range-image rows",
    "S": "fused points",
    "U": "LiDAR-only points",
    "V": "camera slots",
}
OCCLUSION_SETTINGS = ("footprint", "cell", "none")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Pre-processing settings of earlier versions that describe the sensors, and where they live now: a config
# (an experiment file, an older model's metadata) that still sets one is refused with this pointer rather
# than silently overruled by the rig.
MOVED_TO_RIG = {
    "range_height": "rig.lidar.beams",
    "fov_up_deg": "rig.lidar.fov_up_deg",
    "fov_down_deg": "rig.lidar.fov_down_deg",
    "use_ring": "rig.lidar (a scan's ring field is always used, rig.lidar.ring_order says how it counts)",
    "min_range": "rig.lidar.min_range",
    "cameras": "the rig's cameras (those with an image, in the rig file's order)",
}

__all__ = [
    "AXIS_NAMES",
    "FUSION_SLOT_NAMES",
    "GRAPH_INPUT_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_REDUCTIONS",
    "INPUT_NAMES",
    "MOVED_TO_RIG",
    "POINT_FEATURES",
    "RANGE_CHANNELS",
    "NetworkInputs",
    "PreprocessConfig",
    "batch",
    "check_image",
    "decode_reduction",
    "fusion_slots",
    "graph_input_spec",
    "image_reduction",
    "input_spec",
    "prepare",
    "prepare_frame",
    "resize_image",
]


@dataclass(frozen=True)
class PreprocessConfig:
    """How scans and images become network inputs; one per trained network, stored with it. What describes
    the sensors (beams, field of view, ring order, intensity scale, minimum range, cameras) is the rig's
    (MOVED_TO_RIG), so the same network and config serve any rig.

    range_width: range image columns (its height is the rig's beam count).
    image_width, image_height: every camera image is resized to this (both divisible by 8).
    min_depth: metres in front of a camera a point must be to count as seen.
    occlusion: the occlusion test of `project_points`: "footprint" (the default: a point is hidden only
        behind the surface patch of a nearer LiDAR sample, which keeps grazing road; docs/geometry.md has the
        measurement), "cell" (the nearest point per occlusion_cell-pixel cell of the ORIGINAL image) or
        "none".
    occlusion_cell: cell size in pixels of the "cell" test.
    occlusion_tolerance: metres a point may lie behind the occluding surface (footprint) or behind the
        nearest point of its cell (cell) and still count as seen.
    max_range: metres at which the range feature is clipped (points beyond still get a prediction).
    mean, std: per-channel RGB normalisation of images scaled to 0..1.
    """

    range_width: int = 512
    image_width: int = 240
    image_height: int = 136
    min_depth: float = 0.1
    occlusion: str = "footprint"
    occlusion_cell: int = 8
    occlusion_tolerance: float = 0.5
    max_range: float = 70.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ValueError(f"preprocess.{name}: expected a list, got {value!r}")
            try:
                object.__setattr__(self, name, tuple(float(v) for v in value))
            except (TypeError, ValueError):
                raise ValueError(f"preprocess.{name}: expected numbers, got {value}") from None
        for name in ("min_depth", "occlusion_tolerance", "max_range"):
            value = getattr(self, name)
            if not isinstance(value, float | int | np.number) or isinstance(value, bool):
                raise ValueError(f"preprocess.{name}: expected a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("range_width", "image_width", "image_height", "occlusion_cell"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
                raise ValueError(f"preprocess.{name}: expected a whole number >= 0, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.range_width == 0:
            raise ValueError("preprocess.range_width: must be positive")
        if self.occlusion not in OCCLUSION_SETTINGS:
            raise ValueError(
                f"preprocess.occlusion: expected one of {OCCLUSION_SETTINGS}, got {self.occlusion!r}"
            )
        for name in ("image_width", "image_height"):
            if getattr(self, name) == 0 or getattr(self, name) % 8:
                raise ValueError(
                    f"preprocess.{name}: must be a positive multiple of 8, got {getattr(self, name)}"
                )
        if not self.max_range > 0:
            raise ValueError(f"preprocess.max_range: must be positive, got {self.max_range}")
        for name in ("min_depth", "occlusion_tolerance"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"preprocess.{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3 or not all(np.isfinite(value)) or (name == "std" and min(value) <= 0):
                raise ValueError(f"preprocess.{name}: expected 3 RGB values (std > 0), got {value}")

    @classmethod
    def from_dict(cls, data: Mapping | None, source: str = "") -> PreprocessConfig:
        """Build from parsed YAML: missing keys take their defaults; unknown keys, and the sensor settings
        that moved to the rig (MOVED_TO_RIG), raise ValueError naming them."""
        where = f"{source}: preprocess" if source else "preprocess"
        if data is not None and not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
        data = dict(data or {})
        moved = [key for key in MOVED_TO_RIG if key in data]
        if moved:
            raise ValueError(
                f"{where}.{moved[0]}: not a pre-processing setting any more, it is the rig's now: "
                f"{MOVED_TO_RIG[moved[0]]}; remove it here and set it in the rig file"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown} (known: {sorted(known)})")
        try:
            return cls(**data)
        except ValueError as error:
            if not source:
                raise
            raise ValueError(f"{source}: {error}") from None

    def to_dict(self) -> dict:
        """Plain YAML-safe values (tuples as lists); `from_dict(to_dict())` gives the same config back."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(eq=False)
class NetworkInputs:
    """The network inputs of one frame (see the module docstring for the spec), the names of the M cameras
    they hold (rig order) and `point_valid`."""

    range_image: np.ndarray
    point_features: np.ndarray
    point_index: np.ndarray
    images: np.ndarray
    point_uv: np.ndarray
    point_visible: np.ndarray
    point_valid: np.ndarray
    cameras: tuple[str, ...]

    @property
    def num_points(self) -> int:
        return len(self.point_features)

    @property
    def shape_key(self) -> tuple[int, int]:
        """(H, M): range rows and cameras, what frames of one training batch must share."""
        return self.range_image.shape[1], len(self.cameras)

    def as_dict(self) -> dict[str, np.ndarray]:
        """The six dense network inputs by name (INPUT_NAMES order): what training and eager models take."""
        return {name: getattr(self, name) for name in INPUT_NAMES}

    def feed(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Exactly the arrays an exported graph's inputs `names` ask for: the compact fusion inputs
        (FUSION_SLOT_NAMES) of today's graphs, or the dense ones of graphs exported before them."""
        slots = fusion_slots(self.point_uv, self.point_visible) if FUSION_SLOT_NAMES[0] in names else {}
        try:
            return {name: slots[name] if name in slots else getattr(self, name) for name in names}
        except AttributeError:
            unknown = [name for name in names if name not in slots and name not in INPUT_NAMES]
            raise ValueError(f"graph inputs {unknown}: not network inputs xkd_ros.preprocess makes") from None


def fusion_slots(point_uv: np.ndarray, point_visible: np.ndarray) -> dict[str, np.ndarray]:
    """The compact fusion inputs (FUSION_SLOT_NAMES, module docstring) of dense point_uv (N, M, 2) and
    point_visible (N, M): the same pairs, the invisible ones left out. V is at least 1 (a graph axis of
    size 0 is refused by some runtimes)."""
    points, cameras = point_visible.shape
    pairs = np.flatnonzero(point_visible > 0)  # the visible (point, camera) pairs, by point then camera
    point, camera = np.divmod(pairs, cameras) if cameras else (pairs, pairs)
    count = np.bincount(point, minlength=points)
    fused_index = np.flatnonzero(count)
    lidar_index = np.flatnonzero(count == 0)
    output_source = np.empty(points, dtype=np.int64)
    output_source[fused_index] = np.arange(len(fused_index))
    output_source[lidar_index] = np.arange(len(fused_index), points)
    # a pair's slot: its place among its point's visible cameras (rig order); padding slots stay camera 0
    seen = count[fused_index]
    slot = np.arange(len(pairs)) - np.repeat(np.cumsum(seen) - seen, seen)
    row = output_source[point]
    shape = (len(fused_index), max(1, int(count.max(initial=0))))
    view = np.zeros(shape, dtype=np.int64)
    slot_visible = np.zeros(shape, dtype=np.float32)
    uv = np.zeros((*shape, 2), dtype=np.float32)
    view[row, slot] = camera
    slot_visible[row, slot] = 1
    uv[row, slot] = point_uv[point, camera]
    return {
        "fused_index": fused_index,
        "fused_uv": uv,
        "fused_view": view,
        "fused_visible": slot_visible,
        "lidar_index": lidar_index,
        "output_source": output_source,
    }


def input_spec(config: PreprocessConfig) -> dict[str, tuple[tuple[int | str, ...], np.dtype]]:
    """Shape and dtype of each network input; the axes that vary are named: "N" points, "M" cameras (the
    rig's, 0..), "H" range rows (the rig's beam count)."""
    f32 = np.dtype(np.float32)
    return {
        "range_image": ((len(RANGE_CHANNELS), "H", config.range_width), f32),
        "point_features": (("N", len(POINT_FEATURES)), f32),
        "point_index": (("N", 2), np.dtype(np.int64)),
        "images": (("M", 3, config.image_height, config.image_width), f32),
        "point_uv": (("N", "M", 2), f32),
        "point_visible": (("N", "M"), f32),
    }


def graph_input_spec(config: PreprocessConfig) -> dict[str, tuple[tuple[int | str, ...], np.dtype]]:
    """Shape and dtype of each input of an exported graph (GRAPH_INPUT_NAMES), as `input_spec`; its own
    axes: "S" fused points, "U" LiDAR-only points, "V" camera slots of a fused point."""
    dense, f32, i64 = input_spec(config), np.dtype(np.float32), np.dtype(np.int64)
    return {
        **{name: dense[name] for name in INPUT_NAMES[:4]},
        "fused_index": (("S",), i64),
        "fused_uv": (("S", "V", 2), f32),
        "fused_view": (("S", "V"), i64),
        "fused_visible": (("S", "V"), f32),
        "lidar_index": (("U",), i64),
        "output_source": (("N",), i64),
    }


def prepare_frame(frame: Frame, config: PreprocessConfig) -> NetworkInputs:
    """`prepare` for a data.Frame, with the rig moved to each image's stamp where the poses are known."""
    return prepare(frame.points, frame.channels, frame.images, frame.compensated_rig(), config)


def prepare(
    points: np.ndarray,
    channels: Sequence[str],
    images: Mapping[str, np.ndarray],
    rig: Rig,
    config: PreprocessConfig,
) -> NetworkInputs:
    """Network inputs of one scan (N, C) with named `channels` (x, y, z, intensity, optional ring) and the
    RGB uint8 `images` of cameras of `rig` (each the size its calibration gives, or that divided by 2, 4 or
    8); the rig's cameras without an image take no part."""
    channels = tuple(channels)
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != len(channels):
        raise ValueError(f"points: shape {points.shape} does not match channels {channels}")
    if channels[:3] != ("x", "y", "z"):
        raise ValueError(f"channels: must start with x, y, z, got {channels}")
    if "intensity" not in channels:
        raise ValueError(f"channels: no 'intensity' channel in {channels}")
    points = points.astype(np.float32, copy=False)
    n, lidar = len(points), rig.lidar

    features, distance, valid = _point_features(points, channels.index("intensity"), lidar, config)
    rows, cols = _range_pixels(points, channels, valid, lidar, config)
    point_index = np.empty((n, 2), dtype=np.int64)
    point_index[:, 0], point_index[:, 1] = rows, cols
    range_image = _range_image(features, distance, valid, rows * config.range_width + cols, lidar, config)
    cameras, image_batch, point_uv, point_visible = _cameras(points, valid, images, rig, config)
    return NetworkInputs(
        range_image, features, point_index, image_batch, point_uv, point_visible, valid, cameras
    )


def _point_features(
    points: np.ndarray, intensity_column: int, lidar: LidarProfile, config: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 5) x, y, z + mount_height (height above the ground), intensity / intensity_scale, clipped range
    (zeros for invalid points); unclipped range; validity."""
    n = len(points)
    features = np.empty((n, len(POINT_FEATURES)), dtype=np.float32)
    features[:, :3] = points[:, :3]
    squared = np.einsum("ij,ij->i", features[:, :3], features[:, :3])  # NaN propagates; inf overflows to inf
    # A division, not a product with 1/scale: a 0..1 scan and the same scan in 0..255 (scale 255) give
    # bit-identical features.
    np.divide(points[:, intensity_column], np.float32(lidar.intensity_scale), out=features[:, 3])
    valid = np.isfinite(squared) & (squared > np.float32(lidar.min_range) ** 2)
    if lidar.mount_height:
        features[:, 2] += np.float32(lidar.mount_height)
    if not valid.all():
        invalid = np.flatnonzero(~valid)  # an index, not the mask: a third of the time for (N, 5) rows
        features[invalid] = 0
        squared[invalid] = 0
    distance = np.sqrt(squared)
    np.minimum(distance, np.float32(config.max_range), out=features[:, 4])
    intensity = features[:, 3]
    intensity[~np.isfinite(intensity)] = 0
    return features, distance, valid


def _range_pixels(
    points: np.ndarray,
    channels: tuple[str, ...],
    valid: np.ndarray,
    lidar: LidarProfile,
    config: PreprocessConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column (int64) of every point; invalid points are binned as if at the origin."""
    h, w = lidar.beams, config.range_width
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    if not valid.all():
        invalid = np.flatnonzero(~valid)
        x, y, z = x.copy(), y.copy(), z.copy()  # and zeros at the invalid points: a third of np.where's time
        for c in (x, y, z):
            c[invalid] = 0
    azimuth = np.arctan2(y, x)
    cols = np.floor((0.5 - azimuth * np.float32(0.5 / np.pi)) * np.float32(w)).astype(np.int64)
    np.clip(cols, 0, w - 1, out=cols)
    if "ring" in channels:
        ring = points[:, channels.index("ring")]
        bad = valid & ~((ring >= 0) & (ring < h))  # NaN rings included
        if bad.any():
            raise ValueError(
                f"ring: values must lie in [0, lidar.beams={h}), got {ring[bad].min()}..{ring[bad].max()} "
                f"for {int(bad.sum())} points; set the rig's lidar.beams (or lidar.sensor) to the scanner's"
            )
        if not valid.all():  # invalid points keep a usable ring, the others row 0 (clipped)
            ring = np.where(np.isfinite(ring), ring, np.float32(0))
        rows = np.floor(ring).astype(np.int64)
        if lidar.ring_order == "bottom_up":
            np.subtract(h - 1, rows, out=rows)
        np.clip(rows, 0, h - 1, out=rows)
    elif lidar.elevations_deg:
        # Nearest beam: rows are cut halfway between neighbouring beams' elevations (ascending here).
        pitch = np.arctan2(z, np.hypot(x, y))
        elevations = np.deg2rad(lidar.beam_elevations_deg()[::-1])
        cuts = ((elevations[:-1] + elevations[1:]) / 2).astype(np.float32)
        rows = (h - 1) - np.searchsorted(cuts, pitch).astype(np.int64)
    else:
        pitch = np.arctan2(z, np.hypot(x, y))
        up, fov = np.deg2rad(lidar.fov_up_deg), np.deg2rad(lidar.fov_up_deg - lidar.fov_down_deg)
        rows = np.floor((np.float32(up) - pitch) * np.float32(h / fov)).astype(np.int64)
        np.clip(rows, 0, h - 1, out=rows)
    return rows, cols


def _range_image(
    features: np.ndarray,
    distance: np.ndarray,
    valid: np.ndarray,
    pixel: np.ndarray,
    lidar: LidarProfile,
    config: PreprocessConfig,
) -> np.ndarray:
    """(6, H, W) image of the nearest valid point per pixel (ties broken by the lower point index)."""
    h, w = lidar.beams, config.range_width
    image = np.zeros((len(RANGE_CHANNELS), h * w), dtype=np.float32)
    index = np.flatnonzero(valid)
    if len(index) == 0:
        return image.reshape(-1, h, w)
    # One int64 key per point: the bits of its (positive, unclipped) float32 range, which order like the
    # values, above its index; the per-pixel minimum is the nearest point, deterministically.
    key = (distance[index].view(np.int32).astype(np.int64) << 32) | index
    best = np.full(h * w, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, pixel[index], key)
    filled = np.flatnonzero(best != np.iinfo(np.int64).max)
    winner = best[filled] & 0xFFFFFFFF
    chosen = features[winner]
    image[0, filled] = chosen[:, 4]
    image[1:5, filled] = chosen[:, :4].T
    image[5, filled] = 1
    return image.reshape(-1, h, w)


def check_image(camera: str, image: np.ndarray, intrinsics: CameraIntrinsics) -> None:
    """ValueError naming the camera unless `image` is uint8 RGB of its calibrated size (or that divided by
    2, 4 or 8: `image_reduction`)."""
    if (
        image.ndim != 3
        or image.shape[2] != 3
        or image.dtype != np.uint8
        or image_reduction(image.shape, intrinsics) is None
    ):
        raise ValueError(
            f"images.{camera}: expected ({intrinsics.height}, {intrinsics.width}, 3) uint8 RGB as calibrated "
            f"(or that size divided by {', '.join(map(str, IMAGE_REDUCTIONS[1:]))}), "
            f"got {image.shape} {image.dtype}"
        )


def image_reduction(shape: Sequence[int], intrinsics: CameraIntrinsics) -> int | None:
    """r when an image of `shape` is its camera's calibrated size divided by r (1, 2, 4 or 8: a JPEG decoded
    at a reduced scale, or a sensor binned without a new calibration), None for any other size.

    Camera coordinates are normalised by the calibrated size (module docstring), so such an image covers the
    same field of view at the same coordinates and needs no other change.
    """
    height, width = shape[0], shape[1]
    for r in IMAGE_REDUCTIONS:
        if (intrinsics.height, intrinsics.width) == (height * r, width * r):
            return r
    return None


def decode_reduction(intrinsics: CameraIntrinsics, config: PreprocessConfig) -> int:
    """The largest reduction a compressed image of this camera can be decoded at and still be at least twice
    the network's image size (what `resize_image` averages down from): 2 for 1600x900 into 240x136."""
    best = 1
    for r in IMAGE_REDUCTIONS:
        if intrinsics.width % r or intrinsics.height % r:
            continue
        if (
            intrinsics.width // r >= 2 * config.image_width
            and intrinsics.height // r >= 2 * config.image_height
        ):
            best = r
    return best


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` shrunk to (height, width) with INTER_AREA's anti-aliasing at a fraction of its cost.

    INTER_AREA over a non-integer factor (1600x900 -> 240x136: 6.7x) is OpenCV's slow general path, 2.8 ms
    an image on this CPU. An image more than twice the target in both axes is first shrunk bilinearly to
    exactly twice the target (bilinear reads a 2x2 neighbourhood per output pixel, so no more than it must
    skips) and then box-averaged 2x2 by INTER_AREA's fast integer path: 0.3 ms, a mean absolute difference
    to INTER_AREA of 0.65 grey levels on the nuScenes images. Smaller images (the synthetic 480x270 cameras
    the default model is trained on) go straight through INTER_AREA, bit for bit as before.
    """
    if image.shape[1] > 2 * width and image.shape[0] > 2 * height:
        image = cv2.resize(image, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _cameras(
    points: np.ndarray,
    valid: np.ndarray,
    images: Mapping[str, np.ndarray],
    rig: Rig,
    config: PreprocessConfig,
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """The cameras used (the rig's with an image, rig order), their resized normalised images (M, 3, h, w),
    point_uv (N, M, 2) and point_visible (N, M)."""
    for camera in images:
        if camera not in rig.cameras:
            raise ValueError(f"images.{camera}: camera is not in the rig {rig.names}")
    present = tuple(c for c in rig.names if c in images)
    n, m = len(points), len(present)
    h, w = config.image_height, config.image_width
    batch = np.empty((m, 3, h, w), dtype=np.float32)
    point_uv = np.zeros((n, m, 2), dtype=np.float32)
    point_visible = np.zeros((n, m), dtype=np.float32)
    if not present:
        return present, batch, point_uv, point_visible
    lut = (np.arange(256, dtype=np.float64)[None] / 255 - np.array(config.mean)[:, None]) / np.array(
        config.std
    )[:, None]
    lut = lut.astype(np.float32)
    for j, camera in enumerate(present):
        check_image(camera, images[camera], rig[camera].intrinsics)
        small = resize_image(images[camera], w, h)
        for c in range(3):  # uint8 indices are always in the 256-entry table: no bounds check ("wrap")
            np.take(lut[c], small[:, :, c], out=batch[j, c], mode="wrap")

    subset = None if valid.all() else np.flatnonzero(valid)
    # the valid points gathered as three rows (project_visible reads them so): a third of the time of
    # points[subset, :3]
    xyz = points[:, :3] if subset is None else np.stack([np.take(points[:, i], subset) for i in range(3)]).T
    hits = project_visible(
        xyz,
        rig if m == len(rig) else rig.with_cameras([rig[c] for c in present]),
        min_depth=config.min_depth,
        occlusion_cell=(config.occlusion_cell or None) if config.occlusion == "cell" else None,
        occlusion_tolerance=config.occlusion_tolerance,
        occlusion=None if config.occlusion == "none" else config.occlusion,
    )
    for j, (camera, hit) in enumerate(zip(present, hits, strict=True)):
        intrinsics = rig[camera].intrinsics
        uv = hit.uv
        target = hit.index if subset is None else subset[hit.index]
        point_uv[target, j, 0] = (uv[:, 0] + np.float32(0.5)) * np.float32(2 / intrinsics.width) - 1
        point_uv[target, j, 1] = (uv[:, 1] + np.float32(0.5)) * np.float32(2 / intrinsics.height) - 1
        point_visible[target, j] = 1
    return present, batch, point_uv, point_visible


def batch(inputs: Sequence[NetworkInputs]) -> dict[str, np.ndarray]:
    """Collate frames for training (all prepared with the same config, of rigs with the same beam count H
    and camera count M: `NetworkInputs.shape_key`; a ValueError otherwise).

    range_image (B, 6, H, W); images (B*M, 3, h, w), frame b's cameras at rows b*M .. b*M+M-1;
    point_features (P, 5), point_uv (P, M, 2), point_visible (P, M), point_valid (P,) bool: the frames' points
    concatenated in order (P = sum of N_b); point_index (P, 3) int64: (frame b, row, col);
    point_batch_sizes (B,) int64: N_b, so frame b's points are rows sum(N_<b) .. sum(N_<=b)-1.
    """
    if not inputs:
        raise ValueError("batch: no frames")
    keys = [x.shape_key for x in inputs]
    if len(set(keys)) > 1:
        mixed = ", ".join(f"frame {b}: H={h} rows, M={m} cameras" for b, (h, m) in enumerate(keys))
        raise ValueError(
            f"batch: frames of one batch must share the range-image height H (beams) and the camera count M, "
            f"got {mixed}; batch frames of each (H, M) apart"
        )
    sizes = np.array([x.num_points for x in inputs], dtype=np.int64)
    frame = np.repeat(np.arange(len(inputs), dtype=np.int64), sizes)
    return {
        "range_image": np.stack([x.range_image for x in inputs]),
        "point_features": np.concatenate([x.point_features for x in inputs]),
        "point_index": np.column_stack([frame, np.concatenate([x.point_index for x in inputs])]),
        "images": np.concatenate([x.images for x in inputs]),
        "point_uv": np.concatenate([x.point_uv for x in inputs]),
        "point_visible": np.concatenate([x.point_visible for x in inputs]),
        "point_valid": np.concatenate([x.point_valid for x in inputs]),
        "point_batch_sizes": sizes,
    }
