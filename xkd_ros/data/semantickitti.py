"""SemanticKITTI / KITTI odometry reader: sequences/<seq>/velodyne/*.bin with, where present, labels/*.label,
one camera's images (image_2/*.png), calib.txt, times.txt and poses.txt.

KITTI's calib.txt gives each rectified camera as a projection P = K [I | t] (t: its offset from cam0) and
the LiDAR as Tr (velodyne -> rectified cam0), so T_cam_velo = [I | inv(K) P[:, 3]] @ Tr. The object
layout's calib file (xkd_ros.data.kitti) names it Tr_velo_to_cam and maps to the unrectified cam0, with the
rectifying rotation R0_rect beside it: wherever a file has R0_rect it is folded in, Tr -> R0_rect @ Tr, so
the same file reads the same in either layout (left out, it puts points about 7 px off on KITTI's cameras).
poses.txt holds cam0 poses in the first cam0 frame; as SemanticKITTI does, they become LiDAR poses in the
first scan's LiDAR frame: T_world_lidar = inv(Tr) @ pose @ Tr. Camera and LiDAR are triggered together, so
an image has the scan's stamp and the rig needs no motion compensation. The LiDAR is an HDL-64E whose
remission runs 0..1 (`KITTI_LIDAR`).

A bare folder of scans (<dir>/*.bin with *.label beside them, e.g. one scan from a model zoo) reads as one
sequence without camera or poses. `sector` keeps one half of every scan by azimuth (`SECTORS`): fine-tune on
the front half of a scan and score the rear half, the two disjoint and together the whole scan. With the one
labelled real scan here that is an anecdote about one street, not a benchmark.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xkd_ros.classes import load_class_set
from xkd_ros.data.files import check_all_present, read_label_file, read_rgb, read_scan_bin
from xkd_ros.data.frame import INTENSITY, Frame
from xkd_ros.geometry import CameraCalibration, CameraIntrinsics, LidarProfile, Rig

CHANNELS = ("x", "y", "z", INTENSITY)  # KITTI's remission
CLASSES = "semantickitti"
LIDAR_FRAME = "velodyne"
# KITTI's sensor setup puts the Velodyne 1.73 m above the ground
KITTI_LIDAR = LidarProfile.from_dict(
    {"sensor": "velodyne_hdl64e", "intensity_scale": 1.0, "mount_height": 1.73}
)
# Half-scans by azimuth in the LiDAR frame (x forward, y left): each pair is disjoint and covers the scan.
SECTORS = {
    "front": lambda xyz: xyz[:, 0] >= 0,
    "rear": lambda xyz: xyz[:, 0] < 0,
    "left": lambda xyz: xyz[:, 1] >= 0,
    "right": lambda xyz: xyz[:, 1] < 0,
}
RECTIFICATION = "R0_rect"  # the one 3x3 entry of a KITTI calib file; every other entry is 3x4


def read_kitti_calib(path: Path) -> dict[str, np.ndarray]:
    """The matrices of a KITTI calib file by key: odometry calib.txt ("P0: 12 numbers" ... "Tr: 12
    numbers") or the object layout's calib/<frame>.txt (P0..P3, R0_rect: 9 numbers, Tr_velo_to_cam,
    Tr_imu_to_velo); 3x4 each, R0_rect 3x3."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing calibration")
    matrices = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            key, _, values = line.partition(":")
            key = key.strip()
            shape = (3, 3) if key == RECTIFICATION else (3, 4)
            size, numbers = shape[0] * shape[1], values.split()
            where = f"{path}:{number}: {key}: expected {size} numbers"
            if len(numbers) != size:
                raise ValueError(f"{where}, got {len(numbers)}")
            try:
                matrix = np.array(numbers, dtype=np.float64).reshape(shape)
            except ValueError:
                raise ValueError(f"{where}, got {values.strip()!r}") from None
            if not np.isfinite(matrix).all():
                raise ValueError(f"{where}, got NaN or infinity")
            matrices[key] = matrix
    return matrices


def lidar_to_rectified(calib: dict[str, np.ndarray], path: Path) -> np.ndarray:
    """T (4x4) from the LiDAR into rectified cam0, the frame every P of the file projects from.

    `Tr` (odometry) or `Tr_velo_to_cam` (object layout), with `R0_rect` folded in where the file has it.
    `Tr_velo_to_cam` without `R0_rect` is refused: it maps to the unrectified cam0, and using it as if
    rectified is the silent few-pixel error this reader exists to rule out.
    """
    given = [key for key in ("Tr", "Tr_velo_to_cam") if key in calib]
    if not given:
        raise ValueError(f"{path}: no Tr or Tr_velo_to_cam (the LiDAR to camera 0 transform)")
    if len(given) == 2 and not np.allclose(calib["Tr"], calib["Tr_velo_to_cam"], rtol=0, atol=1e-9):
        raise ValueError(f"{path}: Tr and Tr_velo_to_cam differ; keep the one that is the LiDAR calibration")
    T = _homogeneous(calib[given[0]])
    if RECTIFICATION not in calib:
        if given == ["Tr_velo_to_cam"]:
            raise ValueError(
                f"{path}: Tr_velo_to_cam without {RECTIFICATION}: it maps into the unrectified camera 0, "
                f"so the rectifying rotation {RECTIFICATION} (9 numbers) must be in the file too"
            )
        return T
    R0 = calib[RECTIFICATION]
    if not np.allclose(R0 @ R0.T, np.eye(3), atol=1e-5) or np.linalg.det(R0) < 0:
        raise ValueError(f"{path}: {RECTIFICATION}: not a rotation (rows not orthonormal, or a mirror)")
    rectify = np.eye(4)
    rectify[:3, :3] = R0
    return rectify @ T


def camera_from_projection(P: np.ndarray, Tr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """K and T_cam_velo of the rectified camera with projection P, given Tr (velodyne -> rectified cam0,
    3x4 or 4x4, as lidar_to_rectified returns it)."""
    K = P[:, :3]
    T_cam_cam0 = np.eye(4)
    T_cam_cam0[:3, 3] = np.linalg.solve(K, P[:, 3])
    return K, T_cam_cam0 @ _homogeneous(Tr)


def _homogeneous(T: np.ndarray) -> np.ndarray:
    return T if T.shape == (4, 4) else np.vstack([T.reshape(3, 4), [0.0, 0.0, 0.0, 1.0]])


def _read_lines(path: Path, shape: tuple[int, ...], needed: int) -> np.ndarray:
    """One row of numbers per scan (times.txt, poses.txt), at least `needed` of them."""
    rows = [
        (number, line.split()) for number, line in enumerate(path.read_text().splitlines(), 1) if line.strip()
    ]
    if len(rows) < needed:
        raise ValueError(f"{path}: {len(rows)} line(s), but the scans run up to index {needed - 1}")
    size = int(np.prod(shape))
    for number, values in rows:
        if len(values) != size:
            raise ValueError(f"{path}:{number}: expected {size} number(s), got {len(values)}")
    try:
        return np.array([values for _, values in rows], dtype=np.float64).reshape(-1, *shape)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


@dataclass(frozen=True, eq=False)
class _Sequence:
    """What one sequence folder holds, found once: scans, and which optional files come with them."""

    name: str
    folder: Path
    scan_folder: Path
    label_folder: Path
    scans: list[str]
    labelled: bool
    images: Path | None
    K: np.ndarray | None
    T_cam_velo: np.ndarray | None
    times: np.ndarray | None
    poses: np.ndarray | None  # (n, 4, 4) T_world_lidar

    @classmethod
    def index(cls, root: Path, name: str, camera: str) -> _Sequence:
        folder = root / "sequences" / name
        velodyne = folder / "velodyne"
        if not velodyne.is_dir():
            raise FileNotFoundError(f"{velodyne}: missing scan folder of sequence {name}")
        scans = _scan_names(velodyne)
        labelled = check_all_present(folder / "labels", scans, ".label")
        images = folder / camera if check_all_present(folder / camera, scans, ".png") else None
        needed = int(scans[-1]) + 1
        poses_file = next(
            (path for path in (folder / "poses.txt", root / "poses" / f"{name}.txt") if path.is_file()), None
        )
        K = T_cam_velo = poses = times = None
        if images is not None or poses_file is not None:
            calib_file = folder / "calib.txt"
            calib = read_kitti_calib(calib_file)
            projection = "P" + camera.removeprefix("image_")
            if images is not None and projection not in calib:
                raise ValueError(f"{calib_file}: no {[projection]} (needed for {images})")
            Tr = lidar_to_rectified(calib, calib_file)
            if images is not None:
                K, T_cam_velo = camera_from_projection(calib[projection], Tr)
            if poses_file is not None:
                poses = np.tile(np.eye(4), (needed, 1, 1))
                poses[:, :3] = _read_lines(poses_file, (3, 4), needed)[:needed]
                poses = np.linalg.inv(Tr) @ poses @ Tr  # Tr is rigid to 1e-7 only: invert it exactly
        if (folder / "times.txt").is_file():
            times = _read_lines(folder / "times.txt", (), needed)
        return cls(
            name, folder, velodyne, folder / "labels", scans, labelled, images, K, T_cam_velo, times, poses
        )

    @classmethod
    def bare(cls, folder: Path) -> _Sequence:
        """A folder holding the scans themselves (*.bin, labelled where every scan has its *.label)."""
        scans = _scan_names(folder)
        labelled = check_all_present(folder, scans, ".label")
        return cls(folder.name, folder, folder, folder, scans, labelled, None, None, None, None, None)


def _scan_names(folder: Path) -> list[str]:
    scans = sorted(path.stem for path in folder.glob("*.bin"))
    if not scans:
        raise FileNotFoundError(f"{folder}: no .bin scans")
    if not all(scan.isdigit() for scan in scans):
        raise ValueError(f"{folder}: scan names must be frame numbers (000000.bin ...), got {scans[:3]}")
    return scans


class SemanticKittiDataset(Sequence[Frame]):
    """The scans of the SemanticKITTI / KITTI odometry sequences under `root` (all, or `sequences`), in order,
    or of a bare folder of scans `root` (no sequences/ folder); `sector` (a key of SECTORS) keeps that half
    of every scan, points and labels alike.

    Folders and the small text files (calib, times, poses) are indexed here; scans, labels and images are
    read when a frame is asked for. Labels (semantic id = value & 0xFFFF) map through the class set
    `classes`. Without `camera` images a frame has no images and a rig without cameras.
    """

    def __init__(
        self,
        root: str | Path,
        sequences: Iterable[str | int] | None = None,
        camera: str = "image_2",
        classes: str = CLASSES,
        sector: str | None = None,
    ) -> None:
        self.root = Path(root)
        if sector is not None and sector not in SECTORS:
            raise ValueError(f"sector: {sector!r} is not one of {sorted(SECTORS)}")
        self.sector = sector
        if not camera.startswith("image_"):
            raise ValueError(f"camera: expected a KITTI image folder (image_0 .. image_3), got {camera!r}")
        self.camera = camera
        self.classes = classes
        load_class_set(classes)  # an unknown class set fails here, not at the first frame
        if sequences is None and not (self.root / "sequences").is_dir() and any(self.root.glob("*.bin")):
            self._sequences = [_Sequence.bare(self.root)]
            self._scans = [(seq, scan) for seq in self._sequences for scan in seq.scans]
            return
        if sequences is None:
            folder = self.root / "sequences"
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: missing (expected sequences/<seq>/velodyne/*.bin)")
            names = sorted(path.name for path in folder.iterdir() if (path / "velodyne").is_dir())
            if not names:
                raise FileNotFoundError(f"{folder}: no sequence folders with a velodyne/ folder")
        else:
            names = [f"{s:02d}" if isinstance(s, int) else str(s) for s in sequences]
        self._sequences = [_Sequence.index(self.root, name, camera) for name in names]
        self._scans = [(seq, scan) for seq in self._sequences for scan in seq.scans]

    def __len__(self) -> int:
        return len(self._scans)

    def __getitem__(self, index: int) -> Frame:
        seq, scan = self._scans[operator.index(index)]
        scan_file = seq.scan_folder / f"{scan}.bin"
        points = read_scan_bin(scan_file, len(CHANNELS))
        labels = None
        if seq.labelled:
            labels = read_label_file(seq.label_folder / f"{scan}.label", len(points), self.classes)
        name = f"semantickitti/{seq.name}/{scan}"
        if self.sector is not None:
            keep = SECTORS[self.sector](points)
            points = points[keep]
            labels = labels[keep] if labels is not None else None
            name = f"{name}/{self.sector}"
        stamp = float(seq.times[int(scan)]) if seq.times is not None else 0.0
        cameras, images = [], {}
        if seq.images is not None:
            rgb = read_rgb(seq.images / f"{scan}.png")
            intrinsics = CameraIntrinsics(width=rgb.shape[1], height=rgb.shape[0], K=seq.K)
            cameras.append(CameraCalibration(self.camera, intrinsics, seq.T_cam_velo))
            images[self.camera] = rgb
        return Frame(
            points=points,
            channels=CHANNELS,
            rig=Rig.from_cameras(cameras, lidar_frame=LIDAR_FRAME, lidar=KITTI_LIDAR),
            images=images,
            labels=labels,
            classes=self.classes if labels is not None else None,
            stamp=stamp,
            image_stamps=dict.fromkeys(images, stamp),
            pose=seq.poses[int(scan)] if seq.poses is not None else None,
            name=name,
        )
