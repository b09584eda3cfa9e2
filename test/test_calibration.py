"""xkd-rig: rig files from a KITTI calib file, a camera_calibration ost.yaml plus an extrinsic, and
OpenCalib's real lidar2camera JSON pair; `show`; errors that name the file and key, exit 1, no traceback."""

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import DATA

from xkd_ros.calibration import main
from xkd_ros.data.kitti import KittiObjectDataset
from xkd_ros.data.semantickitti import KITTI_LIDAR
from xkd_ros.geometry import Rig, invert_transform

CALIBRATION = DATA / "calibration"
KITTI_CALIB = CALIBRATION / "kitti_object_000000.txt"
INTRINSIC = CALIBRATION / "center_camera-intrinsic.json"
EXTRINSIC = CALIBRATION / "top_center_lidar-to-center_camera-extrinsic.json"
OPENCALIB_D = [-0.10814499855041504, 0.1386680006980896, -0.0037975700106471777, -0.004841269925236702]
T_CAM_LIDAR = np.array(  # a camera 1.2 m ahead of and 0.4 m below the LiDAR, looking forward
    [[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.4], [1.0, 0.0, 0.0, -1.2], [0.0, 0.0, 0.0, 1.0]]
)
OST = {  # what ROS camera_calibration's cameracalibrator writes (ost.yaml)
    "image_width": 1280,
    "image_height": 720,
    "camera_name": "front_narrow",
    "camera_matrix": {"rows": 3, "cols": 3, "data": [800.0, 0, 640, 0, 810.0, 360, 0, 0, 1]},
    "distortion_model": "plumb_bob",
    "distortion_coefficients": {"rows": 1, "cols": 5, "data": [-0.3, 0.12, 0.001, -0.002, -0.02]},
    "rectification_matrix": {"rows": 3, "cols": 3, "data": [1, 0, 0, 0, 1, 0, 0, 0, 1]},
    "projection_matrix": {"rows": 3, "cols": 4, "data": [700.0, 0, 640, 0, 0, 700.0, 360, 0, 0, 0, 1, 0]},
}


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_ost(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "ost.yaml"
    path.write_text(yaml.safe_dump({**OST, **changes}))
    return path


def write_text_extrinsic(tmp_path: Path, T: np.ndarray = T_CAM_LIDAR) -> Path:
    path = tmp_path / "T_cam_lidar.txt"
    np.savetxt(path, T)
    return path


def test_kitti_calib_gives_the_rig_the_reader_builds(tmp_path, capsys):
    image = tmp_path / "000000.png"
    cv2.imwrite(str(image), np.zeros((375, 1242, 3), np.uint8))
    code, out, err = run(capsys, "kitti", KITTI_CALIB, "--image", image, "-o", tmp_path / "kitti.rig.yaml")
    assert (code, err) == (0, "")
    assert "image_2: 1242x375" in out
    rig = Rig.load(tmp_path / "kitti.rig.yaml")
    assert rig.names == ["image_2"]
    assert (rig.lidar_frame, rig.lidar) == ("velodyne", KITTI_LIDAR)
    folder = tmp_path / "object/training"
    for sub in ("velodyne", "calib", "image_2"):
        (folder / sub).mkdir(parents=True)
    (folder / "velodyne/000000.bin").write_bytes(np.zeros((1, 4), np.float32).tobytes())
    shutil.copy(KITTI_CALIB, folder / "calib/000000.txt")
    shutil.copy(image, folder / "image_2/000000.png")
    read = KittiObjectDataset(tmp_path / "object")[0].rig["image_2"]
    np.testing.assert_array_equal(rig["image_2"].T_cam_lidar, read.T_cam_lidar)
    np.testing.assert_array_equal(rig["image_2"].intrinsics.K, read.intrinsics.K)
    # The camera sits about 0.27 m ahead of and 0.08 m below the LiDAR, as KITTI's set-up drawing says.
    position = invert_transform(rig["image_2"].T_cam_lidar)[:3, 3]
    np.testing.assert_allclose(position[[0, 2]], [0.27, -0.08], atol=0.01)


def test_kitti_stereo_pair_and_lidar_overrides(tmp_path, capsys):
    output = tmp_path / "stereo.rig.yaml"
    code, _, err = run(
        capsys, "kitti", KITTI_CALIB, "--size", "1242x375", "--camera", "P2", "--camera", "P3",
        "--min-range", "3.0", "-o", output,
    )  # fmt: skip
    assert (code, err) == (0, "")
    rig = Rig.load(output)
    assert rig.names == ["image_2", "image_3"]
    assert (rig.lidar.sensor, rig.lidar.intensity_scale, rig.lidar.min_range) == ("velodyne_hdl64e", 1.0, 3.0)
    baseline = (
        invert_transform(rig["image_3"].T_cam_lidar)[:3, 3]
        - invert_transform(rig["image_2"].T_cam_lidar)[:3, 3]
    )
    assert np.linalg.norm(baseline) == pytest.approx(0.532, abs=0.002)  # KITTI's colour stereo baseline


def test_camera_calibration_yaml_and_extrinsic_project_as_opencv(tmp_path, capsys):
    output = tmp_path / "ros.rig.yaml"
    code, out, err = run(
        capsys, "ros", write_ost(tmp_path), "--extrinsic", write_text_extrinsic(tmp_path),
        "--sensor", "ouster_os1_64", "--intensity-scale", "65535", "-o", output,
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert "front_narrow: 1280x720, fx 800.0, plumb_bob, 5 coefficients; at (+1.20, +0.00, -0.40) m" in out
    rig = Rig.load(output)
    camera = rig["front_narrow"]
    assert (rig.lidar.beams, rig.lidar.intensity_scale, rig.lidar_frame) == (64, 65535.0, "lidar")
    np.testing.assert_array_equal(camera.T_cam_lidar, T_CAM_LIDAR)
    assert camera.intrinsics.D.tolist() == OST["distortion_coefficients"]["data"]
    points = np.random.default_rng(0).uniform([5, -8, -2], [40, 8, 3], size=(500, 3))
    uv, mask = camera.intrinsics.project((points @ T_CAM_LIDAR[:3, :3].T) + T_CAM_LIDAR[:3, 3])
    rvec = cv2.Rodrigues(T_CAM_LIDAR[:3, :3])[0]
    K = np.array(OST["camera_matrix"]["data"]).reshape(3, 3)
    D = np.array(OST["distortion_coefficients"]["data"])
    expected = cv2.projectPoints(points, rvec, T_CAM_LIDAR[:3, 3], K, D)[0].reshape(-1, 2)
    assert mask.sum() > 100
    assert np.abs(uv[mask] - expected[mask]).max() < 1e-3


@pytest.mark.parametrize(
    ("name", "content", "invert"),
    [
        ("T.yaml", yaml.safe_dump({"T_cam_lidar": T_CAM_LIDAR.tolist()}), False),
        ("T.yaml", yaml.safe_dump({"rows": 4, "cols": 4, "data": T_CAM_LIDAR.ravel().tolist()}), False),
        ("T.json", json.dumps(invert_transform(T_CAM_LIDAR).tolist()), True),
        ("T.txt", " ".join(map(str, T_CAM_LIDAR[:3].ravel())), False),  # 3x4, KITTI's way
    ],
)
def test_extrinsic_file_forms(tmp_path, capsys, name, content, invert):
    (tmp_path / name).write_text(content)
    argv = ["ros", write_ost(tmp_path), "--extrinsic", tmp_path / name, "--sensor", "velodyne_vlp16"]
    code, _, err = run(capsys, *argv, *(["--invert"] if invert else []), "-o", tmp_path / "r.yaml")
    assert (code, err) == (0, "")
    np.testing.assert_allclose(
        Rig.load(tmp_path / "r.yaml")["front_narrow"].T_cam_lidar, T_CAM_LIDAR, atol=1e-12
    )


def test_opencalib_pair_then_a_second_camera_appended(tmp_path, capsys):
    output = tmp_path / "opencalib.rig.yaml"
    code, out, err = run(
        capsys, "opencalib", INTRINSIC, EXTRINSIC, "--sensor", "velodyne_vlp32c", "-o", output
    )
    assert (code, err) == (0, "")
    assert "LiDAR frame top_center_lidar: velodyne_vlp32c" in out
    rig = Rig.load(output)
    camera = rig["center_camera"]
    assert (camera.intrinsics.width, camera.intrinsics.height) == (1920, 1080)
    assert camera.intrinsics.D.tolist() == OPENCALIB_D  # the 4-coefficient plumb_bob, kept as given
    assert camera.T_cam_lidar[2].tolist() == [0.99985, 0.0125045, 0.0120187, -0.574468]
    extrinsic = tmp_path / "T.txt"
    np.savetxt(extrinsic, T_CAM_LIDAR)
    code, out, err = run(
        capsys, "ros", write_ost(tmp_path), "--extrinsic", extrinsic, "-o", output, "--append"
    )
    assert (code, err) == (0, "")
    rig = Rig.load(output)
    assert rig.names == ["center_camera", "front_narrow"]
    assert (rig.lidar_frame, rig.lidar.sensor) == ("top_center_lidar", "velodyne_vlp32c")
    code, _, err = run(capsys, "opencalib", INTRINSIC, EXTRINSIC, "-o", output, "--append")
    assert code == 1
    assert err == f"xkd-rig: error: {output}: cameras.center_camera: already in the rig (--name another)\n"


def test_show_summarises_a_rig(tmp_path, capsys):
    Rig.from_cameras([], "os_sensor", KITTI_LIDAR).save(tmp_path / "lidar_only.yaml")
    code, out, _ = run(capsys, "show", tmp_path / "lidar_only.yaml")
    assert code == 0
    assert out.splitlines() == [
        f"{tmp_path / 'lidar_only.yaml'}: LiDAR frame os_sensor: velodyne_hdl64e, 64 beams, 3..-25 deg, "
        "ring bottom_up, intensity 0..1, min range 2.5 m, 1.73 m above the ground",
        "no cameras: a LiDAR-only rig",
    ]
    run(capsys, "opencalib", INTRINSIC, EXTRINSIC, "--sensor", "velodyne_vlp32c", "-o", tmp_path / "o.yaml")
    code, out, _ = run(capsys, "show", tmp_path / "o.yaml")
    assert out.splitlines()[1:] == [
        "1 camera(s), in the order the network takes their images:",
        "  center_camera: 1920x1080, fx 2109.8, plumb_bob, 4 coefficients; at (+0.58, -0.02, -0.35) m, "
        "looking +1 deg azimuth, +1 deg elevation",
    ]


def ost_without(key: str):
    return lambda tmp: ["ros", write_ost(tmp, **{key: None}), "--extrinsic", write_text_extrinsic(tmp)]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            lambda tmp: ["ros", write_ost(tmp), "--extrinsic", write_text_extrinsic(tmp)],
            r"--sensor: name the LiDAR \(velodyne_vlp16, .*\): a camera calibration says nothing",
        ),
        (
            lambda tmp: [
                *["ros", write_ost(tmp, camera_matrix={"rows": 3, "cols": 3, "data": [1, 2]})],
                *["--extrinsic", write_text_extrinsic(tmp), "--sensor", "velodyne_vlp16"],
            ],
            r"{tmp}/ost\.yaml: camera_matrix\.data: expected 3x3 numbers, got 2$",
        ),
        (
            lambda tmp: [
                *["ros", write_ost(tmp, distortion_coefficients={"data": [0.1, 0.2, 0.3]})],
                *["--extrinsic", write_text_extrinsic(tmp), "--sensor", "velodyne_vlp16"],
            ],
            r"{tmp}/ost\.yaml: D: plumb_bob takes 4, 5 or 8 coefficients .*got 3$",
        ),
        (
            lambda tmp: [*ost_without("image_width")(tmp), "--sensor", "velodyne_vlp16"],
            r"{tmp}/ost\.yaml: image_width: expected a whole number of pixels, got None$",
        ),
        (
            lambda tmp: [
                *["ros", write_ost(tmp), "--extrinsic", write_text_extrinsic(tmp, T_CAM_LIDAR[:, :3])],
                *["--sensor", "velodyne_vlp16"],
            ],
            r"{tmp}/T_cam_lidar\.txt: T_cam_lidar: not a rigid transform",  # 4x3, read as 3x4: not rigid
        ),
        (
            lambda tmp: ["opencalib", INTRINSIC, tmp / "missing.json", "--sensor", "velodyne_vlp16"],
            r"{tmp}/missing\.json: missing$",
        ),
        (
            lambda tmp: ["kitti", KITTI_CALIB, "--camera", "P3", "--camera", "P1", "--size", "1242x375"],
            None,  # both exist: no error (control)
        ),
        (
            lambda tmp: ["kitti", KITTI_CALIB],
            r"--image or --size: a KITTI calib file does not hold the image size",
        ),
        (lambda tmp: ["kitti", KITTI_CALIB, "--size", "1242*375"], r"--size: expected WIDTHxHEIGHT"),
        (
            lambda tmp: ["kitti", tmp / "calib.txt", "--size", "10x10"],
            r"{tmp}/calib\.txt: missing calibration$",
        ),
        (
            lambda tmp: ["kitti", KITTI_CALIB, "--size", "10x10", "--intensity-scale", "-1"],
            r"lidar\.intensity_scale: must be positive, got -1\.0$",
        ),
    ],
)
def test_errors_name_the_file_and_key_and_exit_1(tmp_path, capsys, argv, message):
    code, out, err = run(capsys, *argv(tmp_path), "-o", tmp_path / "out.yaml")
    if message is None:
        assert (code, err) == (0, "")
        return
    assert (code, out) == (1, "")
    assert len(err.splitlines()) == 1
    assert err.startswith("xkd-rig: error: ")
    assert re.search(message.replace("{tmp}", str(tmp_path)), err.strip()), err
    assert not (tmp_path / "out.yaml").exists()


def test_opencalib_extrinsic_for_another_camera_is_refused(tmp_path, capsys):
    data = json.loads(EXTRINSIC.read_text())
    next(iter(data.values()))["target_sensor_name"] = "left_camera"
    (tmp_path / "e.json").write_text(json.dumps(data))
    code, _, err = run(
        capsys,
        "opencalib",
        INTRINSIC,
        tmp_path / "e.json",
        "--sensor",
        "velodyne_vlp16",
        "-o",
        tmp_path / "o.yaml",
    )
    assert code == 1
    assert (
        f"{tmp_path}/e.json: target_sensor_name: 'left_camera', but {INTRINSIC} is for camera 'center_camera'"
        in err
    )
