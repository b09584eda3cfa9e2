"""Measuring an occlusion test: against the synthetic truth, and by the road it drops in real frames.

The truth (`SyntheticSample.true_visibility`) says which LiDAR points each camera really sees; an occlusion
test (`project_points(..., occlusion=...)`) guesses it from the points alone. Real frames have no such truth,
but one failure shows without it: the ground. A LiDAR sees the road around the car and so does a camera
mounted near it, so a test that drops road points 10-40 m away (they are rarely hidden: only behind the
edges of objects) is wrong about them. bench/bench_visibility.py and test/test_visibility.py use these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xkd_ros.geometry import CameraCalibration, CameraIntrinsics, Rig, project_points

GROUND_RANGE_M = (10.0, 40.0)  # horizontal distance from the LiDAR of the ground points that are scored
# Ground classes by data set: SemanticKITTI raw ids (road, parking, sidewalk, other-ground, lane-marking,
# terrain), the rellis3d and synthetic class sets by name.
SEMANTICKITTI_GROUND = (40, 44, 48, 49, 60, 72)
RELLIS3D_GROUND = ("dirt", "grass", "asphalt", "concrete", "puddle", "mud", "water", "rubble")
SYNTHETIC_GROUND = ("road", "lane_marking", "sidewalk", "terrain")


@dataclass(frozen=True)
class Scores:
    """Precision and recall of "visible" over the points inside the cameras' images, and their counts."""

    precision: float
    recall: float
    inside: int
    hidden: int

    @classmethod
    def of(cls, kept: np.ndarray, truth: np.ndarray, inside: np.ndarray) -> Scores:
        """kept: what the test keeps, truth: what is really seen, inside: in front and inside the image;
        (cameras, points) each."""
        kept, truth = kept & inside, truth & inside
        hit = int(np.count_nonzero(kept & truth))
        return cls(
            precision=hit / max(int(np.count_nonzero(kept)), 1),
            recall=hit / max(int(np.count_nonzero(truth)), 1),
            inside=int(np.count_nonzero(inside)),
            hidden=int(np.count_nonzero(inside & ~truth)),
        )


def ground_dropped(xyz: np.ndarray, ground: np.ndarray, inside: np.ndarray, kept: np.ndarray) -> float:
    """Share of (camera, point) pairs of ground points GROUND_RANGE_M from the LiDAR inside an image that
    the test drops."""
    distance = np.hypot(xyz[:, 0], xyz[:, 1])
    scored = inside & (ground & (distance >= GROUND_RANGE_M[0]) & (distance <= GROUND_RANGE_M[1]))[None]
    return int(np.count_nonzero(scored & ~kept)) / max(int(np.count_nonzero(scored)), 1)


def plane_ground(xyz: np.ndarray, band: float = 0.2, iterations: int = 6) -> np.ndarray:
    """Ground points of a scan without labels: within `band` metres of the plane z = a x + b y + c fitted to
    the lowest points 5-40 m away and refitted to its own band a few times (flat streets, one plane)."""
    distance = np.hypot(xyz[:, 0], xyz[:, 1])
    candidates = np.flatnonzero(np.isfinite(distance) & (distance > 5) & (distance < 40))
    z = xyz[candidates, 2].astype(np.float64)
    inliers = candidates[z <= np.percentile(z, 30)]
    design = np.column_stack([xyz[:, 0], xyz[:, 1], np.ones(len(xyz))]).astype(np.float64)
    for _ in range(iterations):
        coefficients, *_ = np.linalg.lstsq(design[inliers], xyz[inliers, 2].astype(np.float64), rcond=None)
        residual = np.abs(design[candidates] @ coefficients - xyz[candidates, 2])
        inliers = candidates[residual < band]
    residual = np.abs(design @ coefficients - xyz[:, 2])
    return np.nan_to_num(residual, nan=np.inf) < band


def kitti_odometry_scan(scan: Path, labels: Path, calib: Path, size: tuple[int, int]) -> tuple:
    """A KITTI HDL-64E scan (x y z remission), its SemanticKITTI raw labels and the rig of camera image_2
    from an odometry calib.txt: (points (N, 4), raw label ids (N,), Rig)."""
    from xkd_ros.data.semantickitti import (
        KITTI_LIDAR,
        camera_from_projection,
        lidar_to_rectified,
        read_kitti_calib,
    )

    points = np.fromfile(scan, dtype=np.float32).reshape(-1, 4)
    raw = np.fromfile(labels, dtype=np.uint32) & 0xFFFF
    matrices = read_kitti_calib(calib)
    K, T_cam_velo = camera_from_projection(matrices["P2"], lidar_to_rectified(matrices, calib))
    camera = CameraCalibration("image_2", CameraIntrinsics(*size, K), T_cam_velo)
    return points, raw, Rig.from_cameras([camera], "velodyne", KITTI_LIDAR)


def compare(xyz: np.ndarray, rig: Rig, min_depth: float = 0.1) -> dict[str, np.ndarray]:
    """What each test keeps, (cameras, points): "none" (in the image), "cell" (8 px, 0.5 m: the earlier
    pre-processing defaults) and "footprint" (0.5 m)."""
    return {
        "none": project_points(xyz, rig, min_depth).mask,
        "cell": project_points(xyz, rig, min_depth, occlusion_cell=8, occlusion_tolerance=0.5).mask,
        "footprint": project_points(xyz, rig, min_depth, occlusion="footprint", occlusion_tolerance=0.5).mask,
    }
