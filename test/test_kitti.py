"""KITTI 3D object layout: the real HDL-64E scan with KITTI's published calibration, R0_rect folded in,
label_2 boxes as weak labels, and the LiDAR profile on the rig."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DATA

from xkd_ros.classes import IGNORE_INDEX, load_class_set
from xkd_ros.data import open_frames
from xkd_ros.data.kitti import Box, KittiObjectDataset, box_labels
from xkd_ros.data.semantickitti import KITTI_LIDAR, lidar_to_rectified, read_kitti_calib
from xkd_ros.geometry import project_points

SCAN = DATA / "semantickitti_spvnas_000000"
CALIB = DATA / "calibration/kitti_object_000000.txt"
WIDTH, HEIGHT = 1242, 375
NAMES = load_class_set("semantickitti").names
CAR_IDS, PERSON_IDS = (10, 252), (30, 254)  # SemanticKITTI raw ids, static and moving
DONT_CARE = "DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10"


def scan_points() -> np.ndarray:
    return np.fromfile(SCAN / "000000.bin", dtype=np.float32).reshape(-1, 4)


def scan_labels() -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(SCAN / "000000.label", dtype=np.uint32)
    return raw & 0xFFFF, raw >> 16


def rectified(points: np.ndarray) -> np.ndarray:
    """The devkit's R0_rect @ Tr_velo_to_cam, written out from the file's numbers."""
    calib = read_kitti_calib(CALIB)
    R0 = np.eye(4)
    R0[:3, :3] = calib["R0_rect"]
    Tr = np.vstack([calib["Tr_velo_to_cam"], [0, 0, 0, 1]])
    return (R0 @ Tr @ np.column_stack([points[:, :3], np.ones(len(points))]).T).T[:, :3]


def fitted_box(kind: str, rect: np.ndarray, pad: float = 0.02) -> str:
    """A label_2 line for the tightest box around `rect` (rectified camera 0): the rotated rectangle of the
    ground plane (x, z) from OpenCV, height from y (pointing down), rotation_y as KITTI defines it (the
    length axis R_y(ry) @ x = (cos ry, 0, -sin ry))."""
    corners = cv2.boxPoints(cv2.minAreaRect(rect[:, [0, 2]].astype(np.float32))).astype(np.float64)
    edges = [corners[1] - corners[0], corners[2] - corners[1]]
    long_edge, short_edge = sorted(edges, key=lambda e: -np.linalg.norm(e))
    ry = np.arctan2(-long_edge[1], long_edge[0])
    x, z = corners.mean(axis=0)
    bottom, top = rect[:, 1].max(), rect[:, 1].min()
    size = (bottom - top, np.linalg.norm(short_edge), np.linalg.norm(long_edge))
    h, w, length = (value + 2 * pad for value in size)
    return (
        f"{kind} 0.00 0 0.00 0 0 0 0 {h:.4f} {w:.4f} {length:.4f} {x:.4f} {bottom + pad:.4f} {z:.4f} {ry:.4f}"
    )


def write_object_layout(root: Path, split: str = "training", labels: list[str] | None = None) -> Path:
    """The real scan as KITTI object frame 000000, with KITTI's calibration and a blank image_2."""
    folder = root / split
    for sub in ("velodyne", "calib", "image_2"):
        (folder / sub).mkdir(parents=True)
    (folder / "velodyne/000000.bin").symlink_to((SCAN / "000000.bin").resolve())
    shutil.copy(CALIB, folder / "calib/000000.txt")
    cv2.imwrite(str(folder / "image_2/000000.png"), np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    if labels is not None:
        (folder / "label_2").mkdir()
        (folder / "label_2/000000.txt").write_text("\n".join(labels) + "\n")
    return folder


def instance_boxes() -> tuple[list[str], dict[str, list[np.ndarray]]]:
    """label_2 lines fitted to the scan's car and person instances, and each instance's point mask."""
    semantic, instance = scan_labels()
    rect = rectified(scan_points())
    lines, masks = [], {"car": [], "person": []}
    for kind, name, ids in (("Car", "car", CAR_IDS), ("Pedestrian", "person", PERSON_IDS)):
        of_kind = np.isin(semantic, ids)
        for key in np.unique(instance[of_kind]):
            mask = of_kind & (instance == key)
            if mask.sum() >= 10:
                lines.append(fitted_box(kind, rect[mask]))
                masks[name].append(mask)
    return lines, masks


def test_object_frame_projects_as_the_devkit_with_r0_rect_folded_in(tmp_path):
    write_object_layout(tmp_path)
    dataset = open_frames(tmp_path)
    assert isinstance(dataset, KittiObjectDataset)
    (frame,) = dataset
    assert frame.name == "kitti/training/000000"
    assert frame.channels == ("x", "y", "z", "intensity")
    np.testing.assert_array_equal(frame.points, scan_points())
    assert frame.labels is None
    assert frame.images["image_2"].shape == (HEIGHT, WIDTH, 3)
    assert frame.rig.lidar == KITTI_LIDAR
    assert (frame.rig.lidar.sensor, frame.rig.lidar.beams, frame.rig.lidar.intensity_scale) == (
        "velodyne_hdl64e",
        64,
        1.0,
    )
    calib = read_kitti_calib(CALIB)
    homogeneous = np.column_stack([rectified(frame.points), np.ones(len(frame.points))])
    devkit = (calib["P2"] @ homogeneous.T).T  # x = P2 @ R0_rect @ Tr_velo_to_cam @ X
    in_front = devkit[:, 2] > 0.5
    expected = devkit[:, :2] / devkit[:, 2:]
    inside = in_front & (expected[:, 0] >= 0) & (expected[:, 0] < WIDTH)
    inside &= (expected[:, 1] >= 0) & (expected[:, 1] < HEIGHT)
    projection = project_points(frame.points, frame.rig, min_depth=0.5)
    index, uv, _ = projection.visible("image_2")
    assert np.array_equal(np.sort(index), np.flatnonzero(inside))
    assert inside.sum() == 19892
    assert np.abs(uv - expected[index]).max() < 1e-3
    # What folding R0_rect in is worth on this scan: without it, points land 3.7-13.6 px off.
    unrectified = (calib["P2"] @ np.vstack([calib["Tr_velo_to_cam"], [0, 0, 0, 1]]) @ homogeneous.T).T
    offset = np.linalg.norm(unrectified[index, :2] / unrectified[index, 2:] - uv, axis=1)
    assert np.median(offset) > 6


def test_label_2_boxes_become_weak_point_labels(tmp_path):
    lines, masks = instance_boxes()
    assert (len(masks["car"]), len(masks["person"])) == (7, 4)
    write_object_layout(tmp_path, labels=[*lines, DONT_CARE])
    (frame,) = KittiObjectDataset(tmp_path)
    assert frame.classes == "semantickitti"
    car, person = NAMES.index("car"), NAMES.index("person")
    for name, index in (("car", car), ("person", person)):
        for mask in masks[name]:
            assert np.mean(frame.labels[mask] == index) == 1.0  # every point of the object in its box
    semantic, _ = scan_labels()
    labelled_car = frame.labels == car
    assert np.mean(np.isin(semantic[labelled_car], CAR_IDS)) > 0.9  # the rest: mostly road under the wheels
    assert set(np.unique(frame.labels).tolist()) == {car, person, IGNORE_INDEX}
    assert np.mean(frame.labels == IGNORE_INDEX) > 0.98  # the road and the rest: no box, no label


def test_box_orientation_follows_the_devkit_corners():
    """Points at the 8 corners of KITTI's compute_box_3d (R_y(ry) @ corners + location), drawn 2 % in
    towards the centre, are inside; 2 % out, outside. An ry of 0.5 rad tells a sign error apart."""
    h, w, length, location, ry = 1.5, 1.8, 4.2, np.array([2.0, 1.6, 15.0]), 0.5
    x = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * length / 2
    y = np.array([0, 0, 0, 0, -h, -h, -h, -h])
    z = np.array([w, -w, -w, w, w, -w, -w, w]) / 2
    c, s = np.cos(ry), np.sin(ry)
    corners = (np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]) @ np.vstack([x, y, z])).T + location
    centre = location - [0, h / 2, 0]
    points = np.vstack([centre + 0.98 * (corners - centre), centre + 1.02 * (corners - centre)])
    boxes = [Box("Cyclist", h, w, length, tuple(location), ry), Box("Tram", 9, 9, 9, tuple(location), 0.0)]
    labels = box_labels(points, boxes, np.eye(4))
    assert labels.tolist() == [NAMES.index("bicyclist")] * 8 + [IGNORE_INDEX] * 8


def test_testing_split_and_split_folder(tmp_path):
    folder = write_object_layout(tmp_path, split="testing")
    for dataset in (
        open_frames(tmp_path),
        KittiObjectDataset(tmp_path, split="testing"),
        open_frames(folder),
    ):
        (frame,) = dataset
        assert frame.name == "kitti/testing/000000"
        assert frame.labels is None
    shutil.rmtree(folder / "image_2")
    (frame,) = open_frames(tmp_path)
    assert len(frame.rig) == 0
    assert frame.rig.lidar == KITTI_LIDAR


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda f: (f / "calib/000000.txt").unlink(), FileNotFoundError, r"calib/000000\.txt: missing"),
        (
            lambda f: (f / "label_2/000000.txt").write_text("Car 0 0 0 0 0 0 0 1 2 3\n"),
            ValueError,
            r"label_2/000000\.txt:1: expected 15 values",
        ),
        (
            lambda f: (f / "label_2/000000.txt").write_text(
                "Car 0 0 0 0 0 0 0 1.5 1.6 3.9 1.0 1.7 wide 0.0\n"
            ),
            ValueError,
            r"label_2/000000\.txt:1: dimensions, location, rotation_y: expected numbers",
        ),
        (
            lambda f: (f / "calib/000000.txt").write_text(
                "\n".join(line for line in CALIB.read_text().splitlines() if not line.startswith("R0_rect"))
            ),
            ValueError,
            r"calib/000000\.txt: Tr_velo_to_cam without R0_rect",
        ),
    ],
)
def test_broken_frames_name_the_file(tmp_path, edit, error, message):
    folder = write_object_layout(tmp_path, labels=[DONT_CARE])
    dataset = KittiObjectDataset(tmp_path)
    edit(folder)
    with pytest.raises(error, match=f"^{folder}/{message}"):
        dataset[0]


def test_wrong_layout_camera_or_class_set(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"training/velodyne: missing"):
        KittiObjectDataset(tmp_path)
    write_object_layout(tmp_path)
    with pytest.raises(ValueError, match=r"split: expected one of"):
        KittiObjectDataset(tmp_path, split="val")
    with pytest.raises(ValueError, match=r"camera: expected image_2 or image_3"):
        KittiObjectDataset(tmp_path, camera="image_0")
    with pytest.raises(ValueError, match=r"classes: class set 'rellis3d' lacks \['bicyclist', 'car'"):
        KittiObjectDataset(tmp_path, classes="rellis3d")
    (tmp_path / "training/image_2/000000.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"image_2/000000\.png: missing \(1 scan"):
        KittiObjectDataset(tmp_path)


def test_lidar_to_rectified_of_the_object_calib_is_rigid():
    T = lidar_to_rectified(read_kitti_calib(CALIB), CALIB)
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)
