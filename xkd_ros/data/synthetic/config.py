"""The generator's configuration: config/synthetic.yaml, optionally overlaid by a user file or a dict.

Every value is checked once here, so that a typo in a YAML file fails at start-up naming its key rather than
as a KeyError deep in a worker process.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from xkd_ros.classes import load_class_set
from xkd_ros.geometry import CameraCalibration, CameraIntrinsics, LidarProfile, Rig, invert_transform
from xkd_ros.paths import config_path

Range = tuple[float, float]
LIDAR_FRAME = "lidar"
CLASS_SET = "synthetic"


@dataclass(frozen=True)
class LidarConfig:
    """The simulated scanner; `profile()` is what a user of such a scanner would put in the rig file."""

    sensor: str
    beams: int
    elevation_deg: Range
    azimuth_steps: int
    rate_hz: float
    start_azimuth_deg: float
    clockwise: bool
    height_m: Range
    min_range_m: float
    max_range_m: float
    intensity_scale: float
    range_noise_m: float
    dropout: float
    weak_return: float
    deskew: bool
    reflectivity: dict[str, Range]
    incidence_floor: float
    intensity_noise: float
    intensity_gain: Range
    intensity_gamma: Range
    beam_dropout: float
    ring_order: str

    @property
    def mount_height(self) -> float:
        """Height above the road: the middle of `height_m` (its value once `SyntheticConfig.draw` drew it)."""
        return (self.height_m[0] + self.height_m[1]) / 2

    @property
    def sweep_s(self) -> float:
        return 1.0 / self.rate_hz

    def azimuth_at(self, seconds: np.ndarray | float) -> np.ndarray | float:
        """Beam azimuth (radians, counter-clockwise from x) at `seconds` since the sweep start."""
        turned = 2 * np.pi * np.asarray(seconds) / self.sweep_s
        return np.deg2rad(self.start_azimuth_deg) + (-turned if self.clockwise else turned)

    def time_at(self, azimuth_deg: float) -> float:
        """Seconds into the sweep at which the beam passes `azimuth_deg` (where a camera is triggered)."""
        turn = (
            (self.start_azimuth_deg - azimuth_deg)
            if self.clockwise
            else (azimuth_deg - self.start_azimuth_deg)
        )
        return (turn % 360.0) / 360.0 * self.sweep_s

    def profile(self) -> LidarProfile:
        """The LiDAR's sensor profile: `elevation_deg` are beam centres, the profile's field of view runs
        edge to edge (half a beam spacing beyond them), ring 0 is the lowest beam (bottom_up), intensity
        0..`intensity_scale`, no returns nearer than `min_range_m`; ring 0 is the lowest beam (`ring_order:
        bottom_up`, Velodyne) or the highest (`top_down`, Ouster)."""
        low, high = self.elevation_deg
        spacing = (high - low) / (self.beams - 1) if self.beams > 1 else 1.0
        return LidarProfile(
            beams=self.beams,
            fov_up_deg=high + spacing / 2,
            fov_down_deg=low - spacing / 2,
            ring_order=self.ring_order,
            intensity_scale=self.intensity_scale,
            min_range=self.min_range_m,
            sensor=self.sensor,
            mount_height=self.mount_height,
        )


@dataclass(frozen=True)
class CameraConfig:
    name: str
    yaw_deg: float
    position: tuple[float, float, float]
    width: int
    height: int
    hfov_deg: Range
    pitch_deg: float
    noise_std: float
    exposure: Range
    shadows: bool
    texture: str

    def calibration(self) -> CameraCalibration:
        """Pinhole intrinsics from the horizontal field of view (the middle of `hfov_deg`, what it is once
        drawn) and T_cam_lidar from yaw, pitch, position."""
        hfov = (self.hfov_deg[0] + self.hfov_deg[1]) / 2
        focal = self.width / 2 / np.tan(np.deg2rad(hfov) / 2)
        K = [[focal, 0, (self.width - 1) / 2], [0, focal, (self.height - 1) / 2], [0, 0, 1]]
        yaw, pitch = np.deg2rad(self.yaw_deg), np.deg2rad(self.pitch_deg)
        forward = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), -np.sin(pitch)])
        right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
        down = np.cross(forward, right)
        T_lidar_cam = np.eye(4)
        T_lidar_cam[:3, :3] = np.column_stack([right, down, forward])
        T_lidar_cam[:3, 3] = self.position
        intrinsics = CameraIntrinsics(width=self.width, height=self.height, K=K)
        return CameraCalibration(self.name, intrinsics, invert_transform(T_lidar_cam), self.name)


@dataclass(frozen=True)
class EgoConfig:
    speed_mps: Range
    weave_m: Range
    weave_period_s: Range


@dataclass(frozen=True)
class SequenceConfig:
    frames_per_scene: int
    frame_interval_s: float


@dataclass(frozen=True)
class SceneConfig:
    margin_m: float
    lanes_per_direction: tuple[int, int]
    lane_width_m: Range
    parking_lane: float
    parking_width_m: Range
    tree_lawn: float
    tree_lawn_width_m: Range
    sidewalk_width_m: Range
    curb_height_m: Range
    yard_depth_m: Range
    building_width_m: Range
    building_depth_m: Range
    building_height_m: Range
    building_gap: float
    fence: float
    spacing_m: dict[str, Range]
    vehicle_mix: dict[str, float]
    parked_mix: dict[str, float]
    crosswalks: tuple[int, int]
    sun_elevation_deg: Range


SPACING_KINDS = (
    "street_tree",
    "yard_tree",
    "bush",
    "street_lamp",
    "sign",
    "post",
    "pedestrian",
    "vehicle",
    "parked",
    "cyclist",
)
VEHICLE_KINDS = ("car", "truck", "bus")


@dataclass(frozen=True)
class SyntheticConfig:
    """The whole configuration; `as_dict()` is what split.yaml records and `load_config` reads back."""

    lidar: LidarConfig
    camera_defaults: dict
    cameras: tuple[CameraConfig, ...]
    ego: EgoConfig
    sequence: SequenceConfig
    scene: SceneConfig

    def rig(self) -> Rig:
        """The static mounting calibration of the cameras against the LiDAR, with the LiDAR's profile."""
        return Rig.from_cameras(
            [camera.calibration() for camera in self.cameras], LIDAR_FRAME, self.lidar.profile()
        )

    def draw(self, rng: np.random.Generator) -> SyntheticConfig:
        """This config with its domain randomisation drawn (one scene's sensors): LiDAR height, intensity gain
        and gamma, each camera's field of view, each from its range; a range of one value stays exactly it.
        The rig of the result (`rig()`) is the one that scene's frames carry."""

        def pick(bounds: Range) -> Range:
            value = float(rng.uniform(*bounds))
            return (value, value)

        lidar = dataclasses.replace(
            self.lidar,
            height_m=pick(self.lidar.height_m),
            intensity_gain=pick(self.lidar.intensity_gain),
            intensity_gamma=pick(self.lidar.intensity_gamma),
        )
        cameras = tuple(
            dataclasses.replace(camera, hfov_deg=pick(camera.hfov_deg)) for camera in self.cameras
        )
        return dataclasses.replace(self, lidar=lidar, cameras=cameras)

    def as_dict(self) -> dict:
        data = {
            "lidar": dataclasses.asdict(self.lidar),
            "camera": dict(self.camera_defaults),
            "cameras": [dataclasses.asdict(camera) for camera in self.cameras],
            "ego": dataclasses.asdict(self.ego),
            "sequence": dataclasses.asdict(self.sequence),
            "scene": dataclasses.asdict(self.scene),
        }
        return as_plain(data)


def as_plain(value: object) -> object:
    """Tuples to lists, recursively: what yaml.safe_dump writes without tags."""
    if isinstance(value, dict):
        return {key: as_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_plain(item) for item in value]
    return value


def merge(base: dict, overlay: dict) -> dict:
    """`overlay` over `base`, recursing into mappings; lists (the cameras) are replaced whole."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def convert(value: object, kind: object, key: str) -> object:
    """`value` as the annotated type `kind` (int, float, bool, str, fixed tuples, dicts), or ValueError."""
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if kind == Range and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value, value]  # one number is a range of one value: `height_m: 1.84`
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(arguments):
            raise ValueError(f"{key}: expected a list of {len(arguments)} values, got {value!r}")
        converted = tuple(
            convert(item, arg, f"{key}[{i}]")
            for i, (item, arg) in enumerate(zip(value, arguments, strict=True))
        )
        if kind in (Range, tuple[int, int]) and converted[0] > converted[1]:
            raise ValueError(f"{key}: range [{converted[0]}, {converted[1]}] is empty")
        return converted
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        return {str(name): convert(item, arguments[1], f"{key}.{name}") for name, item in value.items()}
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false, got {value!r}")
        return value
    if kind in (int, float):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (kind is int and value != int(value))
        ):
            raise ValueError(
                f"{key}: expected {'a whole number' if kind is int else 'a number'}, got {value!r}"
            )
        return kind(value)
    if kind is str:
        return str(value)
    raise TypeError(f"{key}: unsupported annotation {kind}")  # pragma: no cover - a programming error


def build(cls: type, data: object, key: str) -> object:
    """Dataclass `cls` from the mapping `data`; missing and unknown keys are errors naming `key`."""
    if not isinstance(data, dict):
        raise ValueError(f"{key}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    missing = [name for name in names if name not in data]
    if unknown or missing:
        raise ValueError(f"{key}: unknown keys {unknown}, missing keys {missing}")
    return cls(**{name: convert(data[name], hints[name], f"{key}.{name}") for name in names})


TEXTURE_MODES = ("world", "view")
RING_ORDERS = ("bottom_up", "top_down")


def check_lidar(lidar: LidarConfig) -> None:
    """The LiDAR's randomisation and intensity knobs are in range; ValueError naming the key."""
    classes = load_class_set(CLASS_SET).names
    for name, (low, high) in lidar.reflectivity.items():
        if name not in classes:
            raise ValueError(f"lidar.reflectivity.{name}: not a class of {CLASS_SET} ({list(classes)})")
        if not 0 < low <= high <= 1:
            raise ValueError(f"lidar.reflectivity.{name}: expected 0 < lo <= hi <= 1, got [{low}, {high}]")
    for key in ("incidence_floor", "beam_dropout"):
        if not 0 <= getattr(lidar, key) <= 1:
            raise ValueError(f"lidar.{key}: expected a share in [0, 1], got {getattr(lidar, key)}")
    if lidar.ring_order not in RING_ORDERS:
        raise ValueError(f"lidar.ring_order: expected one of {list(RING_ORDERS)}, got {lidar.ring_order!r}")
    if lidar.beam_dropout == 1:
        raise ValueError("lidar.beam_dropout: 1 would drop every beam")
    for key in ("intensity_noise",):
        if getattr(lidar, key) < 0:
            raise ValueError(f"lidar.{key}: must not be negative, got {getattr(lidar, key)}")
    for key in ("intensity_gain", "intensity_gamma", "height_m"):
        if getattr(lidar, key)[0] <= 0:
            raise ValueError(f"lidar.{key}: must be positive, got {list(getattr(lidar, key))}")


def from_dict(data: dict, source: str = "config") -> SyntheticConfig:
    """A checked config from a complete mapping (the defaults merged with any overlay)."""
    try:
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping, got {type(data).__name__}")
        defaults = data.get("camera", {})
        cameras = data.get("cameras")
        if not isinstance(cameras, list) or not cameras or not all(isinstance(c, dict) for c in cameras):
            raise ValueError("cameras: expected a non-empty list of mappings")
        built_cameras = tuple(
            build(CameraConfig, {**defaults, **camera}, f"cameras[{i}]") for i, camera in enumerate(cameras)
        )
        if len({camera.name for camera in built_cameras}) != len(built_cameras):
            raise ValueError("cameras: names must be unique")
        scene = build(SceneConfig, data.get("scene"), "scene")
        if set(scene.spacing_m) != set(SPACING_KINDS):
            raise ValueError(f"scene.spacing_m: expected the kinds {list(SPACING_KINDS)}")
        for mix in ("vehicle_mix", "parked_mix"):
            weights = getattr(scene, mix)
            if not set(weights) <= set(VEHICLE_KINDS) or sum(weights.values()) <= 0:
                raise ValueError(f"scene.{mix}: expected positive weights of {list(VEHICLE_KINDS)}")
        config = SyntheticConfig(
            lidar=build(LidarConfig, data.get("lidar"), "lidar"),
            camera_defaults=dict(defaults),
            cameras=built_cameras,
            ego=build(EgoConfig, data.get("ego"), "ego"),
            sequence=build(SequenceConfig, data.get("sequence"), "sequence"),
            scene=scene,
        )
        if config.sequence.frames_per_scene < 1 or config.lidar.beams < 1 or config.lidar.azimuth_steps < 1:
            raise ValueError("frames_per_scene, beams and azimuth_steps must be positive")
        check_lidar(config.lidar)
        for i, camera in enumerate(config.cameras):
            if camera.texture not in TEXTURE_MODES:
                raise ValueError(
                    f"cameras[{i}].texture: expected one of {list(TEXTURE_MODES)}, got {camera.texture!r}"
                )
            if not 0 < camera.hfov_deg[0] <= camera.hfov_deg[1] < 180:
                raise ValueError(
                    f"cameras[{i}].hfov_deg: expected degrees in (0, 180), got {list(camera.hfov_deg)}"
                )
        config.lidar.profile()  # a CalibrationError (a ValueError) naming lidar.<key> if it cannot be one
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    return config


def parse_overrides(items: Sequence[str]) -> dict:
    """`KEY=VALUE` strings (xkd-synth --set) as one nested overlay: dotted keys nest, values are YAML, so
    `lidar.azimuth_steps=540` and `lidar.height_m=[1.6, 1.9]` both work. Lists (the cameras) are replaced
    whole, as in a config file; `camera.width=240` sets the default every camera inherits."""
    overlay: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        names = key.strip().split(".")
        if not sep or not all(names):
            raise ValueError(
                f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. lidar.azimuth_steps=540"
            )
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"--set {item!r}: the value is not valid YAML: {error}") from None
        node = overlay
        for name in names[:-1]:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {name} was already given a value, not a mapping")
        node[names[-1]] = value
    return overlay


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> SyntheticConfig:
    """config/synthetic.yaml, overlaid by the YAML file `path` (partial files are fine) and `overrides`."""
    default_path = config_path("synthetic.yaml")
    data = yaml.safe_load(default_path.read_text())
    source = str(default_path)
    if path is not None and Path(path).resolve() != default_path.resolve():
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such config file")
        try:
            overlay = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML: {error}") from None
        if not isinstance(overlay, dict):
            raise ValueError(f"{path}: expected a mapping")
        data, source = merge(data, overlay), str(path)
    if overrides:
        data, source = merge(data, overrides), f"{source} with overrides"
    return from_dict(data, source)


__all__ = [
    "CameraConfig",
    "EgoConfig",
    "LidarConfig",
    "SceneConfig",
    "SequenceConfig",
    "SyntheticConfig",
    "from_dict",
    "load_config",
    "parse_overrides",
]
