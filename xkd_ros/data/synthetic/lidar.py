"""A spinning multi-beam LiDAR on the moving ego vehicle, simulated by casting every firing into the scene.

Each column of beams fires at its own instant of the sweep, from where the car is at that instant, so the
scan of a moving car is not a snapshot: the sweep's end does not meet its start (a seam of speed / rate,
0.5 m at 10 m/s and 20 Hz), and every surface is seen from a slightly different place. With `deskew` the
points are then expressed in the LiDAR frame at the sweep start (the frame stamp), as nuScenes publishes
them; without, each point stays in the sensor frame of its own firing, as a driver emits it raw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xkd_ros.data.frame import INTENSITY, RING, TIME
from xkd_ros.data.synthetic.config import LidarConfig
from xkd_ros.data.synthetic.scene import Scene

CHANNELS = ("x", "y", "z", INTENSITY, RING, TIME)
REFERENCE_RANGE_M = 20.0  # range at which `weak_return` is the reflectivity * cos(incidence) threshold


def middle(bounds: tuple[float, float]) -> float:
    """A range's middle: its value once `SyntheticConfig.draw` has drawn it (lo == hi)."""
    return (bounds[0] + bounds[1]) / 2


def beam_elevations(config: LidarConfig) -> np.ndarray:
    """Elevation (radians) of each beam, lowest first (ring 0 with `ring_order: bottom_up`, as Velodyne)."""
    return np.deg2rad(np.linspace(*config.elevation_deg, config.beams))


def firing_times(config: LidarConfig) -> np.ndarray:
    """Seconds since the sweep start at which each column of beams fires."""
    return np.arange(config.azimuth_steps) * (config.sweep_s / config.azimuth_steps)


@dataclass(frozen=True, eq=False)
class Sweep:
    """One sweep's points (N, 6) float32 with CHANNELS and labels (N,) uint8, and what only the simulator
    knows: `surface` (N, 3) float64, where each beam really hit, in world coordinates (the point without its
    range noise), from which the true visibility of each point from a camera is found."""

    points: np.ndarray
    labels: np.ndarray
    surface: np.ndarray


def scan(
    scene: Scene,
    config: LidarConfig,
    stamp: float,
    rng: np.random.Generator,
    dead_beams: np.ndarray | None = None,
) -> Sweep:
    """One sweep starting at `stamp` (seconds of the drive).

    Returns are lost beyond max range, below min range (the car's own body), at random (`dropout`), where
    too little light comes back (dark or grazing surfaces far away) and on the beams `dead_beams` (bool per
    ring) marks. Range noise is along the beam. Intensity (0..intensity_scale) follows the material's
    reflectivity and the angle of incidence (`incidence_floor`), with log-normal noise (`intensity_noise`),
    times `intensity_gain` and raised to `intensity_gamma` (the config's drawn values: the range's middle).
    """
    times = firing_times(config)
    azimuth = config.azimuth_at(times)[:, None]
    elevation = beam_elevations(config)[None, :]
    local = np.stack(
        np.broadcast_arrays(
            np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)
        ),
        axis=-1,
    )  # (columns, beams, 3) in the sensor frame
    poses = scene.trajectory.poses(stamp + times)
    directions = np.einsum("cij,cbj->cbi", poses[:, :3, :3], local).reshape(-1, 3)
    origins = np.repeat(poses[:, :3, 3], config.beams, axis=0)
    face, distance = scene.cast(origins, directions)

    n = len(directions)
    lost, range_noise, intensity_noise = rng.random(n), rng.normal(0.0, 1.0, n), rng.normal(0.0, 1.0, n)
    hit = np.isfinite(distance)
    material = scene.face_material[np.where(hit, face, 0)]
    reflectivity = scene.materials.reflectivity[material]
    normals = scene.face_normals[np.where(hit, face, 0)]
    cos_incidence = np.abs(np.einsum("ij,ij->i", directions, normals))
    with np.errstate(divide="ignore", invalid="ignore"):
        signal = reflectivity * cos_incidence * (REFERENCE_RANGE_M / distance) ** 2
    keep = (
        hit
        & (distance >= config.min_range_m)
        & (distance <= config.max_range_m)
        & (signal >= config.weak_return)
        & (lost >= config.dropout)
    )
    if dead_beams is not None and dead_beams.any():
        keep &= ~np.tile(dead_beams, config.azimuth_steps)
    index = np.flatnonzero(keep)
    measured = distance[index] + config.range_noise_m * range_noise[index]
    if config.deskew:
        world = origins[index] + measured[:, None] * directions[index]
        rotation, translation = poses[0, :3, :3], poses[0, :3, 3]
        xyz = (world - translation) @ rotation
    else:
        xyz = measured[:, None] * local.reshape(-1, 3)[index]
    floor, gain, gamma = config.incidence_floor, middle(config.intensity_gain), middle(config.intensity_gamma)
    strength = np.clip(
        gain
        * reflectivity[index]
        * (floor + (1 - floor) * cos_incidence[index])
        * np.exp(config.intensity_noise * intensity_noise[index]),
        0,
        1,
    )
    intensity = config.intensity_scale * (strength if gamma == 1 else strength**gamma)
    column, ring = np.divmod(index, config.beams)  # ring: the beam, lowest first
    if config.ring_order == "top_down":
        ring = config.beams - 1 - ring
    points = np.column_stack([xyz, intensity, ring, times[column]]).astype(np.float32)
    surface = origins[index] + distance[index, None] * directions[index]
    return Sweep(points, scene.face_class[face[index]], surface)
