"""Rig calibration files, CameraInfo conversion and motion compensation."""

import json

import numpy as np
import pytest
import yaml
from conftest import DATA, REPO, assert_rigs_close
from sensor_msgs.msg import CameraInfo

from xkd_ros.data import load_keyframe, load_rellis3d_rig
from xkd_ros.geometry import (
    CalibrationError,
    CameraIntrinsics,
    Rig,
    compensate_lidar_to_camera,
    interpolate_pose,
    invert_transform,
    transform_from_quaternion,
)
from xkd_ros.geometry.transforms import quaternion_from_rotation
from xkd_ros.msgs import camera_info_to_intrinsics, intrinsics_to_camera_info, rig_from_camera_infos


def test_committed_rig_files_match_their_sources():
    assert_rigs_close(Rig.load(REPO / "config/nuscenes.rig.yaml"), load_keyframe(DATA / "nuscenes_demo").rig)
    # RELLIS-3D's extrinsics are composed from a quaternion: the last bit depends on the BLAS build.
    assert_rigs_close(
        Rig.load(REPO / "config/rellis3d.rig.yaml"), load_rellis3d_rig(DATA / "rellis3d_000104"), atol=1e-15
    )


def test_rig_yaml_round_trip_keeps_every_value(tmp_path):
    rig = Rig.load(REPO / "config/nuscenes.rig.yaml")
    fisheye = CameraIntrinsics(
        width=640,
        height=480,
        K=np.diag([300.0, 301.0, 1.0]),
        D=[0.1, 0.01, 0, 0.001],
        distortion_model="equidistant",
    )
    rig = Rig.from_cameras([*rig, type(rig["CAM_FRONT"])("fisheye", fisheye, np.eye(4))], rig.lidar_frame)
    rig.save(tmp_path / "r.rig.yaml", comment="two\nlines")
    assert (tmp_path / "r.rig.yaml").read_text().startswith("# two\n# lines\n")
    assert_rigs_close(Rig.load(tmp_path / "r.rig.yaml"), rig)


def broken(tmp_path, edit):
    data = yaml.safe_load((REPO / "config/rellis3d.rig.yaml").read_text())
    edit(data["cameras"]["pylon_camera"])
    path = tmp_path / "broken.rig.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda cam: cam.pop("K"), "cameras.pylon_camera.K: missing"),
        (lambda cam: cam.update(K=[[1, 0], [0, 1]]), "cameras.pylon_camera.K: expected 3x3"),
        (
            lambda cam: cam.update(K=[[0, 0, 0], [0, 0, 0], [0, 0, 1]]),
            "cameras.pylon_camera.K: focal lengths",
        ),
        (lambda cam: cam.update(width="wide"), "cameras.pylon_camera.width"),
        (lambda cam: cam.update(D=[0.1, 0.2]), "cameras.pylon_camera.D: plumb_bob takes 4, 5 or 8"),
        (
            lambda cam: cam.update(D=[0.1, 0, 0, 0, 0], distortion_model="kb8"),
            "cameras.pylon_camera.distortion_model",
        ),
        (lambda cam: cam["T_cam_lidar"].pop(), "cameras.pylon_camera.T_cam_lidar: expected 4x4"),
        (
            lambda cam: cam["T_cam_lidar"][0].__setitem__(0, 2.0),
            "cameras.pylon_camera.T_cam_lidar: not a rigid",
        ),
        (
            lambda cam: cam["T_cam_lidar"][1].__setitem__(3, "x"),
            "cameras.pylon_camera.T_cam_lidar: expected numbers",
        ),
        (  # the y axis flipped: still orthonormal, but a reflection
            lambda cam: cam["T_cam_lidar"].__setitem__(1, [-v for v in cam["T_cam_lidar"][1]]),
            "cameras.pylon_camera.T_cam_lidar: a mirror, not a rotation (determinant -1.000",
        ),
        (
            lambda cam: cam.update(T_cam_lidar=np.diag([1.0, 1.0, -1.0, 1.0]).tolist()),
            "cameras.pylon_camera.T_cam_lidar: a mirror",
        ),
        (
            lambda cam: cam.update(T_cam_lidar=np.diag([1.0, 1.0, 0.0, 1.0]).tolist()),
            "cameras.pylon_camera.T_cam_lidar: not a rigid",
        ),
        (
            lambda cam: cam.update(distortion_modle="equidistant"),
            "cameras.pylon_camera.distortion_modle: unknown",
        ),
        (
            lambda cam: cam.update(T_lidar_cam=cam["T_cam_lidar"]),
            "cameras.pylon_camera.T_lidar_cam: unknown key",
        ),
    ],
)
def test_malformed_rig_file_names_the_key(tmp_path, edit, key):
    path = broken(tmp_path, edit)
    with pytest.raises(CalibrationError) as error:
        Rig.load(path)
    assert str(error.value).startswith(f"{path}: {key}")


def test_rig_file_that_is_not_a_rig(tmp_path):
    for text, key in [
        ("cameras: [a]\n", "cameras: expected a mapping"),
        ("lidar_frame: x\ncamera: {}\n", "x.rig.yaml: camera: unknown key"),
        ("[1, 2\n", "not valid YAML"),
        ("- a\n", "expected a mapping"),
    ]:
        path = tmp_path / "x.rig.yaml"
        path.write_text(text)
        with pytest.raises(CalibrationError, match=key):
            Rig.load(path)


def test_camera_info_round_trip_and_rig():
    intrinsics = CameraIntrinsics(
        width=1280,
        height=720,
        K=[[700, 0, 640], [0, 705, 360], [0, 0, 1]],
        D=[0.1, -0.05, 0.001, 0.002, 0.01, 0.02, 0.003, 0.004],
        distortion_model="rational_polynomial",
    )
    msg = intrinsics_to_camera_info(intrinsics)
    assert isinstance(msg, CameraInfo)
    assert list(msg.k) == intrinsics.K.ravel().tolist()
    back = camera_info_to_intrinsics(msg)
    assert (back.width, back.height, back.distortion_model) == (1280, 720, "rational_polynomial")
    np.testing.assert_array_equal(back.D, intrinsics.D)
    np.testing.assert_array_equal(back.P, intrinsics.P)
    msg.header.frame_id = "front_optical"
    T = transform_from_quaternion([0.5, -0.5, 0.5, -0.5], [0.1, 0.2, 0.3])
    rig = rig_from_camera_infos({"front": msg}, {"front": T}, lidar_frame="velodyne")
    assert rig.names == ["front"]
    assert rig["front"].frame_id == "front_optical"
    np.testing.assert_array_equal(rig["front"].T_cam_lidar, T)
    with pytest.raises(CalibrationError, match=r"T_cam_lidar: no extrinsics for camera\(s\) \['back'\]"):
        rig_from_camera_infos({"front": msg, "back": msg}, {"front": T})


def test_camera_info_binning_and_roi_are_folded_into_k():
    msg = intrinsics_to_camera_info(
        CameraIntrinsics(width=1600, height=1200, K=[[1000.0, 0, 800], [0, 1000.0, 600], [0, 0, 1]])
    )
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 400, 200, 800, 600
    msg.binning_x = msg.binning_y = 2
    intrinsics = camera_info_to_intrinsics(msg)
    assert (intrinsics.width, intrinsics.height) == (400, 300)
    np.testing.assert_allclose(intrinsics.K, [[500, 0, 200], [0, 500, 200], [0, 0, 1]])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: setattr(m, "k", [0.0] * 9), "CameraInfo.k: focal lengths must be positive"),
        (lambda m: setattr(m, "d", [0.1, 0.2, 0.3]), "CameraInfo.d: plumb_bob takes 4, 5 or 8"),
        (lambda m: setattr(m, "distortion_model", "fov"), "CameraInfo.distortion_model"),
        (lambda m: setattr(m, "width", 0), "CameraInfo.width"),
    ],
)
def test_malformed_camera_info_names_the_field(edit, message):
    msg = intrinsics_to_camera_info(CameraIntrinsics(width=640, height=480, K=np.diag([500.0, 500.0, 1.0])))
    msg.d = [0.01, 0, 0, 0, 0]
    edit(msg)
    with pytest.raises(CalibrationError, match=message):
        camera_info_to_intrinsics(msg)


def test_nuscenes_lidar2cam_is_motion_compensated_at_constant_velocity():
    """Rebuild nuScenes' motion-compensated lidar2cam of five cameras from the ego motion the sixth implies.

    The ego pose at CAM_FRONT's stamp follows from its lidar2cam; extrapolating that motion (constant
    velocity, about 9.2 m/s) to the other stamps and compensating the static calibration must give their
    lidar2cam.
    """
    sample = json.loads((DATA / "nuscenes_demo/info.json").read_text())["sample"]
    lidar2ego = np.array(sample["lidar_points"]["lidar2ego"])
    ego_at_scan = np.array(sample["ego2global"])
    t_scan = sample["timestamp"]
    front = sample["images"]["CAM_FRONT"]
    ego_at_front = (
        ego_at_scan @ lidar2ego @ invert_transform(front["lidar2cam"]) @ invert_transform(front["cam2ego"])
    )
    worst_static_error = 0.0
    for name, camera in sample["images"].items():
        static = invert_transform(camera["cam2ego"]) @ lidar2ego
        ego_at_image = interpolate_pose(
            camera["timestamp"], t_scan, ego_at_scan, front["timestamp"], ego_at_front
        )
        compensated = compensate_lidar_to_camera(static, ego_at_scan, ego_at_image, T_body_lidar=lidar2ego)
        expected = np.array(camera["lidar2cam"])
        assert np.abs(compensated[:3, 3] - expected[:3, 3]).max() < 0.01, name
        assert np.abs(compensated[:3, :3] - expected[:3, :3]).max() < 3e-4, name  # info.json holds float32
        worst_static_error = max(worst_static_error, np.abs(static[:3, 3] - expected[:3, 3]).max())
    assert worst_static_error > 0.3  # without compensation the cameras would be off by a third of a metre


def test_compensation_maps_a_world_point_between_stamps():
    rng = np.random.default_rng(3)
    T_cam_lidar = transform_from_quaternion(rng.normal(size=4), rng.normal(size=3))
    pose_scan = transform_from_quaternion(rng.normal(size=4), rng.normal(size=3) * 10)
    pose_image = transform_from_quaternion(rng.normal(size=4), rng.normal(size=3) * 10)
    world_point = np.array([5.0, -3.0, 1.0, 1.0])
    in_lidar_at_scan = invert_transform(pose_scan) @ world_point
    in_camera_at_image = T_cam_lidar @ invert_transform(pose_image) @ world_point
    T = compensate_lidar_to_camera(T_cam_lidar, pose_scan, pose_image)
    np.testing.assert_allclose(T @ in_lidar_at_scan, in_camera_at_image, atol=1e-9)
    np.testing.assert_allclose(
        compensate_lidar_to_camera(T_cam_lidar, pose_scan, pose_scan), T_cam_lidar, atol=1e-12
    )


def test_pose_interpolation_and_quaternions():
    T0 = transform_from_quaternion([1, 0, 0, 0], [0, 0, 0])
    T1 = transform_from_quaternion([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)], [2, 0, 0])  # 90 deg about z
    mid = interpolate_pose(0.5, 0.0, T0, 1.0, T1)
    np.testing.assert_allclose(mid[:3, 3], [1, 0, 0])
    np.testing.assert_allclose(
        quaternion_from_rotation(mid[:3, :3]), [np.cos(np.pi / 8), 0, 0, np.sin(np.pi / 8)]
    )
    ahead = interpolate_pose(2.0, 0.0, T0, 1.0, T1)  # constant-velocity extrapolation
    np.testing.assert_allclose(ahead[:3, 3], [4, 0, 0])
    np.testing.assert_allclose(quaternion_from_rotation(ahead[:3, :3]), [0, 0, 0, 1], atol=1e-12)
    for q in np.random.default_rng(1).normal(size=(20, 4)):
        q = q / np.linalg.norm(q) * np.sign(q[0])
        np.testing.assert_allclose(
            quaternion_from_rotation(transform_from_quaternion(q, [0, 0, 0])[:3, :3]), q, atol=1e-12
        )
