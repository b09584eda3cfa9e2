"""SemanticKittiDataset: the real SemanticKITTI sample, the RELLIS-3D frame laid out as KITTI sequence, and
KITTI calib files with R0_rect (the object layout's) in the odometry layout."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DATA, REPO

from xkd_ros.classes import IGNORE_INDEX, load_class_set
from xkd_ros.data.kitti import KittiObjectDataset
from xkd_ros.data.semantickitti import (
    KITTI_LIDAR,
    SemanticKittiDataset,
    camera_from_projection,
    lidar_to_rectified,
    read_kitti_calib,
)
from xkd_ros.geometry import Rig, project_points

TINY = DATA / "semantickitti_tiny"
OBJECT_CALIB = DATA / "calibration/kitti_object_000000.txt"
RELLIS = DATA / "rellis3d_000104"
TINY_COUNTS = {  # SOURCE.md's raw id counts, through the semantickitti class set
    "ignore": 3,  # 0 unlabeled 2, 52 other-structure 1
    "building": 25,  # 50
    "vegetation": 17,  # 70
    "trunk": 3,  # 71
    "pole": 2,  # 80
}
# KITTI odometry sequence 00, calib.txt: the left colour camera sits 6 cm beside cam0.
KITTI_P2 = (
    "7.188560e+02 0 6.071928e+02 4.538225e+01 0 7.188560e+02 1.852157e+02 -1.130887e-01 0 0 1 3.779761e-03"
)
KITTI_TR = (
    "4.276802385584e-04 -9.999672484946e-01 -8.084491683471e-03 -1.198459927713e-02 "
    "-7.210626507497e-03 8.081198471645e-03 -9.999413164504e-01 -5.403984729748e-02 "
    "9.999738645903e-01 4.859485810390e-04 -7.206933692422e-03 -2.921968648686e-01"
)


def class_counts(labels: np.ndarray, classes: str) -> dict[str, int]:
    names = {**dict(enumerate(load_class_set(classes).names)), IGNORE_INDEX: "ignore"}
    ids, counts = np.unique(labels, return_counts=True)
    return {names[i]: n for i, n in zip(ids.tolist(), counts.tolist(), strict=True)}


def copy_tiny(root: Path) -> Path:
    """A writable copy of the tiny sample's sequence 00; returns its folder."""
    shutil.copytree(TINY / "sequences", root / "sequences")
    return root / "sequences/00"


def test_tiny_sample_labels_are_mapped():
    dataset = SemanticKittiDataset(TINY)
    assert len(dataset) == 1
    frame = dataset[0]
    assert frame.name == "semantickitti/00/000000"
    assert frame.channels == ("x", "y", "z", "intensity")
    assert frame.points.shape == (50, 4)
    assert frame.classes == "semantickitti"
    assert class_counts(frame.labels, "semantickitti") == TINY_COUNTS
    assert (len(frame.rig), frame.images, frame.pose, frame.stamp) == (0, {}, None, 0.0)
    assert frame.rig.lidar == KITTI_LIDAR  # HDL-64E, remission 0..1


def test_instance_bits_are_dropped_and_sequences_can_be_numbers(tmp_path):
    sequence = copy_tiny(tmp_path)
    raw = np.fromfile(sequence / "labels/000000.label", dtype=np.uint32)
    (raw | np.uint32(7 << 16)).tofile(sequence / "labels/000000.label")
    frame = SemanticKittiDataset(tmp_path, sequences=[0])[0]
    assert class_counts(frame.labels, "semantickitti") == TINY_COUNTS


def test_scans_without_labels_read_unlabelled(tmp_path):
    shutil.rmtree(copy_tiny(tmp_path) / "labels")
    frame = SemanticKittiDataset(tmp_path)[0]
    assert (frame.labels, frame.classes) == (None, None)


@pytest.fixture(scope="module")
def rellis_png(tmp_path_factory):
    png = tmp_path_factory.mktemp("rellis_png") / "000104.png"
    cv2.imwrite(str(png), cv2.imread(str(RELLIS / "frame000104-1581624663_149.jpg"), cv2.IMREAD_COLOR))
    return png


def write_rellis_sequence(root: Path, png: Path, poses: np.ndarray | None = None) -> Path:
    """RELLIS-3D frame 000104 as KITTI sequence 00: scan, labels, image_2, and calib.txt from its rig."""
    sequence = root / "sequences/00"
    for folder, source, name in [
        ("velodyne", RELLIS / "000104.bin", "000104.bin"),
        ("labels", RELLIS / "000104.label", "000104.label"),
        ("image_2", png, "000104.png"),
    ]:
        (sequence / folder).mkdir(parents=True)
        (sequence / folder / name).symlink_to(source.resolve())
    camera = Rig.load(REPO / "config/rellis3d.rig.yaml")["pylon_camera"]
    P2 = np.hstack([camera.intrinsics.K, np.zeros((3, 1))])
    lines = [f"P{i}: " + " ".join(map(str, P2.ravel())) for i in range(4)]
    lines.append("Tr: " + " ".join(map(str, camera.T_cam_lidar[:3].ravel())))
    (sequence / "calib.txt").write_text("\n".join(lines) + "\n")
    np.savetxt(sequence / "times.txt", np.arange(105) * 0.1)
    if poses is not None:
        np.savetxt(sequence / "poses.txt", poses[:, :3].reshape(len(poses), 12))
    return sequence


def test_rellis_frame_in_kitti_layout_projects_as_its_rig(tmp_path, rellis_png, rellis_frame):
    write_rellis_sequence(tmp_path, rellis_png)
    frame = SemanticKittiDataset(tmp_path, classes="rellis3d")[0]
    assert frame.name == "semantickitti/00/000104"
    np.testing.assert_array_equal(frame.points, rellis_frame.points[:, :4])  # x y z intensity, no ring
    np.testing.assert_array_equal(frame.labels, rellis_frame.labels)
    np.testing.assert_array_equal(frame.images["image_2"], rellis_frame.images["pylon_camera"])
    assert frame.stamp == pytest.approx(10.4)
    assert frame.image_stamps == {"image_2": frame.stamp}
    assert frame.pose is None
    valid = np.any(frame.xyz != 0, axis=1)  # all-zero points are Ouster "no return"
    assert project_points(frame.points[valid], frame.rig, min_depth=0.5).counts() == {"image_2": 7428}


def test_poses_become_lidar_poses_in_the_first_scan_frame(tmp_path, rellis_png):
    poses = np.tile(np.eye(4), (105, 1, 1))
    poses[104, 2, 3] = 5.0  # cam0 moved 5 m along its optical axis
    write_rellis_sequence(tmp_path, rellis_png, poses)
    frame = SemanticKittiDataset(tmp_path, classes="rellis3d")[0]
    T_cam_lidar = Rig.load(REPO / "config/rellis3d.rig.yaml")["pylon_camera"].T_cam_lidar
    expected = np.eye(4)
    expected[:3, 3] = 5.0 * T_cam_lidar[2, :3]  # the camera's z axis, in LiDAR coordinates
    np.testing.assert_allclose(frame.pose, expected, atol=1e-9)


def test_p2_baseline_offset_goes_into_the_extrinsics(tmp_path):
    (tmp_path / "calib.txt").write_text(f"P2: {KITTI_P2}\nTr: {KITTI_TR}\n")
    calib = read_kitti_calib(tmp_path / "calib.txt")
    K, T_cam_velo = camera_from_projection(calib["P2"], calib["Tr"])
    np.testing.assert_array_equal(K, calib["P2"][:, :3])
    Tr = np.vstack([calib["Tr"], [0, 0, 0, 1]])
    np.testing.assert_allclose(T_cam_velo[:3, 3] - Tr[:3, 3], [0.05994, -0.001130, 0.003780], atol=1e-5)
    rng = np.random.default_rng(0)
    points = np.column_stack(
        [rng.uniform(5, 40, 100), rng.uniform(-10, 10, 100), rng.uniform(-2, 2, 100), np.ones(100)]
    )
    via_p2 = (calib["P2"] @ Tr @ points.T).T
    in_camera = (T_cam_velo @ points.T).T[:, :3]
    np.testing.assert_allclose((K @ in_camera.T).T, via_p2, rtol=1e-12, atol=1e-9)


def test_kitti_calib_drives_the_rig_of_a_sequence(tmp_path):
    sequence = copy_tiny(tmp_path)
    (sequence / "image_2").mkdir()
    cv2.imwrite(str(sequence / "image_2/000000.png"), np.zeros((376, 1241, 3), np.uint8))
    (sequence / "calib.txt").write_text(f"P0: {KITTI_P2}\nP2: {KITTI_P2}\nTr: {KITTI_TR}\n")
    frame = SemanticKittiDataset(tmp_path)[0]
    camera = frame.rig["image_2"]
    assert (camera.intrinsics.width, camera.intrinsics.height) == (1241, 376)
    assert frame.images["image_2"].shape == (376, 1241, 3)
    _, expected = camera_from_projection(*(read_kitti_calib(sequence / "calib.txt")[k] for k in ("P2", "Tr")))
    np.testing.assert_array_equal(camera.T_cam_lidar, expected)


def truncate(path: Path, size: int) -> None:
    data = path.read_bytes()[:size]
    path.unlink()  # a link to test/data must not be written through
    path.write_bytes(data)


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (
            lambda s: truncate(s / "velodyne/000000.bin", 796),
            ValueError,
            r"000000\.bin: 796 bytes is not a multiple of 16",
        ),
        (
            lambda s: truncate(s / "labels/000000.label", 196),
            ValueError,
            r"000000\.label: 196 bytes, expected 200",
        ),
        (
            lambda s: np.full(50, 7, np.uint32).tofile(s / "labels/000000.label"),
            ValueError,
            r"000000\.label: raw class id\(s\) \[7\] are not in class set 'semantickitti'",
        ),
    ],
)
def test_broken_scan_files_are_named_when_read(tmp_path, edit, error, message):
    sequence = copy_tiny(tmp_path)
    dataset = SemanticKittiDataset(tmp_path)
    edit(sequence)
    with pytest.raises(error, match=f"^{sequence}/.*{message}"):
        dataset[0]


def add_image(sequence: Path) -> None:
    (sequence / "image_2").mkdir()
    cv2.imwrite(str(sequence / "image_2/000000.png"), np.zeros((4, 4, 3), np.uint8))


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda s: shutil.rmtree(s / "velodyne"), FileNotFoundError, r"velodyne: missing scan folder"),
        (
            lambda s: shutil.copy(s / "velodyne/000000.bin", s / "velodyne/000001.bin"),
            FileNotFoundError,
            r"labels/000001\.label: missing",
        ),
        (add_image, FileNotFoundError, r"calib\.txt: missing calibration"),
        (
            lambda s: (add_image(s), (s / "calib.txt").write_text(f"P0: {KITTI_P2}\nTr: {KITTI_TR}\n")),
            ValueError,
            r"calib\.txt: no \['P2'\] \(needed for .*image_2\)",
        ),
        (
            lambda s: (add_image(s), (s / "calib.txt").write_text(f"P2: {KITTI_P2}\nTr: 1 2 3\n")),
            ValueError,
            r"calib\.txt:2: Tr: expected 12",
        ),
        (
            lambda s: (s / "times.txt").write_text("0.0 0.1\n"),
            ValueError,
            r"times\.txt:1: expected 1 number\(s\), got 2",
        ),
        (lambda s: (s / "times.txt").write_text(""), ValueError, r"times\.txt: 0 line\(s\)"),
        (lambda s: (s / "poses.txt").write_text("1 0 0 0\n"), FileNotFoundError, r"calib\.txt: missing"),
    ],
)
def test_broken_sequences_are_named_when_indexed(tmp_path, edit, error, message):
    sequence = copy_tiny(tmp_path)
    edit(sequence)
    with pytest.raises(error, match=f"^{sequence}/{message}"):
        SemanticKittiDataset(tmp_path, sequences=["00"])


def test_wrong_root_camera_or_class_set(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sequences: missing"):
        SemanticKittiDataset(tmp_path)
    (tmp_path / "sequences/00").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"sequences: no sequence folders"):
        SemanticKittiDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"sequences/08/velodyne: missing"):
        SemanticKittiDataset(TINY, sequences=["08"])
    with pytest.raises(ValueError, match=r"camera: expected a KITTI image folder"):
        SemanticKittiDataset(TINY, camera="left")
    with pytest.raises(FileNotFoundError, match=r"kitti360\.yaml: no such class set"):
        SemanticKittiDataset(TINY, classes="kitti360")


def test_identity_pose_at_first_scan(tmp_path):
    sequence = copy_tiny(tmp_path)
    (sequence / "calib.txt").write_text(f"Tr: {KITTI_TR}\n")
    np.savetxt(sequence / "poses.txt", np.eye(4)[:3].reshape(1, 12))
    frame = SemanticKittiDataset(tmp_path)[0]
    np.testing.assert_allclose(frame.pose, np.eye(4), atol=1e-12)
    assert len(frame.rig) == 0  # poses alone bring no camera


def object_calib_without(*keys: str) -> str:
    return "".join(
        line + "\n" for line in OBJECT_CALIB.read_text().splitlines() if line.partition(":")[0] not in keys
    )


def test_object_layout_calib_reads_in_the_odometry_layout_with_r0_rect_folded_in(tmp_path):
    """The issue's case: KITTI's object calib file (R0_rect: 9 numbers, Tr_velo_to_cam) copied into a
    sequence failed to read; it now gives the camera the object reader gives, R0_rect folded in."""
    sequence = copy_tiny(tmp_path / "odometry")
    add_image(sequence)
    shutil.copy(OBJECT_CALIB, sequence / "calib.txt")
    camera = SemanticKittiDataset(tmp_path / "odometry")[0].rig["image_2"]
    folder = tmp_path / "object/training"
    for sub in ("velodyne", "calib", "image_2"):
        (folder / sub).mkdir(parents=True)
    shutil.copy(sequence / "velodyne/000000.bin", folder / "velodyne/000000.bin")
    shutil.copy(OBJECT_CALIB, folder / "calib/000000.txt")
    shutil.copy(sequence / "image_2/000000.png", folder / "image_2/000000.png")
    same = KittiObjectDataset(tmp_path / "object")[0].rig["image_2"]
    np.testing.assert_array_equal(camera.T_cam_lidar, same.T_cam_lidar)
    calib = read_kitti_calib(OBJECT_CALIB)
    assert calib["R0_rect"].shape == (3, 3)
    R0 = np.eye(4)
    R0[:3, :3] = calib["R0_rect"]
    Tr = np.vstack([calib["Tr_velo_to_cam"], [0, 0, 0, 1]])
    _, expected = camera_from_projection(calib["P2"], R0 @ Tr)
    np.testing.assert_allclose(camera.T_cam_lidar, expected, rtol=0, atol=1e-12)
    _, unfolded = camera_from_projection(calib["P2"], Tr)
    assert not np.allclose(camera.T_cam_lidar, unfolded, atol=1e-3)  # R0_rect turns it by 0.7 degrees


def test_an_r0_rect_line_in_an_odometry_calib_is_folded_in(tmp_path):
    (tmp_path / "calib.txt").write_text(
        f"Tr: {KITTI_TR}\nR0_rect: {' '.join(['0', '-1', '0', '1', '0', '0', '0', '0', '1'])}\n"
    )
    T = lidar_to_rectified(read_kitti_calib(tmp_path / "calib.txt"), tmp_path / "calib.txt")
    Tr = np.vstack([np.array(KITTI_TR.split(), dtype=float).reshape(3, 4), [0, 0, 0, 1]])
    np.testing.assert_allclose(T[:3], np.vstack([-Tr[1], Tr[0], Tr[2]])[:3], atol=1e-15)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            lambda: object_calib_without("R0_rect"),
            r"Tr_velo_to_cam without R0_rect: it maps into the unrectified",
        ),
        (lambda: object_calib_without() + f"Tr: {KITTI_TR}\n", r"Tr and Tr_velo_to_cam differ"),
        (lambda: object_calib_without("Tr_velo_to_cam"), r"no Tr or Tr_velo_to_cam"),
        (
            lambda: f"P2: {KITTI_P2}\nTr: {KITTI_TR}\nR0_rect: {KITTI_P2}\n",
            r":3: R0_rect: expected 9 numbers, got 12",
        ),
        (lambda: f"P2: {KITTI_P2}\nTr: {KITTI_TR}\nR0_rect: 1 0 0 0 1 0 0 0 2\n", r"R0_rect: not a rotation"),
        (
            lambda: f"P2: {KITTI_P2}\nTr: {KITTI_TR}\nR0_rect: 1 0 0 0 1 0 0 0 -1\n",
            r"R0_rect: not a rotation",
        ),
        (lambda: f"P2: {KITTI_P2}\nTr: {KITTI_TR.replace('-1.198459927713e-02', 'nan')}\n", r":2: Tr: .*NaN"),
    ],
)
def test_calib_files_that_would_misplace_the_camera_are_refused(tmp_path, content, message):
    sequence = copy_tiny(tmp_path)
    add_image(sequence)
    (sequence / "calib.txt").write_text(content())
    with pytest.raises(ValueError, match=f"^{sequence}/calib\\.txt.*{message}"):
        SemanticKittiDataset(tmp_path)
