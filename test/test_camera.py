"""Lens models with every coefficient count OpenCV accepts: projection against cv2, D kept as given."""

import cv2
import numpy as np
import pytest
from conftest import assert_rigs_close

from xkd_ros.geometry import CalibrationError, CameraCalibration, CameraIntrinsics, Rig
from xkd_ros.msgs import camera_info_to_intrinsics, intrinsics_to_camera_info

K = np.array([[800.0, 0, 640], [0, 810.0, 360], [0, 0, 1]])
PLUMB_BOB_8 = [-0.3, 0.12, 0.001, -0.002, -0.02, 0.05, -0.01, 0.004]
# The 4-coefficient plumb_bob of PJLab OpenCalib's lidar2camera sample (center_camera-intrinsic.json).
OPENCALIB_D = [-0.10814499855041504, 0.1386680006980896, -0.0037975700106471777, -0.004841269925236702]


def points_in_view(n: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(0)
    xy = rng.uniform(-0.7, 0.7, size=(n, 2))
    z = rng.uniform(1.0, 50.0, size=n)
    return np.column_stack([xy * z[:, None], z])


@pytest.mark.parametrize(
    ("model", "D"),
    [
        ("plumb_bob", OPENCALIB_D),
        ("plumb_bob", PLUMB_BOB_8[:5]),
        ("plumb_bob", PLUMB_BOB_8),  # 8: OpenCV's rational model under the plumb_bob name
        ("rational_polynomial", [0.4, -0.1, 0.001, 0.002, 0.01, 0.7, -0.05, 0.02]),
        ("rational_polynomial", [0.1, -0.05, 0.001, 0.002, 0.01]),
        ("rational_polynomial", [0.1, -0.05, 0.001, 0.002]),
        ("equidistant", [0.05, -0.01, 0.003, -0.001]),
    ],
)
def test_every_accepted_length_projects_as_opencv(model, D):
    camera = CameraIntrinsics(width=1280, height=720, K=K, D=D, distortion_model=model)
    assert camera.D.tolist() == D  # as given, no padding
    points = points_in_view()
    uv, mask = camera.project(points)
    if model == "equidistant":
        expected = cv2.fisheye.projectPoints(
            points.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, np.array(D)
        )
    else:
        expected = cv2.projectPoints(points, np.zeros(3), np.zeros(3), K, np.array(D))
    expected = expected[0].reshape(-1, 2)
    inside = (expected[:, 0] >= 0) & (expected[:, 0] < 1280) & (expected[:, 1] >= 0) & (expected[:, 1] < 720)
    assert inside.sum() > 1000
    assert np.array_equal(mask, inside)
    assert np.abs(uv[mask] - expected[mask]).max() < 1e-3


def test_four_coefficients_are_five_with_k3_zero():
    """The issue's case: a 4-coefficient plumb_bob was refused; it is k1 k2 p1 p2 with k3 = 0."""
    four = CameraIntrinsics(1920, 1080, K, OPENCALIB_D)
    five = CameraIntrinsics(1920, 1080, K, [*OPENCALIB_D, 0.0])
    points = points_in_view()
    np.testing.assert_array_equal(four.project(points)[0], five.project(points)[0])
    assert four.max_radius == five.max_radius


@pytest.mark.parametrize(
    ("model", "D", "message"),
    [
        ("plumb_bob", [0.1, 0.01, 0.0], r"^D: plumb_bob takes 4, 5 or 8 coefficients \(k1 k2 p1 p2 .*got 3$"),
        ("plumb_bob", [0.0] * 6 + [0.1], r"^D: plumb_bob takes 4, 5 or 8 .*got 7$"),
        ("rational_polynomial", [0.1] * 14, r"^D: rational_polynomial takes 4, 5 or 8 .*got 14$"),
        ("equidistant", [0.1] * 5, r"^D: equidistant takes 4 coefficients \(k1 k2 k3 k4\), got 5$"),
    ],
)
def test_other_lengths_name_the_model_and_what_it_takes(model, D, message):
    with pytest.raises(CalibrationError, match=message):
        CameraIntrinsics(640, 480, K, D, model)


@pytest.mark.parametrize("D", [OPENCALIB_D, PLUMB_BOB_8[:5], PLUMB_BOB_8])
def test_camera_info_and_rig_file_keep_d_as_given(tmp_path, D):
    camera = CameraIntrinsics(1920, 1080, K, D)
    msg = intrinsics_to_camera_info(camera)
    assert list(msg.d) == D
    np.testing.assert_array_equal(camera_info_to_intrinsics(msg).D, D)
    rig = Rig.from_cameras([CameraCalibration("front", camera, np.eye(4))])
    rig.save(tmp_path / "rig.yaml")
    again = Rig.load(tmp_path / "rig.yaml")
    assert again["front"].intrinsics.D.tolist() == D
    assert_rigs_close(again, rig)
