"""Projection into cameras: real-data counts and label agreement, lens models against OpenCV, occlusion."""

import cv2
import numpy as np
import pytest
from conftest import DATA, NUSCENES_COUNTS

from xkd_ros.classes import load_class_set
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


def kitti_like_scan(obstacles=True):
    """A LiDAR sweep (64 beams, -25..+2 degrees, 0.25 degrees apart) over flat ground 1.73 m below, a wall
    at x = 20 m and, with `obstacles`, a post (radius 0.15 m, 5 m ahead); cast analytically: the true
    surface points, and a LidarProfile that describes the sensor."""
    from xkd_ros.geometry import LidarProfile

    elevation = np.deg2rad(np.linspace(-25.0, 2.0, 64))
    azimuth = np.deg2rad(np.arange(-180.0, 180.0, 0.25))
    e, a = np.meshgrid(elevation, azimuth)
    rays = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1).reshape(-1, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(rays[:, 2] < 0, -1.73 / rays[:, 2], np.inf)
        t = np.minimum(t, np.where(rays[:, 0] > 0, 20.0 / rays[:, 0], np.inf))
        if obstacles:
            t = np.minimum(t, post_hit(np.zeros(3), rays))
    keep = np.isfinite(t) & (t < 70)
    spacing = 27.0 / 63
    profile = LidarProfile(beams=64, fov_up_deg=2 + spacing / 2, fov_down_deg=-25 - spacing / 2)
    return (rays[keep] * t[keep, None]).astype(np.float32), profile


def post_hit(origin, rays, centre=(5.0, 0.0), radius=0.15, top=1.0):
    """Distance along unit `rays` from `origin` to the vertical post (inf where they miss it)."""
    dx, dy = origin[0] - centre[0], origin[1] - centre[1]
    a = rays[:, 0] ** 2 + rays[:, 1] ** 2
    b = 2 * (dx * rays[:, 0] + dy * rays[:, 1])
    c = dx * dx + dy * dy - radius * radius
    root = np.sqrt(np.maximum(b * b - 4 * a * c, 0))
    t = (-b - root) / (2 * np.maximum(a, 1e-12))
    height = origin[2] + t * rays[:, 2]
    return np.where((b * b - 4 * a * c >= 0) & (t > 0) & (height <= top), t, np.inf)


def forward_camera(position):
    """A 1240 x 376 camera (focal length 718 px, KITTI's image_2) at `position` in the LiDAR frame, looking
    along the LiDAR's x axis."""
    R = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])  # LiDAR axes -> optical axes
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ np.asarray(position, dtype=np.float64)
    intrinsics = CameraIntrinsics(width=1240, height=376, K=[[718.0, 0, 620], [0, 718.0, 188], [0, 0, 1]])
    return CameraCalibration("image_2", intrinsics, T)


def test_footprint_test_keeps_the_road_that_the_cell_test_drops():
    # A KITTI-like car on an empty road: the camera sees every road point the LiDAR sees. The cell test
    # compares each road point with nearer road in its 8 px cell and drops a third of them.
    points, profile = kitti_like_scan(obstacles=False)
    rig = Rig.from_cameras([forward_camera([0.27, 0.0, -0.08])], lidar=profile)
    inside = project_points(points, rig).mask[0]
    road = inside & (points[:, 2] < -1.7) & (np.hypot(points[:, 0], points[:, 1]) > 10)
    assert road.sum() > 3000
    footprint = project_points(points, rig, occlusion="footprint").mask[0]
    cell = project_points(points, rig, occlusion_cell=8, occlusion_tolerance=0.5).mask[0]
    assert np.count_nonzero(road & ~footprint) == 0
    assert np.count_nonzero(road & ~cell) > 0.15 * road.sum()


def test_footprint_test_hides_the_wall_behind_a_post():
    # A camera 0.6 m to the left of the LiDAR sees the post in front of another strip of the wall than the
    # LiDAR does: the wall points in that strip are hidden from it (truth: the camera's line of sight to
    # them meets the post), the rest of the wall and the road stay.
    points, profile = kitti_like_scan()
    position = np.array([0.27, 0.6, -0.08])
    rig = Rig.from_cameras([forward_camera(position)], lidar=profile)
    inside = project_points(points, rig).mask[0]
    offset = points.astype(np.float64) - position
    length = np.linalg.norm(offset, axis=1)
    hidden = inside & (post_hit(position, offset / length[:, None]) < length - 0.05)
    visible = inside & ~hidden
    assert hidden.sum() > 100
    kept = project_points(points, rig, occlusion="footprint").mask[0]
    assert np.count_nonzero(hidden & ~kept) >= 0.9 * hidden.sum()
    assert np.count_nonzero(visible & kept) >= 0.995 * visible.sum()


def test_footprint_test_on_one_ray_and_degenerate_clouds():
    points = np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 5.3], [0.0, 0.0, 20.0], [2.0, 2.0, 5.0]], dtype=np.float32)
    projection = project_points(points, one_camera_rig(), occlusion="footprint")
    assert projection.mask[0].tolist() == [True, True, False, True]
    nan = np.array([[np.nan, np.nan, np.nan], [0.0, 0.0, 5.0]], dtype=np.float32)
    assert project_points(nan, one_camera_rig(), occlusion="footprint").mask[0].tolist() == [False, True]
    empty = project_points(np.empty((0, 3), dtype=np.float32), one_camera_rig(), occlusion="footprint")
    assert empty.counts() == {"cam": 0}
    lidar_only = project_points(points, Rig.from_cameras([]), occlusion="footprint")
    assert lidar_only.mask.shape == (0, 4)


def test_occlusion_arguments_are_checked():
    points = np.zeros((1, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="occlusion: expected one of"):
        project_points(points, one_camera_rig(), occlusion="zbuffer")
    with pytest.raises(ValueError, match="occlusion_cell: only the 'cell' occlusion test"):
        project_points(points, one_camera_rig(), occlusion="footprint", occlusion_cell=8)
