"""The shared pre-processing path: spec of the network inputs, range image, camera coordinates, config; the
rig's LiDAR profile (beams, rows, ring order, intensity scale, min range) and cameras (any names, any count,
rig order)."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import yaml

from xkd_ros.data import Frame
from xkd_ros.data.nuscenes import CAMERAS as NUSCENES_CAMERAS
from xkd_ros.geometry import CameraCalibration, CameraIntrinsics, LidarProfile, Rig, project_points
from xkd_ros.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_NAMES,
    MOVED_TO_RIG,
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


def camera_at(name: str, yaw_deg: float, width: int = 64, height: int = 48) -> CameraCalibration:
    """A pinhole camera at the LiDAR's origin looking along azimuth `yaw_deg` (0: the LiDAR's x axis)."""
    yaw = np.deg2rad(yaw_deg)
    R_lidar_cam = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    T = np.eye(4)
    # LiDAR x fwd, y left, z up -> optical x right, y down, z forward
    T[:3, :3] = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]]) @ R_lidar_cam.T
    K = [[width / 2, 0, width / 2], [0, width / 2, height / 2], [0, 0, 1]]
    return CameraCalibration(name, CameraIntrinsics(width, height, K), T)


def forward_rig(width: int = 64, height: int = 48, lidar: LidarProfile | None = None) -> Rig:
    """One pinhole camera looking along the LiDAR's x axis, at the LiDAR's origin."""
    return Rig.from_cameras([camera_at("CAM", 0, width, height)], lidar=lidar)


def with_lidar(rig: Rig, **changes) -> Rig:
    """`rig` with its LiDAR profile changed."""
    return Rig(rig.cameras, rig.lidar_frame, dataclasses.replace(rig.lidar, **changes))


def test_names_shapes_and_dtypes(nuscenes_keyframe, keyframe_inputs):
    n, m = len(nuscenes_keyframe.points), len(NUSCENES_CAMERAS)
    inputs = keyframe_inputs.as_dict()
    assert tuple(inputs) == INPUT_NAMES
    spec = input_spec(CONFIG)
    assert keyframe_inputs.cameras == NUSCENES_CAMERAS  # the rig's, in its order
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
        assert tuple({"N": n, "M": m, "H": 32}.get(d, d) for d in spec[name][0]) == shape
    assert spec["range_image"][0][1] == "H"
    assert spec["images"][0][0] == spec["point_uv"][0][1] == spec["point_visible"][0][1] == "M"
    # The HDL-32E profile of the reader: intensity 0..255 divided out; returns within 1 m (the ego vehicle's)
    # invalid, with zero features.
    assert keyframe_inputs.point_valid.dtype == bool
    distance = np.linalg.norm(nuscenes_keyframe.xyz.astype(np.float64), axis=1)
    np.testing.assert_array_equal(keyframe_inputs.point_valid, distance > 1.0)
    assert 0 < (distance <= 1.0).sum() < len(distance) / 3
    valid = keyframe_inputs.point_valid
    features = keyframe_inputs.point_features
    np.testing.assert_array_equal(features[valid, :2], nuscenes_keyframe.points[valid, :2])
    # z: height above the ground, the LIDAR_TOP 1.84 m above it
    height = nuscenes_keyframe.rig.lidar.mount_height
    assert height == pytest.approx(1.84)
    np.testing.assert_array_equal(features[valid, 2], nuscenes_keyframe.points[valid, 2] + np.float32(height))
    np.testing.assert_array_equal(features[valid, 3], nuscenes_keyframe.points[valid, 3] / np.float32(255))
    assert 0.9 < features[valid, 3].max() <= 1
    np.testing.assert_allclose(features[valid, 4], np.minimum(distance[valid], CONFIG.max_range), rtol=1e-6)
    assert (features[~valid] == 0).all()


def test_module_does_not_import_torch():
    code = "import sys, xkd_ros.preprocess; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_range_image_keeps_the_nearest_point_of_every_pixel(keyframe_inputs):
    inputs = keyframe_inputs
    valid = np.flatnonzero(inputs.point_valid)  # invalid points (within min_range) take no part
    rows, cols = inputs.point_index[valid].T
    image = inputs.range_image
    distance = inputs.point_features[valid, 4]
    assert (image[5, rows, cols] == 1).all()
    assert (image[0, rows, cols] <= distance).all()
    # Reference z-buffer on the unclipped range: the nearest point of each pixel, ties to the lower index.
    pixel = rows * CONFIG.range_width + cols
    xyz = inputs.point_features[valid, :3] - [0, 0, np.float32(1.84)]  # back to the LiDAR frame
    exact = np.sqrt(np.einsum("ij,ij->i", xyz, xyz))
    order = np.lexsort((valid, exact, pixel))
    first = order[np.r_[True, np.diff(pixel[order]) != 0]]
    assert int(image[5].sum()) == len(first)
    assert len(first) < len(pixel)  # some points lost their pixel
    features = inputs.point_features[valid[first]]
    np.testing.assert_array_equal(image[1:5, rows[first], cols[first]].T, features[:, :4])
    np.testing.assert_array_equal(image[0, rows[first], cols[first]], features[:, 4])
    assert (exact[first] > CONFIG.max_range).any()  # stored range clipped, nearest by the true one
    empty = image[5] == 0
    assert (image[:, empty] == 0).all()


def test_ring_rows_put_the_highest_beam_on_top(nuscenes_keyframe, keyframe_inputs):
    ring = nuscenes_keyframe.channel("ring").astype(np.int64)
    np.testing.assert_array_equal(keyframe_inputs.point_index[:, 0], 31 - ring)


def test_ring_beyond_the_beam_count_is_an_error_naming_lidar_beams(nuscenes_keyframe):
    rig = with_lidar(nuscenes_keyframe.rig, beams=16, sensor="")
    with pytest.raises(
        ValueError, match=r"ring: values must lie in \[0, lidar\.beams=16\), got 16\.0\.\.31\.0"
    ):
        prepare(nuscenes_keyframe.points, nuscenes_keyframe.channels, {}, rig, CONFIG)


def test_elevation_rows_are_monotone(nuscenes_keyframe):
    points, channels = nuscenes_keyframe.points[:, :4], nuscenes_keyframe.channels[:4]  # no ring
    rig = with_lidar(nuscenes_keyframe.rig, min_range=0.0)  # every point, binned by its elevation
    inputs = prepare(points, channels, {}, rig, CONFIG)
    xyz = nuscenes_keyframe.xyz.astype(np.float64)
    elevation = np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1]))
    rows = inputs.point_index[np.argsort(elevation, kind="stable"), 0]
    assert (np.diff(rows) <= 0).all()
    assert rows[0] == 31
    assert rows[-1] == 0
    # The HDL-32E profile's field of view reaches half a beam spacing (1.33 deg) past the outer beams; with
    # the returns off the ego vehicle dropped the rows mostly match the rings (the beams do not all start
    # at the LiDAR origin, so near points stray).
    inputs = prepare(points, channels, {}, nuscenes_keyframe.rig, CONFIG)
    ring_rows = 31 - nuscenes_keyframe.channel("ring").astype(np.int64)
    valid = inputs.point_valid
    assert np.mean(inputs.point_index[valid, 0] == ring_rows[valid]) > 0.85
    assert np.abs(inputs.point_index[valid, 0] - ring_rows[valid]).max() <= 4


def test_rellis_rows_by_elevation_match_its_ring(rellis_frame):
    """The RELLIS-3D reader's profile (first-generation OS1-64 field of view, ring top_down) puts every
    point in its beam's row whether the scan has the ring or not."""
    with_ring = prepare_frame(rellis_frame, CONFIG)
    without = prepare(rellis_frame.points[:, :4], rellis_frame.channels[:4], {}, rellis_frame.rig, CONFIG)
    valid = with_ring.point_valid
    assert with_ring.range_image.shape == (6, 64, 512)
    np.testing.assert_array_equal(with_ring.point_index[:, 0], rellis_frame.channel("ring"))  # top_down
    np.testing.assert_array_equal(without.point_index[valid], with_ring.point_index[valid])
    assert 1 <= with_ring.point_features[valid, 3].max() < 1.001  # intensity / 0.0115: its strongest return


def test_column_and_row_conventions():
    config = PreprocessConfig(range_width=8)
    lidar = LidarProfile(beams=4, fov_up_deg=10, fov_down_deg=-30, min_range=0.0, intensity_scale=1.0)
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
    inputs = prepare(points, ("x", "y", "z", "intensity"), {}, forward_rig(lidar=lidar), config)
    np.testing.assert_array_equal(inputs.point_index[:, 1], [4, 2, 6, 0, 7, 4, 4, 4])
    np.testing.assert_array_equal(inputs.point_index[:, 0], [1, 1, 1, 1, 1, 0, 3, 1])
    assert inputs.point_features[7, 4] == config.max_range  # clipped range, raw x
    assert inputs.point_features[7, 0] == 100
    assert inputs.range_image[0, 1, 4] == 10
    assert inputs.range_image[4, 1, 4] == 1
    assert inputs.range_image.shape == (6, 4, 8)
    assert inputs.images.shape == (0, 3, 136, 240)  # the rig's camera has no image
    assert inputs.point_uv.shape == (8, 0, 2)
    assert inputs.cameras == ()


def test_point_uv_maps_back_to_the_projected_pixel(nuscenes_keyframe, keyframe_inputs):
    rig = nuscenes_keyframe.compensated_rig()
    valid = keyframe_inputs.point_valid  # beyond the rig's min_range: the points prepare projects
    projection = project_points(nuscenes_keyframe.points[valid], rig, min_depth=0.1, occlusion="footprint")
    assert tuple(projection.cameras) == NUSCENES_CAMERAS
    for j, camera in enumerate(keyframe_inputs.cameras):
        k = projection.cameras.index(camera)
        mask = np.zeros(len(valid), dtype=bool)
        mask[valid] = projection.mask[k]
        np.testing.assert_array_equal(keyframe_inputs.point_visible[:, j], mask.astype(np.float32))
        intrinsics = rig[camera].intrinsics
        uv = denormalise(
            keyframe_inputs.point_uv[mask, j].astype(np.float64), intrinsics.width, intrinsics.height
        )
        np.testing.assert_allclose(uv, projection.uv[k, projection.mask[k]], rtol=0, atol=1e-3)
        # project_points counts u in [0, W) as inside; with pixel centres at integers the image ends at
        # W - 0.5, so the last half pixel maps just past 1.
        assert (np.abs(keyframe_inputs.point_uv[mask, j]) <= 1 + 1 / intrinsics.height).all()
        assert (keyframe_inputs.point_uv[~mask, j] == 0).all()
    # The occlusion test removes some points the plain projection counts as seen.
    plain = project_points(nuscenes_keyframe.points[valid], rig, min_depth=0.1)
    assert keyframe_inputs.point_visible.sum() < plain.mask.sum()
    no_occlusion = prepare_frame(nuscenes_keyframe, PreprocessConfig(occlusion="none"))
    np.testing.assert_array_equal(no_occlusion.point_visible[valid], plain.mask.T.astype(np.float32))


def test_point_uv_samples_the_resized_image_where_the_point_projects():
    """A point aimed at pixel (u, v) of the original image samples the same spot of the resized image."""
    rig = forward_rig(64, 48)
    config = PreprocessConfig(image_width=16, image_height=16, occlusion_cell=0)
    # Optical (X, Y, Z=10) -> u = 32 X / 10 + 32; LiDAR (x, y, z) = (Z, -X, -Y).
    u, v = np.array([0.0, 63.0, 20.0]), np.array([0.0, 47.0, 30.0])
    X, Y = (u - 32) * 10 / 32, (v - 24) * 10 / 32
    points = np.column_stack([np.full(3, 10.0), -X, -Y, np.zeros(3)]).astype(np.float32)
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    inputs = prepare(points, ("x", "y", "z", "intensity"), {"CAM": image}, rig, config)
    assert (inputs.point_visible == 1).all()
    np.testing.assert_allclose(denormalise(inputs.point_uv[:, 0], 64, 48), np.column_stack([u, v]), atol=1e-4)
    # In the 16x16 image, align_corners=False: pixel index = (x + 1) / 2 * 16 - 0.5.
    x, y = inputs.point_uv[:, 0].T
    np.testing.assert_allclose((x + 1) / 2 * 16, (u + 0.5) / 64 * 16, atol=1e-5)
    np.testing.assert_allclose((y + 1) / 2 * 16, (v + 0.5) / 48 * 16, atol=1e-5)


def test_a_rig_camera_without_an_image_is_left_out(nuscenes_keyframe, keyframe_inputs):
    """A camera whose image is missing (late, dropped) is not in the batch; the others keep the rig's order
    and exactly what they had."""
    images = {c: i for c, i in nuscenes_keyframe.images.items() if c != "CAM_BACK"}
    inputs = prepare(
        nuscenes_keyframe.points, nuscenes_keyframe.channels, images, nuscenes_keyframe.rig, CONFIG
    )
    others = [j for j, c in enumerate(NUSCENES_CAMERAS) if c != "CAM_BACK"]
    assert inputs.cameras == tuple(NUSCENES_CAMERAS[j] for j in others)
    assert inputs.images.shape[0] == inputs.point_uv.shape[1] == inputs.point_visible.shape[1] == 5
    np.testing.assert_array_equal(inputs.images, keyframe_inputs.images[others])
    np.testing.assert_array_equal(inputs.point_visible, keyframe_inputs.point_visible[:, others])
    np.testing.assert_array_equal(inputs.point_uv, keyframe_inputs.point_uv[:, others])
    np.testing.assert_array_equal(inputs.range_image, keyframe_inputs.range_image)
    with pytest.raises(ValueError, match=r"images\.CAM_NOWHERE: camera is not in the rig"):
        prepare(
            nuscenes_keyframe.points,
            nuscenes_keyframe.channels,
            {"CAM_NOWHERE": images["CAM_FRONT"]},
            nuscenes_keyframe.rig,
            CONFIG,
        )


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
    rig = with_lidar(nuscenes_keyframe.rig, min_range=0.0)  # exact zeros are invalid all the same
    frame = Frame(points, nuscenes_keyframe.channels, rig, nuscenes_keyframe.images)
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
    config = PreprocessConfig(range_width=2048, image_width=96, occlusion_cell=0)
    data = yaml.safe_load(yaml.safe_dump(config.to_dict()))
    assert PreprocessConfig.from_dict(data) == config
    assert PreprocessConfig.from_dict({}) == PreprocessConfig() == PreprocessConfig.from_dict(None)
    assert PreprocessConfig.from_dict({"max_range": 50}).max_range == 50.0
    with pytest.raises(ValueError, match=r"unknown keys \['range_widht', 'zzz'\]"):
        PreprocessConfig.from_dict({"range_widht": 64, "zzz": 1}, source="train.yaml")
    with pytest.raises(ValueError, match=r"train\.yaml: preprocess\.image_width"):
        PreprocessConfig.from_dict({"image_width": 100}, source="train.yaml")
    for bad in (
        {"image_height": 135},
        {"range_width": 0},
        {"max_range": 0},
        {"std": [1, 0, 1]},
        {"min_depth": "far"},
        {"occlusion_tolerance": -1},
        {"mean": [0.5, 0.5]},
    ):
        with pytest.raises(ValueError, match=f"preprocess\\.{next(iter(bad))}"):
            PreprocessConfig.from_dict(bad)


@pytest.mark.parametrize(
    ("key", "value", "where"),
    [
        ("range_height", 64, r"rig\.lidar\.beams"),
        ("fov_up_deg", 10.67, r"rig\.lidar\.fov_up_deg"),
        ("fov_down_deg", -30.67, r"rig\.lidar\.fov_down_deg"),
        ("use_ring", True, r"rig\.lidar .*ring_order"),
        ("min_range", 1.0, r"rig\.lidar\.min_range"),
        ("cameras", ["CAM_FRONT"], r"the rig's cameras"),
    ],
)
def test_sensor_settings_are_the_rigs_now(key, value, where):
    """An experiment file or model metadata that still sets a sensor setting is refused, naming the key and
    where it lives now, instead of being silently overruled by the rig."""
    assert key in MOVED_TO_RIG
    with pytest.raises(ValueError, match=rf"train\.yaml: preprocess\.{key}: .* the rig's now: {where}"):
        PreprocessConfig.from_dict({"range_width": 512, key: value}, source="train.yaml")
    with pytest.raises(TypeError):
        PreprocessConfig(**{key: value})


def test_missing_intensity_is_an_error(nuscenes_keyframe):
    with pytest.raises(ValueError, match="intensity"):
        prepare(nuscenes_keyframe.xyz, ("x", "y", "z"), {}, nuscenes_keyframe.rig, CONFIG)


def test_batch_collates_frames(nuscenes_keyframe, keyframe_inputs):
    subset = nuscenes_keyframe.points[::3]
    grey = {c: np.full_like(i, 128) for c, i in nuscenes_keyframe.images.items()}
    second = prepare(subset, nuscenes_keyframe.channels, grey, nuscenes_keyframe.rig, CONFIG)
    collated = batch([keyframe_inputs, second])
    n1, n2, m = keyframe_inputs.num_points, len(subset), len(NUSCENES_CAMERAS)
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
    np.testing.assert_array_equal(collated["images"][m:], second.images)
    np.testing.assert_array_equal(collated["images"][:m], keyframe_inputs.images)
    with pytest.raises(ValueError, match="no frames"):
        batch([])


def test_batch_refuses_frames_of_other_shapes(nuscenes_keyframe, keyframe_inputs):
    """Frames of one batch share H and M; a frame missing a camera or of another beam count is refused by
    name, not stacked into a wrong tensor."""
    frame = nuscenes_keyframe
    no_cameras = prepare(frame.points, frame.channels, {}, frame.rig, CONFIG)
    with pytest.raises(ValueError, match=r"frame 0: H=32 rows, M=6 cameras, frame 1: H=32 rows, M=0 cameras"):
        batch([keyframe_inputs, no_cameras])
    rig64 = with_lidar(frame.rig, beams=64, sensor="")
    taller = prepare(frame.points, frame.channels, frame.images, rig64, CONFIG)
    assert taller.shape_key == (64, 6)
    with pytest.raises(
        ValueError, match=r"must share the range-image height H \(beams\) and the camera count M"
    ):
        batch([keyframe_inputs, taller])
    assert batch([no_cameras, no_cameras])["images"].shape == (0, 3, 136, 240)


def test_synthetic_frame_with_motion_compensation():
    from xkd_ros.data.synthetic import SyntheticGenerator, load_config

    small = {"camera": {"width": 240, "height": 136}, "lidar": {"azimuth_steps": 360}}
    frame = SyntheticGenerator(load_config(overrides=small), 1).sample("train", 0).frame
    assert frame.image_poses
    inputs = prepare_frame(frame, CONFIG)
    beams = frame.rig.lidar.beams
    np.testing.assert_array_equal(
        inputs.point_index[:, 0], beams - 1 - frame.channel("ring").astype(np.int64)
    )
    assert inputs.cameras == tuple(frame.rig.names)
    assert inputs.point_visible.sum(axis=0).min() > 0  # every camera sees part of the street
    valid = inputs.point_valid
    projection = project_points(frame.points[valid], frame.compensated_rig(), 0.1, occlusion="footprint")
    np.testing.assert_array_equal(inputs.point_visible[valid], projection.mask.T.astype(np.float32))


def test_an_empty_scan_gives_empty_point_arrays(nuscenes_keyframe):
    frame = nuscenes_keyframe
    inputs = prepare(np.zeros((0, 5), np.float32), frame.channels, frame.images, frame.rig, CONFIG)
    assert inputs.point_features.shape == (0, 5)
    assert inputs.point_index.shape == (0, 2)
    assert inputs.point_uv.shape == (0, 6, 2)
    assert (inputs.range_image == 0).all()
    assert inputs.images.any()


# ---- the rig's LiDAR profile and cameras ------------------------------------------------------------------


def beam_scan(elevations_deg: np.ndarray, columns: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An organised scan of a LiDAR with beams at `elevations_deg` (row 0 the highest): (beams*columns, 4)
    x, y, z, intensity 0..255 of returns 3..60 m away (beyond every preset's min_range), and each point's
    beam (0 = highest)."""
    rng = np.random.default_rng(seed)
    beam = np.repeat(np.arange(len(elevations_deg)), columns)
    azimuth = np.tile(np.linspace(-np.pi, np.pi, columns, endpoint=False), len(elevations_deg))
    elevation = np.deg2rad(np.asarray(elevations_deg)[beam])
    distance = rng.uniform(3, 60, len(beam))
    xyz = distance[:, None] * np.column_stack(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]
    )
    intensity = rng.integers(0, 256, len(beam))
    return np.column_stack([xyz, intensity]).astype(np.float32), beam


@pytest.mark.parametrize(
    "sensor", ["velodyne_vlp16", "velodyne_hdl32e", "velodyne_hdl64e", "velodyne_vls128"]
)
@pytest.mark.parametrize("ring", [None, "bottom_up", "top_down"])
def test_any_beam_count_with_or_without_a_ring(sensor, ring):
    """16-, 32-, 64- and 128-beam scans: H is the beam count and each point lands in its beam's row, from
    its elevation or from its ring counted either way."""
    lidar = LidarProfile.from_dict({"sensor": sensor, "ring_order": ring or "bottom_up"})
    points, beam = beam_scan(lidar.beam_elevations_deg())
    channels = ("x", "y", "z", "intensity")
    if ring is not None:
        ring_values = lidar.beams - 1 - beam if ring == "bottom_up" else beam
        points, channels = np.column_stack([points, ring_values]).astype(np.float32), (*channels, "ring")
    inputs = prepare(points, channels, {}, forward_rig(lidar=lidar), CONFIG)
    assert inputs.range_image.shape == (6, lidar.beams, CONFIG.range_width)
    assert inputs.point_valid.all()
    np.testing.assert_array_equal(inputs.point_index[:, 0], beam)
    assert inputs.range_image[5].sum(axis=1).min() > 0  # every row filled


def test_an_elevation_table_bins_uneven_beams_to_the_nearest():
    """An HDL-64E-like table (two blocks, dense in the middle, given in any order): each point goes to the
    row of its nearest beam, as an even spread over the field of view could not."""
    table = np.r_[np.linspace(2.0, -8.33, 32), np.linspace(-8.83, -24.33, 32)]
    shuffled = np.random.default_rng(1).permutation(table)
    lidar = LidarProfile.from_dict({"beams": 64, "elevations_deg": shuffled.tolist(), "min_range": 0.0})
    np.testing.assert_allclose(lidar.beam_elevations_deg(), table)
    points, beam = beam_scan(table)
    # off the beam by up to 40 % of the gap to the next one, up or down: still that beam's row
    gap = np.abs(np.diff(table)).min()
    pitch = np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1]))
    nudged = pitch + np.deg2rad(0.4 * gap) * np.where(np.arange(len(beam)) % 2, 1, -1)
    scale = np.linalg.norm(points[:, :3], axis=1)
    azimuth = np.arctan2(points[:, 1], points[:, 0])
    points[:, :3] = (scale[:, None] * np.column_stack(
        [np.cos(nudged) * np.cos(azimuth), np.cos(nudged) * np.sin(azimuth), np.sin(nudged)]
    )).astype(np.float32)  # fmt: skip
    inputs = prepare(points, ("x", "y", "z", "intensity"), {}, forward_rig(lidar=lidar), CONFIG)
    np.testing.assert_array_equal(inputs.point_index[:, 0], beam)
    even = dataclasses.replace(lidar, elevations_deg=())  # the same field of view spread evenly
    rows = prepare(points, ("x", "y", "z", "intensity"), {}, forward_rig(lidar=even), CONFIG).point_index[
        :, 0
    ]
    assert np.mean(rows == beam) < 0.5


def test_the_intensity_scale_gives_every_sensor_one_network_input(nuscenes_keyframe):
    """The same scene as a ROS Velodyne driver (0..255) and as KITTI-style remission (0..1) feeds the network
    the same numbers once each rig states its scale."""
    frame = nuscenes_keyframe
    remission = frame.points.copy()
    remission[:, 3] /= np.float32(255)
    velodyne = prepare(frame.points, frame.channels, frame.images, frame.rig, CONFIG)
    kitti = prepare(
        remission, frame.channels, frame.images, with_lidar(frame.rig, intensity_scale=1.0), CONFIG
    )
    for name in (*INPUT_NAMES, "point_valid"):
        np.testing.assert_array_equal(getattr(kitti, name), getattr(velodyne, name), err_msg=name)
    valid = velodyne.point_valid
    assert 0.5 < velodyne.point_features[valid, 3].max() <= 1
    assert 0.5 < velodyne.range_image[4].max() <= 1
    # Unstated, the 0..1 scan would reach the network 255 times too faint.
    wrong = prepare(remission, frame.channels, {}, frame.rig, CONFIG)
    assert wrong.point_features[valid, 3].max() < 0.01


def test_min_range_drops_the_ego_vehicles_returns():
    lidar = LidarProfile(min_range=1.0, intensity_scale=1.0)
    points = np.array([[0.5, 0, 0, 1], [0, -0.99, 0.1, 1], [0, 1.2, 0, 1], [10, 0, 0, 1]], np.float32)
    channels = ("x", "y", "z", "intensity")
    inputs = prepare(points, channels, {}, forward_rig(lidar=lidar), CONFIG)
    np.testing.assert_array_equal(inputs.point_valid, [False, False, True, True])
    assert (inputs.point_features[:2] == 0).all()
    assert inputs.range_image[5].sum() == 2  # only the two beyond 1 m
    near = prepare(points, channels, {}, forward_rig(lidar=dataclasses.replace(lidar, min_range=0.3)), CONFIG)
    assert near.point_valid.all()


RIG6 = ("left_fisheye", "image_2", "rear", "front_narrow", "zz_right", "a_back")  # not CAM_*, not sorted


@pytest.mark.parametrize("given", [(), ("image_2",), ("a_back", "rear", "image_2"), RIG6[::-1]])
def test_cameras_are_the_rigs_with_an_image_in_rig_order(given):
    """M = the rig's cameras that have an image (0, 1, 3, 6), whatever their names, in the rig's order
    whatever the order of the images; each camera's column holds its own projection."""
    rig = Rig.from_cameras(
        [camera_at(name, yaw) for name, yaw in zip(RIG6, range(0, 360, 60), strict=True)],
        lidar=LidarProfile(min_range=0.0, intensity_scale=1.0),
    )
    azimuth = np.deg2rad(np.arange(0, 360, 2.0))
    points = np.column_stack(
        [10 * np.cos(azimuth), 10 * np.sin(azimuth), np.zeros_like(azimuth), np.ones_like(azimuth)]
    ).astype(np.float32)
    images = {name: np.full((48, 64, 3), 10 * k, np.uint8) for k, name in enumerate(given)}
    inputs = prepare(points, ("x", "y", "z", "intensity"), images, rig, CONFIG)
    order = tuple(name for name in RIG6 if name in given)
    m = len(order)
    assert inputs.cameras == order
    assert inputs.images.shape == (m, 3, CONFIG.image_height, CONFIG.image_width)
    assert inputs.point_uv.shape == (len(points), m, 2)
    assert inputs.point_visible.shape == (len(points), m)
    for j, name in enumerate(order):
        alone = project_points(
            points[:, :3],
            rig.with_cameras([rig[name]]),
            min_depth=CONFIG.min_depth,
            occlusion=CONFIG.occlusion,
            occlusion_tolerance=CONFIG.occlusion_tolerance,
        )
        np.testing.assert_array_equal(inputs.point_visible[:, j], alone.mask[0])
        assert 0 < inputs.point_visible[:, j].sum() < len(points)
        grey = 10 * given.index(name) / 255
        np.testing.assert_allclose(
            inputs.images[j, 0], (grey - IMAGENET_MEAN[0]) / IMAGENET_STD[0], rtol=1e-5
        )
    assert batch([inputs, inputs])["images"].shape[0] == 2 * m


def test_heights_are_above_the_ground_so_rigs_of_other_mounts_agree():
    """The same street seen from a LiDAR 1.73 m and 2.0 m above it: the scan's z differ by 0.27 m, the
    network's inputs do not (rows by ring, so binning does not depend on the height either)."""
    ground = np.array([[5.0, 1.0, 0.0], [20.0, -3.0, 0.13], [8.0, 4.0, 1.2]], np.float32)  # road, curb, car
    inputs = []
    for height in (1.73, 2.0):
        points = np.column_stack([ground - [0, 0, height], [10, 20, 30], [3, 5, 9]]).astype(np.float32)
        rig = Rig.from_cameras([], lidar=LidarProfile(mount_height=height, min_range=0.0))
        inputs.append(prepare(points, ("x", "y", "z", "intensity", "ring"), {}, rig, CONFIG))
    np.testing.assert_allclose(inputs[0].point_features[:, 2], ground[:, 2], atol=1e-6)
    np.testing.assert_allclose(inputs[0].point_features[:, 2], inputs[1].point_features[:, 2], atol=1e-6)
    np.testing.assert_allclose(inputs[0].range_image[3], inputs[1].range_image[3], atol=1e-6)


@pytest.mark.parametrize(("points", "cameras"), [(500, 6), (300, 1), (40, 0), (0, 3)])
def test_fusion_slots_hold_every_visible_pair_once_in_rig_order(points, cameras):
    """The compact camera inputs of an exported graph against a per-point loop: the points some camera
    sees, each one's visible cameras in rig order with their uv, padding slots invisible, and each point's
    place among the fused then LiDAR-only results."""
    from xkd_ros.preprocess import fusion_slots

    rng = np.random.default_rng(points + cameras)
    visible = (rng.random((points, cameras)) < 0.3).astype(np.float32)
    point_uv = np.where(visible[..., None] > 0, rng.uniform(-1, 1, (points, cameras, 2)), 0).astype(
        np.float32
    )
    slots = fusion_slots(point_uv, visible)
    fused = [p for p in range(points) if visible[p].any()]
    assert slots["fused_index"].tolist() == fused
    assert slots["lidar_index"].tolist() == [p for p in range(points) if not visible[p].any()]
    width = max([1, *(int(visible[p].sum()) for p in fused)])
    assert slots["fused_view"].shape == slots["fused_visible"].shape == (len(fused), width)
    assert slots["fused_uv"].shape == (len(fused), width, 2)
    for row, p in enumerate(fused):
        cams = np.flatnonzero(visible[p]).tolist()
        assert slots["fused_view"][row, : len(cams)].tolist() == cams
        assert slots["fused_visible"][row].tolist() == [1.0] * len(cams) + [0.0] * (width - len(cams))
        np.testing.assert_array_equal(slots["fused_uv"][row, : len(cams)], point_uv[p, cams])
    order = np.concatenate([slots["fused_index"], slots["lidar_index"]])
    np.testing.assert_array_equal(order[slots["output_source"]], np.arange(points))
    assert {name: array.dtype for name, array in slots.items() if name != "fused_uv"} == {
        "fused_index": np.int64, "fused_view": np.int64, "fused_visible": np.float32,
        "lidar_index": np.int64, "output_source": np.int64,
    }  # fmt: skip
