"""KITTI 3D object layout: <root>/{training,testing}/velodyne/*.bin, image_2/*.png, calib/*.txt and, in
training, label_2/*.txt, whose 3-D boxes become weak point labels.

Every frame has its own calib file: P0..P3 (rectified projections), R0_rect (the rectifying rotation of
camera 0), Tr_velo_to_cam (LiDAR -> unrectified camera 0), Tr_imu_to_velo. The camera is placed as the KITTI
devkit projects, x = P2 @ R0_rect @ Tr_velo_to_cam @ X, split into intrinsics and extrinsics:
K = P2[:, :3] and T_cam2_velo = [I | inv(K) P2[:, 3]] @ R0_rect @ Tr_velo_to_cam (one code path with the
odometry reader, xkd_ros.data.semantickitti). The LiDAR is an HDL-64E with remission 0..1 (`KITTI_LIDAR`).

Weak labels: label_2 holds one line per object, "type truncated occluded alpha left top right bottom h w l
x y z rotation_y" (a box of height h, width w, length l standing on its bottom centre x y z in rectified
camera 0, turned by rotation_y about the camera's y axis). A point inside a box takes its type's class in
`BOX_CLASSES` (in the class set `classes`); every other point, and every point of another type (DontCare,
Misc, Tram), is IGNORE. Boxes are annotated inside camera 2's field of view only, and only for objects, so
the labels say nothing about the road or the points behind the car: they are weak labels, fit for
few-label fine-tuning of the object classes, not for scoring a whole scan.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xkd_ros.classes import IGNORE_INDEX, load_class_set
from xkd_ros.data.files import check_all_present, read_rgb, read_scan_bin
from xkd_ros.data.frame import Frame
from xkd_ros.data.semantickitti import (
    CHANNELS,
    CLASSES,
    KITTI_LIDAR,
    LIDAR_FRAME,
    camera_from_projection,
    lidar_to_rectified,
    read_kitti_calib,
)
from xkd_ros.geometry import CameraCalibration, CameraIntrinsics, Rig

SPLITS = ("training", "testing")
# KITTI object types -> SemanticKITTI classes. A van is a car there; Tram, Misc and DontCare have no class
# a box could name (other-vehicle also holds buses and trailers, which KITTI calls Misc or Truck).
BOX_CLASSES: Mapping[str, str] = {
    "Car": "car",
    "Van": "car",
    "Truck": "truck",
    "Pedestrian": "person",
    "Person_sitting": "person",
    "Cyclist": "bicyclist",
}


@dataclass(frozen=True)
class Box:
    """One label_2 object: its type and its 3-D box in rectified camera 0 (metres, radians)."""

    type: str
    height: float
    width: float
    length: float
    location: tuple[float, float, float]  # bottom centre
    rotation_y: float


def read_kitti_boxes(path: Path) -> list[Box]:
    """The objects of a label_2 file (15 values a line; a 16th, a detector's score, is allowed)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing label file")
    boxes = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        if len(values) not in (15, 16):
            raise ValueError(f"{path}:{number}: expected 15 values (type ... rotation_y), got {len(values)}")
        try:
            height, width, length, x, y, z, ry = (float(value) for value in values[8:15])
        except ValueError:
            raise ValueError(f"{path}:{number}: dimensions, location, rotation_y: expected numbers") from None
        boxes.append(Box(values[0], height, width, length, (x, y, z), ry))
    return boxes


def box_labels(
    xyz: np.ndarray, boxes: Sequence[Box], T_rect_velo: np.ndarray, classes: str = CLASSES
) -> np.ndarray:
    """(N,) uint8 training ids of `classes`: a LiDAR point (xyz) inside a box of a type in BOX_CLASSES
    gets that class; all others IGNORE_INDEX. Where boxes overlap, the later one in the file wins."""
    names = load_class_set(classes).names
    labels = np.full(len(xyz), IGNORE_INDEX, dtype=np.uint8)
    rect = xyz.astype(np.float64) @ T_rect_velo[:3, :3].T + T_rect_velo[:3, 3]
    for box in boxes:
        if box.type not in BOX_CLASSES:
            continue
        offset = rect - box.location
        cos, sin = np.cos(box.rotation_y), np.sin(box.rotation_y)
        along = cos * offset[:, 0] - sin * offset[:, 2]  # the box's length axis: R_y(rotation_y) @ x
        across = sin * offset[:, 0] + cos * offset[:, 2]
        up = offset[:, 1]  # camera y points down: the box spans -height..0 above its bottom centre
        inside = (
            (np.abs(along) <= box.length / 2)
            & (np.abs(across) <= box.width / 2)
            & (up <= 0)
            & (up >= -box.height)
        )
        labels[inside] = names.index(BOX_CLASSES[box.type])
    return labels


def find_split(root: Path, split: str | None) -> Path:
    """The split folder: `root` itself when it holds velodyne/ and calib/, else root/`split` (default
    training, or testing where there is no training folder)."""
    if split is None and (root / "velodyne").is_dir() and (root / "calib").is_dir():
        return root
    if split is not None and split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    if split is None:
        split = next((name for name in SPLITS if (root / name / "velodyne").is_dir()), SPLITS[0])
    folder = root / split
    if not (folder / "velodyne").is_dir():
        raise FileNotFoundError(f"{folder / 'velodyne'}: missing (expected <root>/{split}/velodyne/*.bin)")
    return folder


class KittiObjectDataset(Sequence[Frame]):
    """The frames of one split of the KITTI 3D object layout under `root`, in file-name order.

    `camera`: image_2 (left colour, the one label_2 is annotated in) or image_3; a frame has it where the
    folder exists. Labels come from label_2 where the folder exists (module docstring), in the class set
    `classes`, which must have the classes BOX_CLASSES names.
    """

    def __init__(
        self, root: str | Path, split: str | None = None, camera: str = "image_2", classes: str = CLASSES
    ) -> None:
        if camera not in ("image_2", "image_3"):
            raise ValueError(f"camera: expected image_2 or image_3 (KITTI's colour cameras), got {camera!r}")
        names = load_class_set(classes).names
        missing = sorted(set(BOX_CLASSES.values()) - set(names))
        if missing:
            raise ValueError(f"classes: class set {classes!r} lacks {missing}, which label_2 boxes map to")
        self.folder = find_split(Path(root), split)
        self.camera, self.classes = camera, classes
        self.projection = "P" + camera.removeprefix("image_")
        velodyne = self.folder / "velodyne"
        self.scans = sorted(path.stem for path in velodyne.glob("*.bin"))
        if not self.scans:
            raise FileNotFoundError(f"{velodyne}: no .bin scans")
        if not check_all_present(self.folder / "calib", self.scans, ".txt"):
            raise FileNotFoundError(
                f"{self.folder / 'calib'}: missing (every scan needs its calib/<frame>.txt)"
            )
        self.images = check_all_present(self.folder / camera, self.scans, ".png")
        self.labelled = check_all_present(self.folder / "label_2", self.scans, ".txt")

    def __len__(self) -> int:
        return len(self.scans)

    def __getitem__(self, index: int) -> Frame:
        scan = self.scans[operator.index(index)]
        points = read_scan_bin(self.folder / "velodyne" / f"{scan}.bin", len(CHANNELS))
        calib_file = self.folder / "calib" / f"{scan}.txt"
        calib = read_kitti_calib(calib_file)
        T_rect_velo = lidar_to_rectified(calib, calib_file)
        cameras, images = [], {}
        if self.images:
            if self.projection not in calib:
                raise ValueError(f"{calib_file}: no {self.projection} (needed for {self.camera})")
            rgb = read_rgb(self.folder / self.camera / f"{scan}.png")
            K, T_cam_velo = camera_from_projection(calib[self.projection], T_rect_velo)
            intrinsics = CameraIntrinsics(width=rgb.shape[1], height=rgb.shape[0], K=K)
            cameras.append(CameraCalibration(self.camera, intrinsics, T_cam_velo))
            images[self.camera] = rgb
        labels = None
        if self.labelled:
            boxes = read_kitti_boxes(self.folder / "label_2" / f"{scan}.txt")
            labels = box_labels(points[:, :3], boxes, T_rect_velo, self.classes)
        return Frame(
            points=points,
            channels=CHANNELS,
            rig=Rig.from_cameras(cameras, lidar_frame=LIDAR_FRAME, lidar=KITTI_LIDAR),
            images=images,
            labels=labels,
            classes=self.classes if labels is not None else None,
            image_stamps=dict.fromkeys(images, 0.0),
            name=f"kitti/{self.folder.name}/{scan}",
        )
