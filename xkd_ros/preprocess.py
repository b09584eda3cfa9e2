"""The one pre-processing path of training, evaluation and the node: scan + images + rig -> network inputs.

numpy and OpenCV only (no torch: the node runs the network with ONNX Runtime), vectorised over points and
pixels. `prepare` returns a `NetworkInputs` whose array names are the ONNX input names:

==============  ============  =======  =================================================================
name            shape         dtype    content
==============  ============  =======  =================================================================
range_image     (6, H, W)     float32  RANGE_CHANNELS range, x, y, z, intensity, valid: per pixel the
                                       NEAREST point (ties: lowest point index); empty pixels 0
point_features  (N, 5)        float32  POINT_FEATURES x, y, z, intensity, range of every point
point_index     (N, 2)        int64    (row, col) of each point's range pixel, also for points that lost
                                       the pixel to a nearer one and for invalid points
images          (M, 3, h, w)  float32  RGB resized to (image_height, image_width) by `resize_image`,
                                       (x/255 - mean) / std,
                                       cameras in `config.cameras` order, zeros for a missing camera
point_uv        (N, M, 2)     float32  grid_sample coordinates (align_corners=False) of each point in
                                       each camera, 0 where not visible
point_visible   (N, M)        float32  1 where the camera sees the point (in front, inside the image,
                                       not occluded, camera present), else 0
==============  ============  =======  =================================================================

plus `point_valid` (N,) bool, for the caller (not a network input): the point has finite coordinates and a
range above `min_range` (default 0: above zero). Invalid points (NaN, the all-zero "no return" points of
organised clouds such as Ouster's, those nearer than `min_range`) keep their place in every per-point array
so predictions stay aligned with the cloud, but get zero features, no visibility and take no part in the
range image.

Units: range, x, y and z are raw metres (the network normalises internally); the range feature (range_image
channel 0 and point_features column 4) is clipped to `max_range`, x, y, z are not. Intensity is passed through
as the reader delivers it (nuScenes and the synthetic LiDAR about 0..255, the RELLIS-3D scans about 0..0.012):
the scale is a property of the data set the network was trained on, not something this module guesses; a
non-finite intensity becomes 0.

Range-image geometry (LiDAR frame: x forward, y left, z up):

* column: ``col = floor(0.5 * (1 - atan2(y, x) / pi) * W)``, clipped to [0, W-1]. x forward lands in the
  centre column W/2, the left side (y > 0) left of it, the rear wraps at the image border (as RangeNet++).
* row with a `ring` channel (and `use_ring`): ``row = H - 1 - ring``, the highest beam (largest ring, as
  Velodyne and the synthetic LiDAR number them) on top. Rings must lie in [0, range_height): set
  range_height to the sensor's beam count.
* row otherwise, from the elevation ``pitch = atan2(z, hypot(x, y))``:
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

from xkd_ros.geometry import CameraIntrinsics, Rig, project_points

if TYPE_CHECKING:
    from xkd_ros.data.frame import Frame

RANGE_CHANNELS = ("range", "x", "y", "z", "intensity", "valid")
# The fractions of its calibrated size an image may come at: libjpeg's scaled decoding (1/2, 1/4, 1/8).
IMAGE_REDUCTIONS = (1, 2, 4, 8)
POINT_FEATURES = ("x", "y", "z", "intensity", "range")
INPUT_NAMES = ("range_image", "point_features", "point_index", "images", "point_uv", "point_visible")
NUSCENES_CAMERAS = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_FRONT_LEFT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_BACK_RIGHT",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_REDUCTIONS",
    "INPUT_NAMES",
    "NUSCENES_CAMERAS",
    "POINT_FEATURES",
    "RANGE_CHANNELS",
    "NetworkInputs",
    "PreprocessConfig",
    "batch",
    "check_image",
    "decode_reduction",
    "image_reduction",
    "input_spec",
    "prepare",
    "prepare_frame",
    "resize_image",
]


@dataclass(frozen=True)
class PreprocessConfig:
    """How scans and images become network inputs; one per trained network, stored with it.

    range_height, range_width: range image size; with a `ring` channel range_height is the beam count.
    fov_up_deg, fov_down_deg: vertical field of view for row binning by elevation (scans without `ring`, or
        use_ring False): the top edge of row 0 and the bottom edge of row H-1. For beams evenly spread
        from a to b degrees, a - s/2 .. b + s/2 with spacing s centres each beam in its row.
    use_ring: take the row from the `ring` channel where the scan has one.
    image_width, image_height: every camera image is resized to this (both divisible by 8).
    cameras: camera names in the order the network expects; a camera the frame lacks gets a zero image and
        sees no point.
    min_depth: metres in front of a camera a point must be to count as seen.
    occlusion_cell, occlusion_tolerance: occlusion test of `project_points` (cell in pixels of the ORIGINAL
        image, 0 = off; tolerance in metres behind the nearest point of the cell).
    min_range: points nearer than this (metres) count as invalid, like NaN points: nuScenes sweeps carry
        thousands of returns off the ego vehicle and no-return placeholders within 1 m, which would otherwise
        win their range pixels (the devkit drops them with radius 1.0). 0 keeps all but exact zeros.
    max_range: metres at which the range feature is clipped (points beyond still get a prediction).
    mean, std: per-channel RGB normalisation of images scaled to 0..1.
    """

    range_height: int = 32
    range_width: int = 512
    fov_up_deg: float = 10.67
    fov_down_deg: float = -30.67
    use_ring: bool = True
    image_width: int = 240
    image_height: int = 136
    cameras: tuple[str, ...] = NUSCENES_CAMERAS
    min_depth: float = 0.1
    occlusion_cell: int = 8
    occlusion_tolerance: float = 0.5
    min_range: float = 0.0
    max_range: float = 70.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        for name in ("cameras", "mean", "std"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ValueError(f"preprocess.{name}: expected a list, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        for name in ("mean", "std"):
            try:
                object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
            except (TypeError, ValueError):
                raise ValueError(f"preprocess.{name}: expected numbers, got {getattr(self, name)}") from None
        numbers = ("fov_up_deg", "fov_down_deg", "min_depth", "occlusion_tolerance", "min_range", "max_range")
        for name in numbers:
            value = getattr(self, name)
            if not isinstance(value, float | int | np.number) or isinstance(value, bool):
                raise ValueError(f"preprocess.{name}: expected a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.use_ring, bool | np.bool_):
            raise ValueError(f"preprocess.use_ring: expected true or false, got {self.use_ring!r}")
        object.__setattr__(self, "use_ring", bool(self.use_ring))
        for name in ("range_height", "range_width", "image_width", "image_height", "occlusion_cell"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
                raise ValueError(f"preprocess.{name}: expected a whole number >= 0, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("range_height", "range_width"):
            if getattr(self, name) == 0:
                raise ValueError(f"preprocess.{name}: must be positive")
        for name in ("image_width", "image_height"):
            if getattr(self, name) == 0 or getattr(self, name) % 8:
                raise ValueError(
                    f"preprocess.{name}: must be a positive multiple of 8, got {getattr(self, name)}"
                )
        if not self.fov_up_deg > self.fov_down_deg:
            raise ValueError(
                f"preprocess.fov_up_deg: must exceed fov_down_deg, "
                f"got {self.fov_up_deg} <= {self.fov_down_deg}"
            )
        if not self.max_range > 0:
            raise ValueError(f"preprocess.max_range: must be positive, got {self.max_range}")
        for name in ("min_depth", "occlusion_tolerance", "min_range"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"preprocess.{name}: must be >= 0, got {getattr(self, name)}")
        if not self.min_range < self.max_range:
            raise ValueError(f"preprocess.min_range: must be below max_range, got {self.min_range}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3 or not all(np.isfinite(value)) or (name == "std" and min(value) <= 0):
                raise ValueError(f"preprocess.{name}: expected 3 RGB values (std > 0), got {value}")
        if not all(isinstance(c, str) for c in self.cameras) or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"preprocess.cameras: expected distinct camera names, got {self.cameras}")

    @classmethod
    def from_dict(cls, data: Mapping | None, source: str = "") -> PreprocessConfig:
        """Build from parsed YAML: missing keys take their defaults, unknown keys raise ValueError naming
        them."""
        where = f"{source}: preprocess" if source else "preprocess"
        if data is not None and not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
        data = dict(data or {})
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
    """The network inputs of one frame (see the module docstring for the spec) plus `point_valid`."""

    range_image: np.ndarray
    point_features: np.ndarray
    point_index: np.ndarray
    images: np.ndarray
    point_uv: np.ndarray
    point_visible: np.ndarray
    point_valid: np.ndarray

    @property
    def num_points(self) -> int:
        return len(self.point_features)

    def as_dict(self) -> dict[str, np.ndarray]:
        """The six network inputs by their ONNX names (INPUT_NAMES order)."""
        return {name: getattr(self, name) for name in INPUT_NAMES}


def input_spec(config: PreprocessConfig) -> dict[str, tuple[tuple[int | str, ...], np.dtype]]:
    """Shape and dtype of each network input; "N" is the (dynamic) number of points."""
    m, f32 = len(config.cameras), np.dtype(np.float32)
    return {
        "range_image": ((len(RANGE_CHANNELS), config.range_height, config.range_width), f32),
        "point_features": (("N", len(POINT_FEATURES)), f32),
        "point_index": (("N", 2), np.dtype(np.int64)),
        "images": ((m, 3, config.image_height, config.image_width), f32),
        "point_uv": (("N", m, 2), f32),
        "point_visible": (("N", m), f32),
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
    RGB uint8 `images` of the cameras of `rig` (each the size its calibration gives)."""
    channels = tuple(channels)
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != len(channels):
        raise ValueError(f"points: shape {points.shape} does not match channels {channels}")
    if channels[:3] != ("x", "y", "z"):
        raise ValueError(f"channels: must start with x, y, z, got {channels}")
    if "intensity" not in channels:
        raise ValueError(f"channels: no 'intensity' channel in {channels}")
    points = points.astype(np.float32, copy=False)
    n = len(points)

    features, distance, valid = _point_features(points, channels.index("intensity"), config)
    rows, cols = _range_pixels(points, channels, valid, config)
    point_index = np.empty((n, 2), dtype=np.int64)
    point_index[:, 0], point_index[:, 1] = rows, cols
    range_image = _range_image(features, distance, valid, rows * config.range_width + cols, config)
    image_batch, point_uv, point_visible = _cameras(points, valid, images, rig, config)
    return NetworkInputs(range_image, features, point_index, image_batch, point_uv, point_visible, valid)


def _point_features(
    points: np.ndarray, intensity_column: int, config: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 5) x, y, z, intensity, clipped range (zeros for invalid points); unclipped range; validity."""
    n = len(points)
    features = np.empty((n, len(POINT_FEATURES)), dtype=np.float32)
    features[:, :3] = points[:, :3]
    features[:, 3] = points[:, intensity_column]
    xyz = features[:, :3]
    squared = np.einsum("ij,ij->i", xyz, xyz)  # NaN propagates; inf overflows to inf (invalid below)
    valid = np.isfinite(squared) & (squared > np.float32(config.min_range) ** 2)
    if not valid.all():
        features[~valid] = 0
        squared[~valid] = 0
    distance = np.sqrt(squared)
    np.minimum(distance, np.float32(config.max_range), out=features[:, 4])
    intensity = features[:, 3]
    intensity[~np.isfinite(intensity)] = 0
    return features, distance, valid


def _range_pixels(
    points: np.ndarray, channels: tuple[str, ...], valid: np.ndarray, config: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column (int64) of every point; invalid points are binned as if at the origin."""
    h, w = config.range_height, config.range_width
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    if not valid.all():
        x, y, z = (np.where(valid, c, np.float32(0)) for c in (x, y, z))
    azimuth = np.arctan2(y, x)
    cols = np.floor((0.5 - azimuth * np.float32(0.5 / np.pi)) * np.float32(w)).astype(np.int64)
    np.clip(cols, 0, w - 1, out=cols)
    if config.use_ring and "ring" in channels:
        ring = points[:, channels.index("ring")]
        bad = valid & ~((ring >= 0) & (ring < h))  # NaN rings included
        if bad.any():
            raise ValueError(
                f"ring: values must lie in [0, range_height={h}), got {ring[bad].min()}..{ring[bad].max()} "
                f"for {int(bad.sum())} points; set range_height to the beam count"
            )
        if not valid.all():  # invalid points keep a usable ring, the others row 0 (clipped)
            ring = np.where(np.isfinite(ring), ring, np.float32(0))
        rows = (h - 1) - np.floor(ring).astype(np.int64)
        np.clip(rows, 0, h - 1, out=rows)
    else:
        pitch = np.arctan2(z, np.hypot(x, y))
        up, fov = np.deg2rad(config.fov_up_deg), np.deg2rad(config.fov_up_deg - config.fov_down_deg)
        rows = np.floor((np.float32(up) - pitch) * np.float32(h / fov)).astype(np.int64)
        np.clip(rows, 0, h - 1, out=rows)
    return rows, cols


def _range_image(
    features: np.ndarray, distance: np.ndarray, valid: np.ndarray, pixel: np.ndarray, config: PreprocessConfig
) -> np.ndarray:
    """(6, H, W) image of the nearest valid point per pixel (ties broken by the lower point index)."""
    h, w = config.range_height, config.range_width
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resized normalised images (M, 3, h, w), point_uv (N, M, 2) and point_visible (N, M)."""
    n, m = len(points), len(config.cameras)
    h, w = config.image_height, config.image_width
    batch = np.zeros((m, 3, h, w), dtype=np.float32)
    point_uv = np.zeros((n, m, 2), dtype=np.float32)
    point_visible = np.zeros((n, m), dtype=np.float32)
    for camera in images:
        if camera not in rig.cameras:
            raise ValueError(f"images.{camera}: camera is not in the rig {rig.names}")
    present = [c for c in config.cameras if c in images and c in rig.cameras]
    lut = (np.arange(256, dtype=np.float64)[None] / 255 - np.array(config.mean)[:, None]) / np.array(
        config.std
    )[:, None]
    lut = lut.astype(np.float32)
    for camera in present:
        check_image(camera, images[camera], rig[camera].intrinsics)
        small = resize_image(images[camera], w, h)
        out = batch[config.cameras.index(camera)]
        for c in range(3):
            np.take(lut[c], small[:, :, c], out=out[c])
    if not present:
        return batch, point_uv, point_visible

    subset = None if valid.all() else np.flatnonzero(valid)
    xyz = points[:, :3] if subset is None else points[subset, :3]
    projection = project_points(
        xyz,
        rig.with_cameras([rig[c] for c in present]),
        min_depth=config.min_depth,
        occlusion_cell=config.occlusion_cell or None,
        occlusion_tolerance=config.occlusion_tolerance,
    )
    for k, camera in enumerate(present):
        j, intrinsics = config.cameras.index(camera), rig[camera].intrinsics
        seen = np.flatnonzero(projection.mask[k])
        uv = projection.uv[k, seen]
        target = seen if subset is None else subset[seen]
        point_uv[target, j, 0] = (uv[:, 0] + np.float32(0.5)) * np.float32(2 / intrinsics.width) - 1
        point_uv[target, j, 1] = (uv[:, 1] + np.float32(0.5)) * np.float32(2 / intrinsics.height) - 1
        point_visible[target, j] = 1
    return batch, point_uv, point_visible


def batch(inputs: Sequence[NetworkInputs]) -> dict[str, np.ndarray]:
    """Collate frames for training (all prepared with the same config).

    range_image (B, 6, H, W); images (B*M, 3, h, w), frame b's cameras at rows b*M .. b*M+M-1;
    point_features (P, 5), point_uv (P, M, 2), point_visible (P, M), point_valid (P,) bool: the frames' points
    concatenated in order (P = sum of N_b); point_index (P, 3) int64: (frame b, row, col);
    point_batch_sizes (B,) int64: N_b, so frame b's points are rows sum(N_<b) .. sum(N_<=b)-1.
    """
    if not inputs:
        raise ValueError("batch: no frames")
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
