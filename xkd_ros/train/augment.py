"""Training-batch augmentation on the pre-processed arrays (numpy), so no frame is pre-processed twice.

Geometry (yaw rotation, y mirror, scaling, point dropout) moves the points, the range image and the labels
together and leaves point_uv alone: each point keeps the pixels it was projected to, the point <-> pixel
pairing is by index (2DPASS), so the 2-D evidence stays true while the 3-D branch sees a new scene. Image
changes (crop, colour jitter) act per camera and remap point_uv; points a crop cuts off become not visible.
Every draw comes from the caller's Generator, seeded by (seed, stage, step): runs repeat.
"""

from __future__ import annotations

import cv2
import numpy as np

from xkd_ros.preprocess import NetworkInputs, PreprocessConfig
from xkd_ros.train.data import IMAGE_EXTRAS, POINT_EXTRAS, Item
from xkd_ros.train.experiment import AugmentConfig

# range-image channels (xkd_ros.preprocess.RANGE_CHANNELS) and point-feature columns (POINT_FEATURES)
RANGE, X, Y, Z, INTENSITY, VALID = range(6)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 grey, for saturation


def augment(
    item: Item, config: AugmentConfig, rng: np.random.Generator, preprocess: PreprocessConfig
) -> Item:
    """`item` augmented as `config` says (a new Item; the cached one is not touched)."""
    inputs, labels, extras = item.inputs, item.labels, dict(item.extras)
    range_image, features = inputs.range_image.copy(), inputs.point_features.copy()
    point_index = inputs.point_index.copy()
    width = range_image.shape[2]
    if config.point_dropout:
        keep = rng.random(inputs.num_points) >= config.point_dropout
        features, point_index, labels = features[keep], point_index[keep], labels[keep]
        inputs = _take(inputs, keep)
        extras |= {name: extras[name][keep] for name in POINT_EXTRAS if name in extras}
        range_image = rebuild_range_image(features, point_index, inputs.point_valid, range_image.shape)
    if config.rotate:
        rotate_columns(range_image, features, point_index, int(rng.integers(width)))
    if config.flip and rng.random() < 0.5:
        flip_y(range_image, features, point_index)
    lo, hi = config.scale
    if (lo, hi) != (1.0, 1.0):
        factor = np.float32(rng.uniform(lo, hi))
        range_image[[RANGE, X, Y, Z]] *= factor
        np.minimum(range_image[RANGE], np.float32(preprocess.max_range), out=range_image[RANGE])
        features[:, [0, 1, 2, 4]] *= factor
        np.minimum(features[:, 4], np.float32(preprocess.max_range), out=features[:, 4])
    images, point_uv, point_visible = inputs.images, inputs.point_uv, inputs.point_visible
    if config.image_crop < 1 and len(images):
        images, point_uv, point_visible, extras = _crop(
            images, point_uv, point_visible, extras, config.image_crop, rng
        )
    if config.color_jitter and len(images):
        images = _jitter(images, config.color_jitter, rng, preprocess)
    augmented = NetworkInputs(
        range_image,
        features,
        point_index,
        images,
        point_uv,
        point_visible,
        inputs.point_valid,
        inputs.cameras,
    )
    return Item(augmented, labels, extras)


def rotate_columns(range_image: np.ndarray, features: np.ndarray, point_index: np.ndarray, k: int) -> None:
    """Yaw the scan by k range-image columns (k * 360 / W degrees, to the left) in place: the columns roll,
    x and y turn; exact, as the rotation is a whole number of columns."""
    width = range_image.shape[2]
    angle = 2 * np.pi * k / width
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    for array, (x, y) in ((range_image, (X, Y)), (features.T, (0, 1))):
        xs, ys = array[x].copy(), array[y].copy()
        array[x], array[y] = xs * cos - ys * sin, xs * sin + ys * cos
    range_image[:] = np.roll(range_image, -k, axis=2)
    point_index[:, 1] = (point_index[:, 1] - k) % width


def flip_y(range_image: np.ndarray, features: np.ndarray, point_index: np.ndarray) -> None:
    """Mirror the scan across the x-z plane in place: y negated, columns reversed (azimuth -> -azimuth)."""
    width = range_image.shape[2]
    range_image[:] = range_image[:, :, ::-1]
    range_image[Y] *= -1
    features[:, 1] *= -1
    point_index[:, 1] = width - 1 - point_index[:, 1]
    range_image[Y][range_image[Y] == 0] = 0  # no -0.0: an empty pixel stays bit-identical


def rebuild_range_image(
    features: np.ndarray, point_index: np.ndarray, valid: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """The range image of the given points as preprocess builds it: per pixel the nearest valid point (ties:
    the lower index). The range feature orders them, so beyond max_range (where it is clipped) a tie goes
    to the lower index rather than the truly nearer point."""
    _, height, width = shape
    image = np.zeros((shape[0], height * width), dtype=np.float32)
    index = np.flatnonzero(valid)
    if len(index):
        pixel = point_index[index, 0] * width + point_index[index, 1]
        key = (features[index, 4].astype(np.float32).view(np.int32).astype(np.int64) << 32) | index
        best = np.full(height * width, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(best, pixel, key)
        filled = np.flatnonzero(best != np.iinfo(np.int64).max)
        chosen = features[best[filled] & 0xFFFFFFFF]
        image[RANGE, filled] = chosen[:, 4]
        image[X : INTENSITY + 1, filled] = chosen[:, :4].T
        image[VALID, filled] = 1
    return image.reshape(shape)


def _take(inputs: NetworkInputs, keep: np.ndarray) -> NetworkInputs:
    return NetworkInputs(
        inputs.range_image,
        inputs.point_features[keep],
        inputs.point_index[keep],
        inputs.images,
        inputs.point_uv[keep],
        inputs.point_visible[keep],
        inputs.point_valid[keep],
        inputs.cameras,
    )


def _crop(
    images: np.ndarray,
    point_uv: np.ndarray,
    point_visible: np.ndarray,
    extras: dict[str, np.ndarray],
    share: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Each camera's image cropped to a random box of >= `share` of each side and resized back; point_uv
    follows (grid_sample coordinates, align_corners=False), points outside the box are no longer seen.
    Per-image extras (superpixel ids) are cropped alike, by nearest neighbour."""
    images, point_uv, point_visible = images.copy(), point_uv.copy(), point_visible.copy()
    maps = [name for name in IMAGE_EXTRAS if name in extras]
    extras = {**extras, **{name: extras[name].copy() for name in maps}}
    _, _, height, width = images.shape
    for camera in range(len(images)):
        crop_h = round(height * rng.uniform(share, 1.0))
        crop_w = round(width * rng.uniform(share, 1.0))
        top, left = int(rng.integers(height - crop_h + 1)), int(rng.integers(width - crop_w + 1))
        window = images[camera, :, top : top + crop_h, left : left + crop_w].transpose(1, 2, 0)
        resized = cv2.resize(np.ascontiguousarray(window), (width, height), interpolation=cv2.INTER_LINEAR)
        images[camera] = resized.transpose(2, 0, 1)
        for name in maps:
            part = extras[name][camera, top : top + crop_h, left : left + crop_w].astype(np.float32)
            extras[name][camera] = cv2.resize(part, (width, height), interpolation=cv2.INTER_NEAREST)
        # normalised -> pixel edges (0..W) of the full image -> of the crop -> normalised
        u = ((point_uv[:, camera, 0] + 1) / 2 * width - left) / crop_w * 2 - 1
        v = ((point_uv[:, camera, 1] + 1) / 2 * height - top) / crop_h * 2 - 1
        inside = (np.abs(u) <= 1) & (np.abs(v) <= 1) & (point_visible[:, camera] > 0)
        point_uv[:, camera, 0] = np.where(inside, u, 0)
        point_uv[:, camera, 1] = np.where(inside, v, 0)
        point_visible[:, camera] = inside
    return images, point_uv, point_visible, extras


def _jitter(
    images: np.ndarray, strength: float, rng: np.random.Generator, preprocess: PreprocessConfig
) -> np.ndarray:
    """Brightness, contrast and saturation of each camera times U(1 - strength, 1 + strength), on the 0..1
    image (normalisation undone and redone), clipped to 0..1."""
    mean = np.asarray(preprocess.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(preprocess.std, dtype=np.float32)[:, None, None]
    out = np.empty_like(images)
    for camera, image in enumerate(images):
        rgb = image * std + mean
        brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3).astype(np.float32)
        rgb = rgb * brightness
        grey = np.tensordot(_LUMA, rgb, axes=1)
        rgb = (rgb - grey.mean()) * contrast + grey.mean()
        grey = np.tensordot(_LUMA, rgb, axes=1)
        rgb = grey + (rgb - grey) * saturation
        out[camera] = (np.clip(rgb, 0, 1) - mean) / std
    return out
