"""`xkd-rig`: a rig file (config/<rig>.rig.yaml) from the calibration files people have, and a summary of one.

    xkd-rig kitti calib.txt --image image_2/000000.png -o kitti.rig.yaml      (--camera P2 --camera P3 ...)
    xkd-rig ros ost.yaml --extrinsic T_cam_lidar.txt --sensor ouster_os1_64 -o my.rig.yaml
    xkd-rig opencalib cam-intrinsic.json lidar-to-cam-extrinsic.json --sensor velodyne_vlp32c -o my.rig.yaml
    xkd-rig show my.rig.yaml

Sources:
- kitti: a KITTI calib file of either layout (odometry calib.txt with Tr, or the object layout's
  calib/<frame>.txt with R0_rect and Tr_velo_to_cam, folded in as the readers do); one camera per --camera
  (P0..P3, named image_0..image_3); the image size from --image or --size. The LiDAR defaults to KITTI's
  (velodyne_hdl64e, remission 0..1, 1.73 m above the ground: xkd_ros.data.semantickitti.KITTI_LIDAR).
- ros: a camera_calibration (ROS cameracalibrator) YAML, ost.yaml: image_width, image_height, camera_name,
  camera_matrix, distortion_model, distortion_coefficients; plus --extrinsic, the 4x4 LiDAR-to-camera
  transform (T_cam_lidar; --invert when the file holds the camera's pose in the LiDAR frame).
- opencalib: PJLab SensorsCalibration (OpenCalib) lidar2camera JSON: <camera>-intrinsic.json (param:
  img_dist_w, img_dist_h, cam_K, cam_dist as OpenCV reads it) and <lidar>-to-<camera>-extrinsic.json
  (param.sensor_calib, 4x4 LiDAR to camera).

The LiDAR section comes from --sensor (a preset of xkd_ros.geometry.lidar), --intensity-scale,
--min-range and --mount-height (metres above the ground); ros and opencalib need --sensor (a rig's beams
and intensity scale are not in a camera calibration), unless --append adds the camera to an existing rig
file and keeps its LiDAR. Errors name the file and the key, and exit with status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from xkd_ros.data.semantickitti import KITTI_LIDAR
from xkd_ros.geometry import SENSOR_PRESETS, CalibrationError, CameraCalibration, CameraIntrinsics, Rig
from xkd_ros.geometry.camera import as_matrix
from xkd_ros.geometry.lidar import LidarProfile
from xkd_ros.geometry.transforms import invert_transform


def _load(path: Path) -> Any:
    """A YAML or JSON file's content (YAML reads JSON too); errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise CalibrationError(f"{path}: not valid YAML or JSON: {' '.join(str(error).split())}") from None


def _get(data: object, keys: str, path: Path) -> Any:
    """data[k1][k2]... for keys "k1.k2...", or CalibrationError naming the file and the key path."""
    value = data
    walked = []
    for key in keys.split("."):
        walked.append(key)
        if not isinstance(value, Mapping) or key not in value:
            raise CalibrationError(f"{path}: {'.'.join(walked)}: missing")
        value = value[key]
    return value


def _matrix(value: object, shape: tuple[int, ...], key: str, path: Path) -> np.ndarray:
    """An OpenCV-style matrix ({rows, cols, data}) or a plain (nested) list as a float64 array of `shape`."""
    if isinstance(value, Mapping):
        if "data" not in value:
            raise CalibrationError(f"{path}: {key}.data: missing")
        value, key = value["data"], f"{key}.data"
    try:
        return as_matrix(value, shape, f"{path}: {key}")
    except CalibrationError as error:
        raise CalibrationError(" ".join(str(error).split())) from None


def _size(value: object, key: str, path: Path) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise CalibrationError(f"{path}: {key}: expected a whole number of pixels, got {value!r}")
    return value


def _intrinsics(
    width: int, height: int, K: np.ndarray, D: object, model: str, path: Path
) -> CameraIntrinsics:
    try:
        return CameraIntrinsics(width=width, height=height, K=K, D=D, distortion_model=model)
    except CalibrationError as error:
        raise CalibrationError(f"{path}: {error}") from None


def kitti_cameras(calib_file: Path, projections: list[str], size: tuple[int, int]) -> list[CameraCalibration]:
    """The rectified cameras of a KITTI calib file, named image_<n> for P<n>, as the readers build them."""
    from xkd_ros.data.semantickitti import camera_from_projection, lidar_to_rectified, read_kitti_calib

    calib = read_kitti_calib(calib_file)
    T_rect_velo = lidar_to_rectified(calib, calib_file)
    cameras = []
    for projection in projections:
        if projection not in calib:
            known = ", ".join(key for key in calib if key.startswith("P"))
            raise CalibrationError(f"{calib_file}: {projection}: missing (the file has {known or 'no P'})")
        K, T_cam_velo = camera_from_projection(calib[projection], T_rect_velo)
        name = "image_" + projection.removeprefix("P")
        cameras.append(
            _camera(name, _intrinsics(*size, K, [], "plumb_bob", calib_file), T_cam_velo, calib_file)
        )
    return cameras


def ros_camera(ost_file: Path, extrinsic_file: Path, invert: bool, name: str | None) -> CameraCalibration:
    """A camera from a camera_calibration YAML (ost.yaml) and a 4x4 extrinsic file."""
    data = _load(ost_file)
    width = _size(_get(data, "image_width", ost_file), "image_width", ost_file)
    height = _size(_get(data, "image_height", ost_file), "image_height", ost_file)
    K = _matrix(_get(data, "camera_matrix", ost_file), (3, 3), "camera_matrix", ost_file)
    model = _get(data, "distortion_model", ost_file)
    coefficients = _get(data, "distortion_coefficients", ost_file)
    D = coefficients.get("data") if isinstance(coefficients, Mapping) else coefficients
    if not isinstance(D, list):
        raise CalibrationError(f"{ost_file}: distortion_coefficients.data: expected a list of numbers")
    D = _matrix(D, (len(D),), "distortion_coefficients", ost_file) if D else []
    intrinsics = _intrinsics(width, height, K, D, str(model), ost_file)
    name = name or str(data.get("camera_name") or ost_file.stem)
    return _camera(name, intrinsics, read_extrinsic(extrinsic_file, invert), extrinsic_file)


def read_extrinsic(path: Path, invert: bool = False) -> np.ndarray:
    """T_cam_lidar from a file: 16 (or 12, a 3x4) numbers as text, or YAML/JSON holding a 4x4 list, an
    OpenCV-style matrix {rows, cols, data} or a mapping of one key to either. `invert`: the file holds
    T_lidar_cam (the camera's pose in the LiDAR frame)."""
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        value, key = _load(path), "extrinsic"
        while isinstance(value, Mapping) and "data" not in value and len(value) == 1:
            key, value = next(iter(value.items()))
        if isinstance(value, Mapping) and "data" not in value:
            raise CalibrationError(
                f"{path}: expected a 4x4 list, {{rows, cols, data}} or one key holding either, got keys "
                f"{list(value)}"
            )
    else:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing")
        value, key = path.read_text().split(), "extrinsic"
    flat = value.get("data") if isinstance(value, Mapping) else value
    count = np.size(np.asarray(flat, dtype=object)) if isinstance(flat, list) else 0
    T = _matrix(value, (3, 4) if count == 12 else (4, 4), key, path)
    T = np.vstack([T, [0.0, 0.0, 0.0, 1.0]]) if T.shape == (3, 4) else T
    if not np.allclose(T[3], [0, 0, 0, 1]):
        raise CalibrationError(f"{path}: {key}: last row must be 0 0 0 1, got {T[3].tolist()}")
    return invert_transform(T) if invert else T


def opencalib_camera(
    intrinsic_file: Path, extrinsic_file: Path, name: str | None
) -> tuple[CameraCalibration, str]:
    """A camera from OpenCalib's lidar2camera JSON pair, and the LiDAR's sensor name (its frame)."""
    intrinsic = _single_entry(_load(intrinsic_file), intrinsic_file)
    width = _size(_get(intrinsic, "param.img_dist_w", intrinsic_file), "param.img_dist_w", intrinsic_file)
    height = _size(_get(intrinsic, "param.img_dist_h", intrinsic_file), "param.img_dist_h", intrinsic_file)
    K = _matrix(_get(intrinsic, "param.cam_K", intrinsic_file), (3, 3), "param.cam_K", intrinsic_file)
    dist = _get(intrinsic, "param.cam_dist", intrinsic_file)
    columns = dist.get("cols") if isinstance(dist, Mapping) else None
    if not isinstance(columns, int) or columns < 0:
        raise CalibrationError(f"{intrinsic_file}: param.cam_dist.cols: expected the coefficient count")
    D = _matrix(dist, (1, columns), "param.cam_dist", intrinsic_file).ravel()  # OpenCalib: 1 x cols
    camera_name = str(intrinsic.get("target_sensor_name") or intrinsic.get("sensor_name") or "camera")
    extrinsic = _single_entry(_load(extrinsic_file), extrinsic_file)
    T = _matrix(
        _get(extrinsic, "param.sensor_calib", extrinsic_file), (4, 4), "param.sensor_calib", extrinsic_file
    )
    target = extrinsic.get("target_sensor_name")
    if target is not None and str(target) != camera_name:
        raise CalibrationError(
            f"{extrinsic_file}: target_sensor_name: {target!r}, "
            f"but {intrinsic_file} is for camera {camera_name!r}"
        )
    intrinsics = _intrinsics(width, height, K, D, "plumb_bob", intrinsic_file)
    lidar = str(extrinsic.get("sensor_name") or "lidar")
    return _camera(name or camera_name, intrinsics, T, extrinsic_file), lidar


def _camera(
    name: str, intrinsics: CameraIntrinsics, T_cam_lidar: np.ndarray, path: Path
) -> CameraCalibration:
    """The camera, or CalibrationError naming the file its extrinsic came from (a non-rigid T)."""
    try:
        return CameraCalibration(name, intrinsics, T_cam_lidar)
    except CalibrationError as error:
        raise CalibrationError(f"{path}: {error}") from None


def _single_entry(data: object, path: Path) -> Mapping:
    """OpenCalib files hold one entry keyed by its name ({"center_camera-intrinsic": {...}})."""
    if not isinstance(data, Mapping) or len(data) != 1 or not isinstance(next(iter(data.values())), Mapping):
        raise CalibrationError(f"{path}: expected one entry {{'<sensor>-intrinsic' or -extrinsic: {{...}}}}")
    return next(iter(data.values()))


def lidar_profile(args: argparse.Namespace, base: LidarProfile | dict | None) -> LidarProfile:
    """The LiDAR section: --sensor (a preset) or `base` (a profile kept, or a reader's defaults), then
    --intensity-scale, --min-range and --mount-height over it."""
    given = (
        ("intensity_scale", args.intensity_scale),
        ("min_range", args.min_range),
        ("mount_height", args.mount_height),
    )
    overrides = {key: value for key, value in given if value is not None}
    if args.sensor:
        return LidarProfile.from_dict({"sensor": args.sensor, **overrides})
    if isinstance(base, LidarProfile):
        return dataclasses.replace(base, **overrides)
    if base is None:
        raise CalibrationError(
            f"--sensor: name the LiDAR ({', '.join(SENSOR_PRESETS)}): a camera calibration says nothing "
            "of its beams or intensity scale"
        )
    return LidarProfile.from_dict({**base, **overrides})


def build(args: argparse.Namespace) -> Rig:
    """The rig a writing subcommand describes (with --append: the existing one plus its cameras)."""
    existing = Rig.load(args.output) if args.append else None
    if args.source == "kitti":
        size = image_size(args)
        cameras, frame, base = kitti_cameras(args.calib, args.camera or ["P2"], size), "velodyne", KITTI_LIDAR
    elif args.source == "ros":
        cameras, frame, base = [ros_camera(args.ost, args.extrinsic, args.invert, args.name)], "lidar", None
    else:
        camera, frame = opencalib_camera(args.intrinsic, args.extrinsic, args.name)
        cameras, base = [camera], None
    frame = args.lidar_frame or frame
    if existing is not None:
        if args.lidar_frame and args.lidar_frame != existing.lidar_frame:
            raise CalibrationError(
                f"--lidar-frame: {args.lidar_frame!r}, "
                f"but {args.output} has lidar_frame {existing.lidar_frame!r}"
            )
        taken = [camera.name for camera in cameras if camera.name in existing.cameras]
        if taken:
            raise CalibrationError(f"{args.output}: cameras.{taken[0]}: already in the rig (--name another)")
        frame, base = existing.lidar_frame, existing.lidar
        cameras = [*existing, *cameras]
    return Rig.from_cameras(cameras, frame, lidar_profile(args, base))


def image_size(args: argparse.Namespace) -> tuple[int, int]:
    """(width, height) from --size WxH or the header of --image."""
    if args.size:
        width, _, height = args.size.lower().partition("x")
        if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
            raise CalibrationError(f"--size: expected WIDTHxHEIGHT in pixels (1242x375), got {args.size!r}")
        return int(width), int(height)
    if args.image is None:
        raise CalibrationError("--image or --size: a KITTI calib file does not hold the image size")
    image = cv2.imread(str(args.image), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise CalibrationError(f"{args.image}: missing or not an image")
    return image.shape[1], image.shape[0]


def describe(rig: Rig, source: str = "") -> str:
    """A few lines on a rig: its LiDAR, then each camera in order: size, lens, where it sits."""
    lines = [f"{source}{': ' if source else ''}LiDAR frame {rig.lidar_frame}: {rig.lidar.describe()}"]
    if not len(rig):
        lines.append("no cameras: a LiDAR-only rig")
    else:
        lines.append(f"{len(rig)} camera(s), in the order the network takes their images:")
    for camera in rig:
        intrinsics = camera.intrinsics
        lens = (
            "pinhole (no distortion)"
            if intrinsics.is_pinhole
            else f"{intrinsics.distortion_model}, {len(intrinsics.D)} coefficients"
        )
        T_lidar_cam = invert_transform(camera.T_cam_lidar)
        position = ", ".join(f"{value:+.2f}" for value in T_lidar_cam[:3, 3])
        axis = T_lidar_cam[:3, 2]  # the optical axis in LiDAR coordinates
        azimuth = np.degrees(np.arctan2(axis[1], axis[0]))
        elevation = np.degrees(np.arcsin(np.clip(axis[2], -1, 1)))
        lines.append(
            f"  {camera.name}: {intrinsics.width}x{intrinsics.height}, fx {intrinsics.K[0, 0]:.1f}, {lens}; "
            f"at ({position}) m, looking {azimuth:+.0f} deg azimuth, {elevation:+.0f} deg elevation"
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(
        prog="xkd-rig",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parse.add_subparsers(dest="source", required=True)
    kitti = commands.add_parser("kitti", help="from a KITTI calib file (odometry or object layout)")
    kitti.add_argument("calib", type=Path)
    kitti.add_argument(
        "--camera", action="append", choices=["P0", "P1", "P2", "P3"], help="default P2; repeat"
    )
    kitti.add_argument("--image", type=Path, help="an image of the camera, for its size")
    kitti.add_argument("--size", help="WIDTHxHEIGHT, instead of --image")
    ros = commands.add_parser(
        "ros", aliases=["camera_calibration"], help="from a camera_calibration ost.yaml"
    )
    ros.add_argument("ost", type=Path)
    ros.add_argument("--extrinsic", type=Path, required=True, help="4x4 T_cam_lidar (text, YAML or JSON)")
    ros.add_argument("--invert", action="store_true", help="the extrinsic is T_lidar_cam: invert it")
    opencalib = commands.add_parser("opencalib", help="from OpenCalib (SensorsCalibration) lidar2camera JSON")
    opencalib.add_argument("intrinsic", type=Path)
    opencalib.add_argument("extrinsic", type=Path)
    for command in (ros, opencalib):
        command.add_argument("--name", help="the camera's name in the rig (default: the file's)")
    for command in (kitti, ros, opencalib):
        command.add_argument("-o", "--output", type=Path, required=True, help="the rig file to write")
        command.add_argument("--append", action="store_true", help="add to the rig file at --output")
        command.add_argument("--sensor", choices=list(SENSOR_PRESETS), help="the LiDAR's preset")
        command.add_argument("--intensity-scale", type=float, help="a full-strength return (255, 1.0)")
        command.add_argument("--min-range", type=float, help="metres; nearer returns are the ego vehicle")
        command.add_argument("--mount-height", type=float, help="metres of the LiDAR above the ground")
        command.add_argument("--lidar-frame", help="frame_id of the PointCloud2")
    show = commands.add_parser("show", help="summarise a rig file")
    show.add_argument("rig", type=Path)
    return parse


def main(argv: list[str] | None = None) -> int:
    """xkd-rig: write a rig file from a calibration, or summarise one; 1 and a one-line error on failure."""
    args = parser().parse_args(argv)
    try:
        if args.source == "show":
            print(describe(Rig.load(args.rig), str(args.rig)))
            return 0
        rig = build(args)
        sources = " ".join(
            str(value)
            for value in vars(args).values()
            if isinstance(value, Path) and value is not args.output
        )
        rig.save(args.output, comment=f"Written by xkd-rig {args.source} from {sources}")
    except (CalibrationError, ValueError, OSError) as error:
        print(f"xkd-rig: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {describe(rig, str(args.output))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
