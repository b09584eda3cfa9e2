"""The shared pre-processing path: spec of the network inputs, range image, camera coordinates, config."""

import subprocess
import sys

import numpy as np
import pytest
import yaml

from xkd_ros.data import Frame
from xkd_ros.geometry import CameraCalibration, CameraIntrinsics, Rig, project_points
from xkd_ros.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_NAMES,
    NUSCENES_CAMERAS,
    PreprocessConfig,
    batch,
    decode_reduction,
    image_reduction,
    input_spec,
    prepare,
    prepare_frame,
    resize_image,
)

CONFIG = PreprocessConfig()


@pytest.fixture(scope="module")
def keyframe_inputs(nuscenes_keyframe):
    return prepare_frame(nuscenes_keyframe, CONFIG)


def denormalise(point_uv: np.ndarray, width: int, height: int) -> np.ndarray:
    """grid_sample coordinates (align_corners=False) back to pixels of the original image."""
    return np.column_stack([(point_uv[:, 0] + 1) / 2 * width - 0.5, (point_uv[:, 1] + 1) / 2 * height - 0.5])


def forward_rig(width: int = 64, height: int = 48) -> Rig:
    """One pinhole camera looking along the LiDAR's x axis, at the LiDAR's origin."""
    T = np.eye(4)
    T[:3, :3] = [[0, -1, 0], [0, 0, -1], [1, 0, 0]]  # LiDAR x fwd, y left, z up -> optical x right, y down
    K = [[width / 2, 0, width / 2], [0, width / 2, height / 2], [0, 0, 1]]
    return Rig.from_cameras([CameraCalibration("CAM", CameraIntrinsics(width, height, K), T)])


def test_names_shapes_and_dtypes(nuscenes_keyframe, keyframe_inputs):
    n, m = len(nuscenes_keyframe.points), len(NUSCENES_CAMERAS)
    inputs = keyframe_inputs.as_dict()
    assert tuple(inputs) == INPUT_NAMES
    spec = input_spec(CONFIG)
    expected = {
        "range_image": ((6, 32, 512), np.float32),
        "point_features": ((n, 5), np.float32),
        "point_index": ((n, 2), np.int64),
        "images": ((m, 3, 136, 240), np.float32),
        "point_uv": ((n, m, 2), np.float32),
        "point_visible": ((n, m), np.float32),
    }
    for name, (shape, dtype) in expected.items():
        assert inputs[name].shape == shape, name
        assert inputs[name].dtype == dtype, name
        assert inputs[name].flags.c_contiguous, name
        assert spec[name][1] == dtype
        assert tuple(n if d == "N" else d for d in spec[name][0]) == shape
    assert keyframe_inputs.point_valid.dtype == bool
    assert keyframe_inputs.point_valid.all()
    np.testing.assert_array_equal(keyframe_inputs.point_features[:, :4], nuscenes_keyframe.points[:, :4])
    np.testing.assert_allclose(
        keyframe_inputs.point_features[:, 4],
        np.minimum(np.linalg.norm(nuscenes_keyframe.xyz.astype(np.float64), axis=1), CONFIG.max_range),
        rtol=1e-6,
    )


def test_module_does_not_import_torch():
    code = "import sys, xkd_ros.preprocess; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_range_image_keeps_the_nearest_point_of_every_pixel(keyframe_inputs):
    inputs = keyframe_inputs
    rows, cols = inputs.point_index.T
    image = inputs.range_image
    distance = inputs.point_features[:, 4]
    assert (image[5, rows, cols] == 1).all()
    assert (image[0, rows, cols] <= distance).all()
    # Reference z-buffer on the unclipped range: the nearest point of each pixel, ties to the lower index.
    pixel = rows * CONFIG.range_width + cols
    xyz = inputs.point_features[:, :3]
    exact = np.sqrt(np.einsum("ij,ij->i", xyz, xyz))
    order = np.lexsort((np.arange(len(pixel)), exact, pixel))
    first = order[np.r_[True, np.diff(pixel[order]) != 0]]
    assert int(image[5].sum()) == len(first)
    assert len(first) < len(pixel)  # some points lost their pixel
    features = inputs.point_features[first]
    np.testing.assert_array_equal(image[1:5, rows[first], cols[first]].T, features[:, :4])
    np.testing.assert_array_equal(image[0, rows[first], cols[first]], features[:, 4])
    assert (exact[first] > CONFIG.max_range).any()  # stored range clipped, nearest by the true one
    empty = image[5] == 0
    assert (image[:, empty] == 0).all()


def test_ring_rows_put_the_highest_beam_on_top(nuscenes_keyframe, keyframe_inputs):
    ring = nuscenes_keyframe.channel("ring").astype(np.int64)
    np.testing.assert_array_equal(keyframe_inputs.point_index[:, 0], 31 - ring)


def test_ring_beyond_the_range_height_is_an_error(nuscenes_keyframe):
    with pytest.raises(ValueError, match="ring"):
        prepare_frame(nuscenes_keyframe, PreprocessConfig(range_height=16))


def test_elevation_rows_are_monotone(nuscenes_keyframe):
    inputs = prepare_frame(nuscenes_keyframe, PreprocessConfig(use_ring=False))
    xyz = nuscenes_keyframe.xyz.astype(np.float64)
    elevation = np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1]))
    rows = inputs.point_index[np.argsort(elevation, kind="stable"), 0]
    assert (np.diff(rows) <= 0).all()
    assert rows[0] == 31
    assert rows[-1] == 0
    # Without use_ring the ring channel is ignored. With the field of view reaching half a beam spacing
    # (1.33 deg) past the outer beams and the returns off the ego vehicle dropped, the rows mostly match
    # the rings (the beams do not all start at the LiDAR origin, so near points stray).
    config = PreprocessConfig(use_ring=False, fov_up_deg=11.33, fov_down_deg=-31.33, min_range=1.0)
    inputs = prepare_frame(nuscenes_keyframe, config)
    ring_rows = 31 - nuscenes_keyframe.channel("ring").astype(np.int64)
    valid = inputs.point_valid
    assert np.mean(inputs.point_index[valid, 0] == ring_rows[valid]) > 0.85
    assert np.abs(inputs.point_index[valid, 0] - ring_rows[valid]).max() <= 4


def test_column_and_row_conventions():
    config = PreprocessConfig(range_height=4, range_width=8, fov_up_deg=10, fov_down_deg=-30, cameras=())
    points = np.array(
        [
            [10, 0, 0, 1],  # forward: centre column
            [0, 10, 0, 2],  # left: quarter
            [0, -10, 0, 3],  # right: three quarters
            [-10, 1e-3, 0, 4],  # behind, a little left: column 0
            [-10, -1e-3, 0, 5],  # behind, a little right: last column
            [10, 0, 10, 6],  # 45 deg up: above the fov, top row
            [10, 0, -10, 7],  # 45 deg down: bottom row
            [100, 0, 0, 8],  # beyond max_range
        ],
        dtype=np.float32,
    )
    inputs = prepare(points, ("x", "y", "z", "intensity"), {}, forward_rig(), config)
    np.testing.assert_array_equal(inputs.point_index[:, 1], [4, 2, 6, 0, 7, 4, 4, 4])
    np.testing.assert_array_equal(inputs.point_index[:, 0], [1, 1, 1, 1, 1, 0, 3, 1])
    assert inputs.point_features[7, 4] == config.max_range  # clipped range, raw x
    assert inputs.point_features[7, 0] == 100
    assert inputs.range_image[0, 1, 4] == 10
    assert inputs.range_image[4, 1, 4] == 1
    assert inputs.images.shape == (0, 3, 136, 240)
    assert inputs.point_uv.shape == (8, 0, 2)


def test_point_uv_maps_back_to_the_projected_pixel(nuscenes_keyframe, keyframe_inputs):
    rig = nuscenes_keyframe.compensated_rig()
    projection = project_points(nuscenes_keyframe.points, rig, min_depth=0.1, occlusion_cell=8)
    for j, camera in enumerate(CONFIG.cameras):
        k = projection.cameras.index(camera)
        mask = projection.mask[k]
        np.testing.assert_array_equal(keyframe_inputs.point_visible[:, j], mask.astype(np.float32))
        intrinsics = rig[camera].intrinsics
        uv = denormalise(
            keyframe_inputs.point_uv[mask, j].astype(np.float64), intrinsics.width, intrinsics.height
        )
        np.testing.assert_allclose(uv, projection.uv[k, mask], rtol=0, atol=1e-3)
        # project_points counts u in [0, W) as inside; with pixel centres at integers the image ends at
        # W - 0.5, so the last half pixel maps just past 1.
        assert (np.abs(keyframe_inputs.point_uv[mask, j]) <= 1 + 1 / intrinsics.height).all()
        assert (keyframe_inputs.point_uv[~mask, j] == 0).all()
    # The occlusion test removes some points the plain projection counts as seen.
    plain = project_points(nuscenes_keyframe.points, rig, min_depth=0.1)
    assert keyframe_inputs.point_visible.sum() < plain.mask.sum()
    no_occlusion = prepare_frame(nuscenes_keyframe, PreprocessConfig(occlusion_cell=0))
    order = [plain.cameras.index(c) for c in CONFIG.cameras]
    np.testing.assert_array_equal(no_occlusion.point_visible, plain.mask[order].T.astype(np.float32))


def test_point_uv_samples_the_resized_image_where_the_point_projects():
    """A point aimed at pixel (u, v) of the original image samples the same spot of the resized image."""
    rig = forward_rig(64, 48)
    config = PreprocessConfig(cameras=("CAM",), image_width=16, image_height=16, occlusion_cell=0)
    # Optical (X, Y, Z=10) -> u = 32 X / 10 + 32; LiDAR (x, y, z) = (Z, -X, -Y).
    u, v = np.array([0.0, 63.0, 20.0]), np.array([0.0, 47.0, 30.0])
    X, Y = (u - 32) * 10 / 32, (v - 24) * 10 / 32
    points = np.column_stack([np.full(3, 10.0), -X, -Y, np.zeros(3)]).astype(np.float32)
    inputs = prepare(points, ("x", "y", "z", "intensity"), {}, rig, config)  # no image: camera missing
    assert (inputs.point_visible == 0).all()
    assert (inputs.images == 0).all()
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    inputs = prepare(points, ("x", "y", "z", "intensity"), {"CAM": image}, rig, config)
    assert (inputs.point_visible == 1).all()
    np.testing.assert_allclose(denormalise(inputs.point_uv[:, 0], 64, 48), np.column_stack([u, v]), atol=1e-4)
    # In the 16x16 image, align_corners=False: pixel index = (x + 1) / 2 * 16 - 0.5.
    x, y = inputs.point_uv[:, 0].T
    np.testing.assert_allclose((x + 1) / 2 * 16, (u + 0.5) / 64 * 16, atol=1e-5)
    np.testing.assert_allclose((y + 1) / 2 * 16, (v + 0.5) / 48 * 16, atol=1e-5)


def test_a_missing_camera_gets_a_zero_image_and_sees_nothing(nuscenes_keyframe, keyframe_inputs):
    images = {c: i for c, i in nuscenes_keyframe.images.items() if c != "CAM_BACK"}
    inputs = prepare(
        nuscenes_keyframe.points, nuscenes_keyframe.channels, images, nuscenes_keyframe.rig, CONFIG
    )
    j = CONFIG.cameras.index("CAM_BACK")
    assert (inputs.images[j] == 0).all()
    assert (inputs.point_visible[:, j] == 0).all()
    assert (inputs.point_uv[:, j] == 0).all()
    others = [i for i in range(len(CONFIG.cameras)) if i != j]
    np.testing.assert_array_equal(inputs.images[others], keyframe_inputs.images[others])
    np.testing.assert_array_equal(inputs.point_visible[:, others], keyframe_inputs.point_visible[:, others])
    np.testing.assert_array_equal(inputs.point_uv[:, others], keyframe_inputs.point_uv[:, others])
    np.testing.assert_array_equal(inputs.range_image, keyframe_inputs.range_image)
    # A camera the rig lacks altogether counts as missing too; the order of the rest holds.
    config = PreprocessConfig(cameras=("CAM_FRONT", "CAM_NOWHERE", "CAM_BACK"))
    inputs = prepare_frame(nuscenes_keyframe, config)
    assert (inputs.images[1] == 0).all()
    assert (inputs.point_visible[:, 1] == 0).all()
    np.testing.assert_array_equal(inputs.images[[0, 2]], keyframe_inputs.images[[0, 3]])
    np.testing.assert_array_equal(inputs.point_visible[:, [0, 2]], keyframe_inputs.point_visible[:, [0, 3]])


@pytest.mark.parametrize(
    "shape", [(675, 1200, 3), (900, 1200, 3), (1600, 900, 3), (900, 1600), (300, 533, 3)]
)
def test_an_image_of_the_wrong_size_is_an_error(nuscenes_keyframe, shape):
    images = dict(nuscenes_keyframe.images, CAM_FRONT=np.zeros(shape, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"images\.CAM_FRONT: expected \(900, 1600, 3\)"):
        prepare(nuscenes_keyframe.points, nuscenes_keyframe.channels, images, nuscenes_keyframe.rig, CONFIG)


def test_an_image_at_a_reduced_scale_covers_the_same_coordinates(nuscenes_keyframe, keyframe_inputs):
    """A JPEG decoded at half size (or a binned sensor) is its calibrated image at half the pixels: the
    points keep their coordinates and the network image stays close to the full-size one."""
    import cv2

    half = {
        c: cv2.resize(i, (800, 450), interpolation=cv2.INTER_AREA)
        for c, i in nuscenes_keyframe.images.items()
    }
    inputs = prepare(
        nuscenes_keyframe.points, nuscenes_keyframe.channels, half, nuscenes_keyframe.rig, CONFIG
    )
    np.testing.assert_array_equal(inputs.point_uv, keyframe_inputs.point_uv)
    np.testing.assert_array_equal(inputs.point_visible, keyframe_inputs.point_visible)
    grey_levels = np.abs(inputs.images - keyframe_inputs.images) * np.array(IMAGENET_STD)[:, None, None] * 255
    assert grey_levels.mean() < 1.5


def test_image_reduction_and_decode_reduction():
    def camera(width, height):
        return CameraIntrinsics(
            width, height, np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]])
        )

    nuscenes = camera(1600, 900)
    assert [
        image_reduction(s, nuscenes) for s in [(900, 1600), (450, 800), (225, 400), (450, 801), (113, 200)]
    ] == [
        1,
        2,
        4,
        None,
        None,
    ]
    assert decode_reduction(nuscenes, CONFIG) == 2  # 800x450 is still twice 240x136; 400x225 is not
    assert decode_reduction(camera(480, 270), CONFIG) == 1  # the synthetic cameras
    assert decode_reduction(camera(3840, 2160), CONFIG) == 4  # 960x540; 480x270 is under 2 x 136 high
    assert decode_reduction(camera(1601, 900), CONFIG) == 1  # 800.5 pixels: no exact reduction


def test_invalid_points_get_zeros_and_keep_their_place(nuscenes_keyframe, keyframe_inputs):
    points = nuscenes_keyframe.points.copy()
    bad = np.array([0, 5, 1000, 20000, len(points) - 1])
    points[bad[:3], :3] = np.nan
    points[bad[3], 0] = np.inf
    points[bad[4], :3] = 0  # a "no return" point of an organised cloud
    frame = Frame(points, nuscenes_keyframe.channels, nuscenes_keyframe.rig, nuscenes_keyframe.images)
    inputs = prepare_frame(frame, CONFIG)
    assert len(inputs.point_valid) == len(points)
    np.testing.assert_array_equal(np.flatnonzero(~inputs.point_valid), bad)
    assert (inputs.point_features[bad] == 0).all()
    assert (inputs.point_visible[bad] == 0).all()
    assert (inputs.point_uv[bad] == 0).all()
    assert ((inputs.point_index[bad] >= 0) & (inputs.point_index[bad] < [32, 512])).all()
    np.testing.assert_array_equal(inputs.point_index[bad, 0], 31 - points[bad, 4])  # the ring still counts
    # The valid points come out exactly as they do from the scan without the invalid ones.
    good = np.setdiff1d(np.arange(len(points)), bad)
    clean = prepare(points[good], frame.channels, frame.images, frame.rig, CONFIG)
    np.testing.assert_array_equal(inputs.range_image, clean.range_image)
    for name in ("point_features", "point_index", "point_uv", "point_visible"):
        np.testing.assert_array_equal(getattr(inputs, name)[good], getattr(clean, name), err_msg=name)


def test_images_are_normalised_rgb(nuscenes_keyframe):
    grey = {c: np.full(i.shape, 128, dtype=np.uint8) for c, i in nuscenes_keyframe.images.items()}
    inputs = prepare(
        nuscenes_keyframe.points, nuscenes_keyframe.channels, grey, nuscenes_keyframe.rig, CONFIG
    )
    expected = (128 / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(inputs.images.mean(axis=(0, 2, 3)), expected, rtol=1e-6)
    np.testing.assert_allclose(
        inputs.images.mean(axis=(0, 2, 3)),
        (0.5 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD),
        atol=0.01,
    )
    red = {c: np.zeros_like(i) for c, i in grey.items()}
    red["CAM_FRONT"][..., 0] = 255  # RGB: channel 0 is red
    inputs = prepare(nuscenes_keyframe.points, nuscenes_keyframe.channels, red, nuscenes_keyframe.rig, CONFIG)
    np.testing.assert_allclose(
        inputs.images[0, :, 0, 0], (np.array([1, 0, 0]) - IMAGENET_MEAN) / IMAGENET_STD
    )


def test_real_images_are_resized_by_resize_image_and_normalised(nuscenes_keyframe, keyframe_inputs):
    image = nuscenes_keyframe.images["CAM_FRONT"]
    small = resize_image(image, 240, 136) / 255.0
    expected = ((small - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(keyframe_inputs.images[0], expected, atol=1e-5)


def test_resize_image_stays_close_to_area_averaging_on_real_images(nuscenes_keyframe):
    import cv2

    for camera, image in nuscenes_keyframe.images.items():
        fast = resize_image(image, 240, 136).astype(np.float64)
        area = cv2.resize(image, (240, 136), interpolation=cv2.INTER_AREA).astype(np.float64)
        assert fast.shape == (136, 240, 3), camera
        assert np.abs(fast - area).mean() < 1.0, camera


def test_resize_image_anti_aliases_fine_patterns():
    """Texture finer than the network's pixels averages out instead of aliasing into stripes of full
    contrast, as plain bilinear sampling of a 1600x900 image would (std 40 and 111 grey levels here)."""
    y, x = np.mgrid[:900, :1600]
    for pattern, worst in (((x + y) % 2, 15), ((x // 3) % 2, 30)):
        image = np.repeat((pattern * 255).astype(np.uint8)[..., None], 3, axis=2)
        small = resize_image(image, 240, 136).astype(np.float64)
        assert abs(small.mean() - 127.5) < 2
        assert small.std() < worst


def test_resize_image_is_area_averaging_for_images_up_to_twice_the_target():
    """The synthetic 480x270 cameras the default model is trained on take INTER_AREA unchanged."""
    import cv2

    image = np.random.default_rng(0).integers(0, 256, (270, 480, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        resize_image(image, 240, 136), cv2.resize(image, (240, 136), interpolation=cv2.INTER_AREA)
    )


def test_deterministic(nuscenes_keyframe, keyframe_inputs):
    again = prepare_frame(nuscenes_keyframe, CONFIG)
    for name in (*INPUT_NAMES, "point_valid"):
        np.testing.assert_array_equal(getattr(again, name), getattr(keyframe_inputs, name), err_msg=name)


def test_config_round_trip_and_errors():
    config = PreprocessConfig(range_height=64, range_width=2048, cameras=("a", "b"), occlusion_cell=0)
    data = yaml.safe_load(yaml.safe_dump(config.to_dict()))
    assert data["cameras"] == ["a", "b"]
    assert PreprocessConfig.from_dict(data) == config
    assert PreprocessConfig.from_dict({}) == PreprocessConfig() == PreprocessConfig.from_dict(None)
    assert PreprocessConfig.from_dict({"max_range": 50}).max_range == 50.0
    with pytest.raises(ValueError, match=r"unknown keys \['range_hight', 'zzz'\]"):
        PreprocessConfig.from_dict({"range_hight": 64, "zzz": 1}, source="train.yaml")
    with pytest.raises(ValueError, match=r"train\.yaml: preprocess\.image_width"):
        PreprocessConfig.from_dict({"image_width": 100}, source="train.yaml")
    for bad in (
        {"image_height": 135},
        {"range_height": 0},
        {"fov_up_deg": -40},
        {"max_range": 0},
        {"cameras": "CAM_FRONT"},
        {"cameras": ["a", "a"]},
        {"std": [1, 0, 1]},
        {"use_ring": "yes"},
        {"min_depth": "far"},
        {"min_range": 80},
        {"mean": [0.5, 0.5]},
    ):
        with pytest.raises(ValueError, match=f"preprocess\\.{next(iter(bad))}"):
            PreprocessConfig.from_dict(bad)


def test_missing_intensity_is_an_error(nuscenes_keyframe):
    with pytest.raises(ValueError, match="intensity"):
        prepare(nuscenes_keyframe.xyz, ("x", "y", "z"), {}, nuscenes_keyframe.rig, CONFIG)


def test_batch_collates_frames(nuscenes_keyframe, keyframe_inputs):
    subset = nuscenes_keyframe.points[::3]
    second = prepare(subset, nuscenes_keyframe.channels, {}, nuscenes_keyframe.rig, CONFIG)
    collated = batch([keyframe_inputs, second])
    n1, n2, m = keyframe_inputs.num_points, len(subset), len(CONFIG.cameras)
    assert collated["range_image"].shape == (2, 6, 32, 512)
    assert collated["images"].shape == (2 * m, 3, 136, 240)
    assert collated["point_features"].shape == (n1 + n2, 5)
    assert collated["point_uv"].shape == (n1 + n2, m, 2)
    assert collated["point_visible"].shape == (n1 + n2, m)
    assert collated["point_valid"].shape == (n1 + n2,)
    assert collated["point_index"].shape == (n1 + n2, 3)
    assert collated["point_index"].dtype == np.int64
    np.testing.assert_array_equal(collated["point_batch_sizes"], [n1, n2])
    np.testing.assert_array_equal(collated["point_index"][:n1, 0], 0)
    np.testing.assert_array_equal(collated["point_index"][n1:, 0], 1)
    np.testing.assert_array_equal(collated["point_index"][n1:, 1:], second.point_index)
    np.testing.assert_array_equal(collated["range_image"][1], second.range_image)
    np.testing.assert_array_equal(collated["images"][m:], 0)
    np.testing.assert_array_equal(collated["images"][:m], keyframe_inputs.images)
    with pytest.raises(ValueError, match="no frames"):
        batch([])


def test_synthetic_frame_with_motion_compensation():
    from xkd_ros.data.synthetic import SyntheticGenerator, load_config

    small = {"camera": {"width": 240, "height": 136}, "lidar": {"azimuth_steps": 360}}
    frame = SyntheticGenerator(load_config(overrides=small), 1).sample("train", 0).frame
    assert frame.image_poses
    inputs = prepare_frame(frame, CONFIG)
    np.testing.assert_array_equal(inputs.point_index[:, 0], 31 - frame.channel("ring").astype(np.int64))
    assert inputs.point_visible.sum(axis=0).min() > 0  # every camera sees part of the street
    projection = project_points(frame.points, frame.compensated_rig(), 0.1, 8)
    np.testing.assert_array_equal(inputs.point_visible, projection.mask.T.astype(np.float32))


def test_an_empty_scan_gives_empty_point_arrays(nuscenes_keyframe):
    frame = nuscenes_keyframe
    inputs = prepare(np.zeros((0, 5), np.float32), frame.channels, frame.images, frame.rig, CONFIG)
    assert inputs.point_features.shape == (0, 5)
    assert inputs.point_index.shape == (0, 2)
    assert inputs.point_uv.shape == (0, 6, 2)
    assert (inputs.range_image == 0).all()
    assert inputs.images.any()
