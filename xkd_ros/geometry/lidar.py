"""The LiDAR's sensor profile: what the network must know of the scanner, kept with the rig, not the model.

One model serves a 32-beam nuScenes car and a 64-beam KITTI car because everything that differs between them
is stated here and applied by xkd_ros.preprocess:

- how the scan maps to range-image rows: `beams` rows, each beam's elevation given by a table
  (`elevations_deg`) or spread evenly over a field of view (`fov_up_deg` .. `fov_down_deg`), and which way a
  `ring` field counts (`ring_order`);
- the scale of its intensity (`intensity_scale`: the value of a full-strength return; ROS Velodyne drivers
  publish 0..255, KITTI's remission is 0..1), divided out so the network sees one scale;
- the radius of its ego returns (`min_range`: returns off the vehicle's own body, labelled IGNORE);
- its height above the ground (`mount_height`, the z of the LiDAR in a base frame on the ground, as
  Autoware's base_link): the network sees heights above the ground, so a road looks the same from a car's
  1.73 m and a van's 2.0 m (read as heights below the LiDAR, a road seen from 2.0 m lies where a 16 cm
  higher sidewalk lies seen from 1.84 m: docs/results.md measured the confusion).

Rig file section (config/<rig>.rig.yaml)::

    lidar:
      sensor: velodyne_hdl64e   # a preset from SENSOR_PRESETS; the keys below override it
      intensity_scale: 1.0      # KITTI's remission (the ROS driver would publish 0..255)
      min_range: 2.5
      mount_height: 1.73        # metres above the ground (0: unknown, heights stay relative to the LiDAR)

Without a `lidar` section a rig gets `LidarProfile()`: the nuScenes HDL-32E as the ROS driver publishes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from xkd_ros.geometry.camera import CalibrationError

__all__ = ["LIDAR_KEYS", "RING_ORDERS", "SENSOR_PRESETS", "LidarProfile", "intensity_mismatch"]

RING_ORDERS = ("bottom_up", "top_down")
LIDAR_KEYS = (
    "sensor",
    "beams",
    "fov_up_deg",
    "fov_down_deg",
    "elevations_deg",
    "ring_order",
    "intensity_scale",
    "min_range",
    "mount_height",
)
# The beam layouts of common scanners as their ROS drivers publish them. For evenly spread beams the field of
# view is given edge to edge (beam centres +- half a spacing), the convention of the range-image rows. The
# HDL-64E's beams are not even (two laser blocks): its measured table would go in elevations_deg; its
# RangeNet++ field of view is used here, which is what SemanticKITTI models are trained with. The OS1's field
# of view depends on its generation: the presets are the 45-degree OS1 (Rev C/D); the first-generation OS1-64
# (RELLIS-3D's) spans 33.2 degrees and overrides fov_up_deg/fov_down_deg (config/rellis3d.rig.yaml).
SENSOR_PRESETS: dict[str, dict[str, Any]] = {
    "velodyne_vlp16": {"beams": 16, "fov_up_deg": 16.0, "fov_down_deg": -16.0, "min_range": 0.5},
    "velodyne_vlp32c": {"beams": 32, "fov_up_deg": 15.6, "fov_down_deg": -25.6, "min_range": 0.5},
    "velodyne_hdl32e": {"beams": 32, "fov_up_deg": 11.33, "fov_down_deg": -31.33, "min_range": 1.0},
    "velodyne_hdl64e": {"beams": 64, "fov_up_deg": 3.0, "fov_down_deg": -25.0, "min_range": 2.5},
    "velodyne_vls128": {"beams": 128, "fov_up_deg": 15.1, "fov_down_deg": -25.1, "min_range": 1.0},
    "ouster_os1_64": {
        "beams": 64,
        "fov_up_deg": 22.85,
        "fov_down_deg": -22.85,
        "ring_order": "top_down",
        "min_range": 0.8,
    },
    "ouster_os1_128": {
        "beams": 128,
        "fov_up_deg": 22.68,
        "fov_down_deg": -22.68,
        "ring_order": "top_down",
        "min_range": 0.8,
    },
}


@dataclass(frozen=True)
class LidarProfile:
    """Beam layout, ring convention, intensity scale and ego-return radius of one LiDAR (module docstring).

    beams: range-image rows; with a `ring` field, rings must lie in [0, beams).
    fov_up_deg, fov_down_deg: top edge of row 0 and bottom edge of row beams-1, for rows by elevation
        (scans without a ring field) when no table is given.
    elevations_deg: per-beam elevation (any order, beams entries) or () for an even spread; rows by elevation
        then go to the nearest beam.
    ring_order: "bottom_up" when ring 0 is the lowest beam (Velodyne, Hesai), "top_down" when it is the
        highest (Ouster).
    intensity_scale: the intensity of a full-strength return (255 or 1.0, ...); the network sees
        intensity / intensity_scale.
    min_range: metres; nearer returns are the ego vehicle's own body and take no part (label IGNORE).
    mount_height: metres of the LiDAR above the ground (a vehicle's, not a sensor's: no preset has one);
        the network sees z + mount_height. 0: unknown (the node warns: heights stay relative to the LiDAR).
    sensor: the preset the profile came from ("" for none), for logs.
    """

    beams: int = 32
    fov_up_deg: float = 11.33
    fov_down_deg: float = -31.33
    elevations_deg: tuple[float, ...] = ()
    ring_order: str = "bottom_up"
    intensity_scale: float = 255.0
    min_range: float = 1.0
    sensor: str = "velodyne_hdl32e"
    mount_height: float = 1.84  # nuScenes' LIDAR_TOP

    def __post_init__(self) -> None:
        if not isinstance(self.beams, int | np.integer) or isinstance(self.beams, bool) or self.beams < 1:
            raise CalibrationError(f"lidar.beams: expected a whole number >= 1, got {self.beams!r}")
        object.__setattr__(self, "beams", int(self.beams))
        for name in ("fov_up_deg", "fov_down_deg", "intensity_scale", "min_range", "mount_height"):
            value = getattr(self, name)
            if (
                not isinstance(value, int | float | np.number)
                or isinstance(value, bool)
                or not np.isfinite(value)
            ):
                raise CalibrationError(f"lidar.{name}: expected a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not self.fov_up_deg > self.fov_down_deg:
            raise CalibrationError(
                f"lidar.fov_up_deg: must exceed fov_down_deg, got {self.fov_up_deg} <= {self.fov_down_deg}"
            )
        if not (self.fov_down_deg >= -90 and self.fov_up_deg <= 90):
            raise CalibrationError(
                f"lidar.fov_up_deg, fov_down_deg: must lie within -90..90, got "
                f"{self.fov_up_deg}..{self.fov_down_deg}"
            )
        if not self.intensity_scale > 0:
            raise CalibrationError(f"lidar.intensity_scale: must be positive, got {self.intensity_scale}")
        if not self.min_range >= 0:
            raise CalibrationError(f"lidar.min_range: must be >= 0, got {self.min_range}")
        if not 0 <= self.mount_height <= 10:
            raise CalibrationError(
                f"lidar.mount_height: metres above the ground in 0..10, got {self.mount_height}"
            )
        if self.ring_order not in RING_ORDERS:
            raise CalibrationError(
                f"lidar.ring_order: expected one of {RING_ORDERS}, got {self.ring_order!r}"
            )
        table = self.elevations_deg
        if isinstance(table, str) or not isinstance(table, list | tuple | np.ndarray):
            raise CalibrationError(f"lidar.elevations_deg: expected a list of degrees, got {table!r}")
        try:
            table = tuple(float(value) for value in table)
        except (TypeError, ValueError):
            raise CalibrationError(
                f"lidar.elevations_deg: expected numbers, got {self.elevations_deg!r}"
            ) from None
        if table and (len(table) != self.beams or not all(-90 <= value <= 90 for value in table)):
            raise CalibrationError(
                f"lidar.elevations_deg: expected {self.beams} elevations (one per beam) within -90..90, "
                f"got {len(table)}"
            )
        if len(set(table)) != len(table):
            raise CalibrationError("lidar.elevations_deg: two beams share an elevation")
        object.__setattr__(self, "elevations_deg", table)

    def beam_elevations_deg(self) -> np.ndarray:
        """Elevation of each range-image row's beam, top row first (float64, `beams` values)."""
        if self.elevations_deg:
            return np.sort(np.array(self.elevations_deg))[::-1].copy()
        spacing = (self.fov_up_deg - self.fov_down_deg) / self.beams
        return self.fov_up_deg - spacing * (np.arange(self.beams) + 0.5)

    @classmethod
    def from_dict(cls, data: object, source: str = "lidar") -> LidarProfile:
        """From a rig file's `lidar` section: a `sensor` preset, if named, then the keys given. Unknown keys
        and sensors are CalibrationErrors naming them (`source` prefixes the key path)."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise CalibrationError(f"{source}: expected a mapping, got {type(data).__name__}")
        unknown = [key for key in data if key not in LIDAR_KEYS]
        if unknown:
            raise CalibrationError(f"{source}.{unknown[0]}: unknown key (known: {', '.join(LIDAR_KEYS)})")
        values: dict[str, Any] = {}
        sensor = data.get("sensor", "")
        if sensor:
            if sensor not in SENSOR_PRESETS:
                raise CalibrationError(
                    f"{source}.sensor: unknown sensor {sensor!r} (known: {', '.join(SENSOR_PRESETS)}); "
                    "or leave it out and give beams and the field of view"
                )
            values.update(SENSOR_PRESETS[sensor])
        elif not (
            "beams" in data and ("elevations_deg" in data or {"fov_up_deg", "fov_down_deg"} <= set(data))
        ):
            raise CalibrationError(
                f"{source}: name a sensor ({', '.join(SENSOR_PRESETS)}) or give beams and either "
                "elevations_deg or fov_up_deg and fov_down_deg"
            )
        values.update(data)
        values["sensor"] = str(sensor or "")
        if "intensity_scale" not in values:
            values["intensity_scale"] = 255.0
        if "min_range" not in values:
            values["min_range"] = 0.0
        if "mount_height" not in values:
            values["mount_height"] = 0.0
        if values.get("elevations_deg") and "fov_up_deg" not in data and "fov_down_deg" not in data:
            # a table alone: the field of view, used by nothing but logs and the table's check, spans it
            try:
                elevations = [float(value) for value in values["elevations_deg"]]
            except (TypeError, ValueError):
                elevations = []  # not a list of numbers: the profile's own check below names it
            if elevations:
                values["fov_up_deg"] = max(elevations) + 0.5
                values["fov_down_deg"] = min(elevations) - 0.5
        try:
            return cls(**values)
        except CalibrationError as error:
            raise CalibrationError(f"{source}{str(error).removeprefix('lidar')}") from None

    def to_dict(self) -> dict[str, Any]:
        """Every field, plain YAML values; `from_dict(to_dict())` gives the same profile back."""
        values = dataclasses.asdict(self)
        values["elevations_deg"] = list(self.elevations_deg)
        return values

    def describe(self) -> str:
        """One line for logs: "velodyne_hdl64e, 64 beams, 3.0..-25.0 deg, intensity 0..1, min range 2.5 m"."""
        layout = (
            "elevation table" if self.elevations_deg else f"{self.fov_up_deg:g}..{self.fov_down_deg:g} deg"
        )
        name = f"{self.sensor}, " if self.sensor else ""
        return (
            f"{name}{self.beams} beams, {layout}, ring {self.ring_order}, "
            f"intensity 0..{self.intensity_scale:g}, min range {self.min_range:g} m, "
            + (f"{self.mount_height:g} m above the ground" if self.mount_height else "mount height unknown")
        )


def intensity_mismatch(intensity: np.ndarray, profile: LidarProfile) -> str:
    """A warning when observed intensities contradict `profile.intensity_scale`, else "".

    A 0..1 scanner (KITTI remission) set up as 0..255 feeds the network intensities 255 times too small, and
    the other way round; both look like valid numbers, so the only evidence is the range of the values. Too
    large a scale shows in the peak (a 0..1 scanner never reaches 1/50 of 255); too small a one in the 99th
    percentile, so that a few glitched or saturated returns above a 0..1 scale do not decide.
    """
    values = np.asarray(intensity, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 100 or not values.any():
        return ""  # too few points, or a scanner that reports no intensity: nothing to judge by
    high = float(np.percentile(values, 99))
    peak = float(values.max())
    scale = profile.intensity_scale
    if high > 1.5 * scale:
        return (
            f"intensity reaches {peak:g} (99th percentile {high:g}), above lidar.intensity_scale {scale:g}: "
            "is the scanner's scale larger (0..255 for ROS Velodyne drivers)?"
        )
    if peak <= scale / 50:
        return (
            f"intensity stays below {peak:g}, 1/{scale / max(peak, 1e-12):.0f} of lidar.intensity_scale "
            f"{scale:g}: is the scanner's scale smaller (0..1 for KITTI remission)?"
        )
    return ""
