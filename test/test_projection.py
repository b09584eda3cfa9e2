"""Projection into cameras: real-data counts and label agreement, lens models against OpenCV, occlusion."""

import cv2
import numpy as np
import pytest
from conftest import DATA, NUSCENES_COUNTS

from xkd_ros.data.classes import load_class_set
from xkd_ros.geometry import CameraCalibration, CameraIntrinsics, Rig, project_points


def test_nuscenes_keyframe_points_per_camera(nuscenes_keyframe):
    projection = project_points(nuscenes_keyframe.points, nuscenes_keyframe.rig, min_depth=0.1)
    assert projection.counts() == NUSCENES_COUNTS
    index, uv, depth = projection.visible("CAM_BACK")
    assert len(index) == 4826
    assert np.all((uv >= 0) & (uv < [1600, 900]))
    assert np.all(depth > 0.1)


def test_rellis_point_labels_agree_with_label_image(rellis_frame):
    raw_label_image = cv2.imread(
        str(DATA / "rellis3d_000104/frame000104-1581624663_149.png"), cv2.IMREAD_UNCHANGED
    )
    label_image = load_class_set("rellis3d").map_raw(raw_label_image, source="label image")
    valid = np.any(rellis_frame.xyz != 0, axis=1)  # all-zero points are Ouster "no return"
    points, labels = rellis_frame.points[valid], rellis_frame.labels[valid]

    def agreement(**occlusion):
        projection = project_points(points, rellis_frame.rig, min_depth=0.5, **occlusion)
        index, uv, _ = projection.visible("pylon_camera")
        pixel_labels = label_image[uv[:, 1].astype(int), uv[:, 0].astype(int)]
        return len(index), float(np.mean(pixel_labels == labels[index]))

    seen_all, _ = agreement()
    seen, score = agreement(occlusion_cell=8, occlusion_tolerance=0.5)
    assert seen_all == 7428
    assert seen < seen_all  # the occlusion test removed hidden points
    assert score >= 0.77


def random_points_in_view(rng, n=2000):
    xy = rng.uniform(-0.6, 0.6, size=(n, 2))
    z = rng.uniform(1.0, 50.0, size=n)
    return np.column_stack([xy * z[:, None], z])


@pytest.mark.parametrize(
    ("model", "D"),
    [
        ("plumb_bob", [-0.3, 0.12, 0.001, -0.002, -0.02]),
        ("rational_polynomial", [0.4, -0.1, 0.001, 0.002, 0.01, 0.7, -0.05, 0.02]),
        ("equidistant", [0.05, -0.01, 0.003, -0.001]),
    ],
)
def test_distortion_matches_opencv(model, D):
    rng = np.random.default_rng(0)
    K = np.array([[800.0, 0, 640], [0, 810.0, 360], [0, 0, 1]])
    intrinsics = CameraIntrinsics(width=1280, height=720, K=K, D=D, distortion_model=model)
    points = random_points_in_view(rng)
    uv, mask = intrinsics.project(points)
    if model == "equidistant":
        expected = cv2.fisheye.projectPoints(
            points.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, np.array(D)
        )[0]
    else:
        expected = cv2.projectPoints(points, np.zeros(3), np.zeros(3), K, np.array(D))[0]
    expected = expected.reshape(-1, 2)
    inside = (expected[:, 0] >= 0) & (expected[:, 0] < 1280) & (expected[:, 1] >= 0) & (expected[:, 1] < 720)
    assert inside.sum() > 500
    assert np.array_equal(mask, inside)
    assert np.abs(uv[mask] - expected[mask]).max() < 1e-3


def test_strong_barrel_distortion_does_not_fold_far_points_into_the_image():
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    intrinsics = CameraIntrinsics(width=640, height=480, K=K, D=[-0.3, 0, 0, 0, 0])
    far_off_axis = np.array([[1.9, 0.0, 1.0]])  # 62 degrees off axis; the image edge is at about 38
    folded = cv2.projectPoints(far_off_axis, np.zeros(3), np.zeros(3), K, intrinsics.D)[0].reshape(2)
    assert 0 <= folded[0] < 640  # the polynomial alone puts it inside the image
    _, mask = intrinsics.project(far_off_axis)
    assert not mask[0]


def test_points_behind_or_too_close_are_not_seen():
    intrinsics = CameraIntrinsics(width=100, height=100, K=[[50, 0, 50], [0, 50, 50], [0, 0, 1]])
    uv, mask = intrinsics.project(
        np.array([[0.0, 0.0, -5.0], [0.0, 0.0, 0.05], [0.0, 0.0, 5.0]]), min_depth=0.1
    )
    assert mask.tolist() == [False, False, True]
    assert np.isnan(uv[0]).all()
    assert uv[2].tolist() == [50.0, 50.0]


def one_camera_rig(T=None):
    intrinsics = CameraIntrinsics(width=100, height=100, K=[[50, 0, 50], [0, 50, 50], [0, 0, 1]])
    return Rig.from_cameras([CameraCalibration("cam", intrinsics, np.eye(4) if T is None else T)])


def test_occlusion_keeps_the_nearest_surface_per_cell():
    # Three points on one ray (same pixel), one elsewhere: the far one is hidden, the near pair survives.
    points = np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 5.3], [0.0, 0.0, 20.0], [2.0, 2.0, 5.0]], dtype=np.float32)
    projection = project_points(points, one_camera_rig(), occlusion_cell=4, occlusion_tolerance=0.5)
    assert projection.mask[0].tolist() == [True, True, False, True]
    assert project_points(points, one_camera_rig()).mask[0].all()


def test_projection_applies_the_extrinsics():
    T = np.eye(4)
    T[:3, 3] = [1.0, 0.0, 0.0]  # the camera sits 1 m to the left of the LiDAR along its x axis
    projection = project_points(np.array([[0.0, 0.0, 10.0]]), one_camera_rig(T))
    np.testing.assert_allclose(projection.uv[0, 0], [55.0, 50.0])
    assert projection.depth[0, 0] == pytest.approx(10.0)


def test_nan_and_empty_clouds():
    # Organised drivers publish NaN for beams with no return: never seen, never an error.
    points = np.array([[np.nan, np.nan, np.nan], [0.0, 0.0, 5.0], [0.0, np.nan, 5.0]], dtype=np.float32)
    projection = project_points(points, one_camera_rig(), occlusion_cell=4)
    assert projection.mask[0].tolist() == [False, True, False]
    empty = project_points(np.empty((0, 3), dtype=np.float32), one_camera_rig(), occlusion_cell=4)
    assert empty.uv.shape == (1, 0, 2)
    assert empty.counts() == {"cam": 0}
