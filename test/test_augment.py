"""Training augmentation: geometry that the range image and the labels follow exactly, image changes that
point_uv follows, per-point extras cut with the points, and seeded draws."""

import dataclasses

import numpy as np
import pytest

from xkd_ros.data import open_frames
from xkd_ros.data.synthetic.generator import main as synthesize
from xkd_ros.preprocess import PreprocessConfig, prepare_frame
from xkd_ros.train.augment import augment, flip_y, rebuild_range_image, rotate_columns
from xkd_ros.train.data import Item
from xkd_ros.train.experiment import AugmentConfig, ExperimentConfig

PREPROCESS = PreprocessConfig(range_width=128, image_width=96, image_height=56)


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    small = root / "small.yaml"
    small.write_text("camera: {width: 160, height: 90}\nlidar: {azimuth_steps: 360}\n")
    synthesize(["--out", str(root / "split"), "--train", "1", "--seed", "3", "--config", str(small)])
    return open_frames(root / "split", split="train")[0]


@pytest.fixture(scope="module")
def item(frame):
    inputs = prepare_frame(frame, PREPROCESS)
    extras = {
        "teacher": np.arange(inputs.num_points * 2, dtype=np.float16).reshape(-1, 2),
        "superpixels": np.broadcast_to(np.arange(96, dtype=np.int32), (len(inputs.cameras), 56, 96)).copy(),
    }
    return Item(inputs, frame.labels.astype(np.uint8), extras)


def rotated_frame(frame, k):
    """The frame's cloud turned about z by k range-image columns, as a sensor would have seen it."""
    angle = 2 * np.pi * k / PREPROCESS.range_width
    points = frame.points.copy()
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    points[:, 0], points[:, 1] = x * np.cos(angle) - y * np.sin(angle), x * np.sin(angle) + y * np.cos(angle)
    return dataclasses.replace(frame, points=points, images={})


@pytest.mark.parametrize("k", [1, 37, 64])
def test_a_rotation_by_whole_columns_is_what_the_sensor_would_see(frame, k):
    inputs = prepare_frame(dataclasses.replace(frame, images={}), PREPROCESS)
    range_image, features, index = (
        inputs.range_image.copy(),
        inputs.point_features.copy(),
        inputs.point_index.copy(),
    )
    rotate_columns(range_image, features, index, k)
    want = prepare_frame(rotated_frame(frame, k), PREPROCESS)
    assert np.array_equal(index, want.point_index)  # every point in the column the sensor would put it
    assert np.allclose(features, want.point_features, atol=1e-4)
    assert np.allclose(range_image, want.range_image, atol=1e-4)
    rotate_columns(range_image, features, index, PREPROCESS.range_width - k)  # the full turn: back home
    assert np.array_equal(index, inputs.point_index)
    assert np.allclose(range_image, inputs.range_image, atol=1e-4)


def test_flip_twice_is_the_identity_and_once_mirrors_y(item):
    inputs = item.inputs
    range_image, features, index = (
        inputs.range_image.copy(),
        inputs.point_features.copy(),
        inputs.point_index.copy(),
    )
    flip_y(range_image, features, index)
    assert np.array_equal(features[:, 1], -inputs.point_features[:, 1])
    assert np.array_equal(index[:, 1], PREPROCESS.range_width - 1 - inputs.point_index[:, 1])
    assert np.array_equal(range_image[2, :, ::-1], -inputs.range_image[2])
    flip_y(range_image, features, index)
    assert np.array_equal(range_image, inputs.range_image)
    assert np.array_equal(features, inputs.point_features)
    assert np.array_equal(index, inputs.point_index)


def test_the_range_image_rebuilds_as_preprocess_builds_it(item):
    inputs = item.inputs
    rebuilt = rebuild_range_image(
        inputs.point_features, inputs.point_index, inputs.point_valid, inputs.range_image.shape
    )
    assert np.array_equal(rebuilt, inputs.range_image)


def test_point_dropout_cuts_every_per_point_array_and_the_labels_alike(item):
    rng = np.random.default_rng(0)
    out = augment(item, AugmentConfig(point_dropout=0.3), rng, PREPROCESS)
    keep = np.random.default_rng(0).random(item.inputs.num_points) >= 0.3
    assert out.inputs.num_points == keep.sum() < item.inputs.num_points
    assert np.array_equal(out.labels, item.labels[keep])
    assert np.array_equal(out.inputs.point_uv, item.inputs.point_uv[keep])
    assert np.array_equal(out.inputs.point_valid, item.inputs.point_valid[keep])
    assert np.array_equal(out.extras["teacher"], item.extras["teacher"][keep])
    assert out.extras["superpixels"] is item.extras["superpixels"]  # per image: untouched
    # the range image holds only kept points: every filled pixel is one of theirs
    filled = out.inputs.range_image[5] > 0
    assert filled.sum() < (item.inputs.range_image[5] > 0).sum()
    owners = {tuple(row) for row in out.inputs.point_index[out.inputs.point_valid]}
    assert {tuple(p) for p in np.argwhere(filled)} <= owners


def test_scaling_multiplies_coordinates_and_range(item):
    out = augment(item, AugmentConfig(scale=[1.2, 1.2]), np.random.default_rng(0), PREPROCESS)
    want = item.inputs.point_features.copy()
    want[:, [0, 1, 2, 4]] *= np.float32(1.2)
    want[:, 4] = np.minimum(want[:, 4], PREPROCESS.max_range)
    assert np.allclose(out.inputs.point_features, want)
    assert np.array_equal(out.inputs.range_image[4:], item.inputs.range_image[4:])  # intensity, valid


def test_image_crop_remaps_point_uv_to_the_same_pixel_content(item):
    inputs = item.inputs
    out = augment(item, AugmentConfig(image_crop=0.6), np.random.default_rng(1), PREPROCESS)
    seen_before = inputs.point_visible > 0
    seen_after = out.inputs.point_visible > 0
    assert (seen_after <= seen_before).all()
    assert seen_after.sum() < seen_before.sum()
    assert (out.inputs.point_uv[~seen_after] == 0).all()
    assert (np.abs(out.inputs.point_uv) <= 1).all()
    # The superpixel map here is the column index: sampling it at the new uv gives the old column back.
    for camera in range(len(inputs.cameras)):
        rows = np.flatnonzero(seen_after[:, camera])
        old = ((inputs.point_uv[rows, camera, 0] + 1) / 2 * 96).astype(int)
        new = ((out.inputs.point_uv[rows, camera] + 1) / 2 * [96, 56]).astype(int)
        got = out.extras["superpixels"][camera, new[:, 1], new[:, 0]]
        assert np.abs(got - old).max() <= 2, camera
    assert out.inputs.images.shape == inputs.images.shape


def test_colour_jitter_changes_the_images_only(item):
    out = augment(item, AugmentConfig(color_jitter=0.4), np.random.default_rng(2), PREPROCESS)
    assert not np.allclose(out.inputs.images, item.inputs.images)
    rgb = (
        out.inputs.images * np.array(PREPROCESS.std)[:, None, None] + np.array(PREPROCESS.mean)[:, None, None]
    )
    assert rgb.min() > -1e-5
    assert rgb.max() < 1 + 1e-5
    assert np.array_equal(out.inputs.point_uv, item.inputs.point_uv)
    assert np.array_equal(out.inputs.range_image, item.inputs.range_image)


def test_augmentation_is_seeded_and_leaves_the_cached_item_alone(item):
    config = AugmentConfig(rotate=True, flip=True, scale=[0.9, 1.1], point_dropout=0.1, image_crop=0.8,
                           color_jitter=0.2)  # fmt: skip
    before = item.inputs.range_image.copy(), item.inputs.images.copy(), item.inputs.point_uv.copy()
    first = augment(item, config, np.random.default_rng([0, 1, 5]), PREPROCESS)
    again = augment(item, config, np.random.default_rng([0, 1, 5]), PREPROCESS)
    other = augment(item, config, np.random.default_rng([0, 1, 6]), PREPROCESS)
    for a, b in zip(first.inputs.as_dict().values(), again.inputs.as_dict().values(), strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(first.inputs.point_features, other.inputs.point_features)
    assert all(np.array_equal(a, b) for a, b in zip(before, (item.inputs.range_image, item.inputs.images,
                                                             item.inputs.point_uv), strict=True))  # fmt: skip


def test_augment_config_is_checked():
    assert not ExperimentConfig().augment.active
    with pytest.raises(ValueError, match=r"augment\.scale"):
        ExperimentConfig.from_dict({"augment": {"scale": [1.2, 0.8]}})
    with pytest.raises(ValueError, match=r"augment\.point_dropout"):
        ExperimentConfig.from_dict({"augment": {"point_dropout": 1.0}})
    with pytest.raises(ValueError, match=r"augment\.image_crop"):
        ExperimentConfig.from_dict({"augment": {"image_crop": 0}})
