"""A sensor rig: one LiDAR and the calibrated cameras around it, loaded from and saved to YAML.

File format (config/<rig>.rig.yaml)::

    lidar_frame: LIDAR_TOP          # frame_id of the PointCloud2
    cameras:                        # in the order the node subscribes to them
      CAM_FRONT:
        frame_id: CAM_FRONT         # optical frame: x right, y down, z forward
        width: 1600
        height: 900
        K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
        distortion_model: plumb_bob # plumb_bob | rational_polynomial | equidistant
        D: [k1, k2, p1, p2, k3]
        T_cam_lidar: 4x4            # maps LiDAR points into the camera optical frame
    lidar:                          # the LiDAR's sensor profile (xkd_ros.geometry.lidar); optional
      sensor: velodyne_hdl32e       # a preset; beams, fov_up_deg, fov_down_deg, elevations_deg,
      min_range: 1.0                # ring_order, intensity_scale, min_range override it

`cameras: {}` is a LiDAR-only rig: the node runs the LiDAR-only head on every point and says so.

Keys other than these are refused, naming their key path: a misspelt `distortion_modle` would otherwise
silently fall back to the default. T_cam_lidar must be a proper rigid transform (orthonormal rotation with
determinant +1): a mirror (determinant -1) projects every point to the wrong side of the image.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from xkd_ros.geometry.camera import CalibrationError, CameraIntrinsics, as_matrix
from xkd_ros.geometry.lidar import LidarProfile

__all__ = ["CalibrationError", "CameraCalibration", "LidarProfile", "Rig"]

RIG_KEYS = ("lidar_frame", "cameras", "lidar")
CAMERA_KEYS = ("frame_id", "width", "height", "K", "distortion_model", "D", "T_cam_lidar")


@dataclass(frozen=True, eq=False)
class CameraCalibration:
    """One camera of the rig: its intrinsics and where it sits relative to the LiDAR."""

    name: str
    intrinsics: CameraIntrinsics
    T_cam_lidar: np.ndarray
    frame_id: str = ""

    def __post_init__(self) -> None:
        T = as_matrix(self.T_cam_lidar, (4, 4), "T_cam_lidar")
        R = T[:3, :3]
        if not np.allclose(T[3], [0, 0, 0, 1]) or not np.allclose(R @ R.T, np.eye(3), atol=1e-4):
            raise CalibrationError(
                "T_cam_lidar: not a rigid transform (rotation not orthonormal, or last row not 0 0 0 1)"
            )
        determinant = float(np.linalg.det(R))
        if determinant < 0:  # orthonormal, so +-1: a reflection, e.g. one axis of a hand-made matrix flipped
            raise CalibrationError(
                f"T_cam_lidar: a mirror, not a rotation (determinant {determinant:.3f}, must be +1)"
            )
        object.__setattr__(self, "T_cam_lidar", T)
        object.__setattr__(self, "frame_id", self.frame_id or self.name)


@dataclass(frozen=True, eq=False)
class Rig:
    """Cameras by name, in subscription order (the order the network gets their images in), plus the LiDAR
    frame they are calibrated against and the LiDAR's sensor profile."""

    cameras: Mapping[str, CameraCalibration]
    lidar_frame: str = "lidar"
    lidar: LidarProfile = field(default_factory=LidarProfile)

    def __iter__(self) -> Iterator[CameraCalibration]:
        return iter(self.cameras.values())

    def __len__(self) -> int:
        return len(self.cameras)

    def __getitem__(self, name: str) -> CameraCalibration:
        return self.cameras[name]

    @property
    def names(self) -> list[str]:
        return list(self.cameras)

    @classmethod
    def from_cameras(
        cls, cameras: list[CameraCalibration], lidar_frame: str = "lidar", lidar: LidarProfile | None = None
    ) -> Rig:
        return cls({camera.name: camera for camera in cameras}, lidar_frame, lidar or LidarProfile())

    def with_cameras(self, cameras: list[CameraCalibration]) -> Rig:
        """The same LiDAR (frame and profile) with `cameras` instead: a subset, or recalibrated ones."""
        return Rig({camera.name: camera for camera in cameras}, self.lidar_frame, self.lidar)

    @classmethod
    def from_dict(cls, data: object, source: str = "rig") -> Rig:
        """Build a rig from parsed YAML; a malformed entry raises CalibrationError naming its key path."""
        if not isinstance(data, dict):
            raise CalibrationError(f"{source}: expected a mapping with 'cameras', got {type(data).__name__}")
        _refuse_unknown_keys(data, RIG_KEYS, f"{source}: ")
        cameras = data.get("cameras")
        if not isinstance(cameras, dict):
            raise CalibrationError(
                f"{source}: cameras: expected a mapping of camera name to calibration "
                "({} for a LiDAR-only rig)"
            )
        built = []
        for name, entry in cameras.items():
            key = f"{source}: cameras.{name}"
            if not isinstance(entry, dict):
                raise CalibrationError(f"{key}: expected a mapping, got {type(entry).__name__}")
            _refuse_unknown_keys(entry, CAMERA_KEYS, f"{key}.")
            for required in ("width", "height", "K", "T_cam_lidar"):
                if required not in entry:
                    raise CalibrationError(f"{key}.{required}: missing")
            for size in ("width", "height"):
                if not isinstance(entry[size], int) or isinstance(entry[size], bool):
                    raise CalibrationError(
                        f"{key}.{size}: expected a whole number of pixels, got {entry[size]!r}"
                    )
            try:
                intrinsics = CameraIntrinsics(
                    width=entry["width"],
                    height=entry["height"],
                    K=entry["K"],
                    D=entry.get("D", []),
                    distortion_model=entry.get("distortion_model", "plumb_bob"),
                )
                built.append(
                    CameraCalibration(str(name), intrinsics, entry["T_cam_lidar"], entry.get("frame_id", ""))
                )
            except CalibrationError as error:
                raise CalibrationError(f"{key}.{error}") from None
        lidar = LidarProfile.from_dict(data.get("lidar"), f"{source}: lidar")
        return cls.from_cameras(built, str(data.get("lidar_frame", "lidar")), lidar)

    def to_dict(self) -> dict:
        cameras = {}
        for camera in self:
            intr = camera.intrinsics
            cameras[camera.name] = {
                "frame_id": camera.frame_id,
                "width": intr.width,
                "height": intr.height,
                "K": intr.K.tolist(),
                "distortion_model": intr.distortion_model,
                "D": intr.D.tolist(),
                "T_cam_lidar": camera.T_cam_lidar.tolist(),
            }
        return {"lidar_frame": self.lidar_frame, "lidar": self.lidar.to_dict(), "cameras": cameras}

    @classmethod
    def load(cls, path: str | Path) -> Rig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise CalibrationError(f"{path}: not valid YAML: {error}") from None
        return cls.from_dict(data, source=str(path))

    def save(self, path: str | Path, comment: str = "") -> None:
        """Write the rig as YAML, `comment` first (one '# ' line per line of it)."""
        header = "".join(f"# {line}\n" for line in comment.splitlines())
        body = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        Path(path).write_text(header + body)


def _refuse_unknown_keys(data: dict, known: tuple[str, ...], prefix: str) -> None:
    """A key the format does not have is most likely a misspelt one whose value would be ignored; the
    error names its key path, `prefix` + key."""
    unknown = [key for key in data if key not in known]
    if unknown:
        raise CalibrationError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(known)})")
