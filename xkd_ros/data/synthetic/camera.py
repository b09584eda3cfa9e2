"""Cameras rendered by casting one ray per pixel into the scene, with procedural textures and sunlight.

Colour is computed from the world coordinates of each hit, so a surface looks the same from every camera
and frame: asphalt grain, lane paint, paving tiles, grass, facades with window grids, fence slats, foliage,
sign faces, vehicle paint, windows and lamps (with `texture: view` the noise is drawn afresh per camera and
frame instead). Lighting is a sun (Lambert, with cast shadows from one shadow
ray per lit pixel, and a highlight on glossy paint and glass) plus sky light; then haze, a sky gradient,
per-frame exposure, vignetting and sensor noise. The per-pixel class id comes out alongside (255 for sky).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from xkd_ros.classes import IGNORE_INDEX
from xkd_ros.data.synthetic.config import CameraConfig
from xkd_ros.data.synthetic.noise import hash01, value_noise
from xkd_ros.data.synthetic.scene import Scene, Texture
from xkd_ros.geometry import CameraCalibration, invert_transform

SUN_COLOUR = np.array([1.0, 0.96, 0.88], dtype=np.float32) * 0.78
SKY_LIGHT = np.array([0.93, 0.98, 1.08], dtype=np.float32) * 0.42
HORIZON = np.array([0.80, 0.86, 0.92], dtype=np.float32)
ZENITH = np.array([0.30, 0.50, 0.85], dtype=np.float32)
HAZE_DISTANCE_M = 450.0
SHADOW_OFFSET_M = 0.03  # start shadow rays off the surface so that they do not hit it again
SURFACE_TOLERANCE_M = 0.03  # a line of sight that ends this short of its point still reaches the point
GLASS_TINT = np.array([0.07, 0.09, 0.11], dtype=np.float32)


@dataclass(frozen=True)
class Hits:
    """What the camera rays hit, one row per ray that hit something."""

    point: np.ndarray  # (n, 3) float32 world
    normal: np.ndarray  # (n, 3) float32, turned towards the camera
    direction: np.ndarray  # (n, 3) float32 ray direction
    color: np.ndarray  # (n, 3) material colours
    color2: np.ndarray
    params: np.ndarray  # (n, PARAMS)

    def take(self, index: np.ndarray) -> Hits:
        return Hits(*(field[index] for field in vars(self).values()))


@cache
def pixel_rays(width: int, height: int, K_bytes: bytes) -> np.ndarray:
    """Unit ray (H*W, 3) through each pixel centre, optical frame; pixel (0, 0) is the top-left centre."""
    K = np.frombuffer(K_bytes).reshape(3, 3)
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1).reshape(
        -1, 3
    )
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def tangent_u(hits: Hits) -> np.ndarray:
    """Horizontal coordinate along a vertical surface: where a window or slat is across a facade."""
    tangent = np.stack([-hits.normal[:, 1], hits.normal[:, 0]], axis=1)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-6)
    return np.einsum("ij,ij->i", hits.point[:, :2], tangent)


def shade(values: np.ndarray) -> np.ndarray:
    """(n,) -> (n, 1) for scaling colours."""
    return values[:, None]


def asphalt(hits: Hits, seed: int) -> np.ndarray:
    xy = hits.point[:, :2]
    grain = value_noise(xy * 7.0, seed)
    wear = value_noise(xy * 0.15, seed + 1) - 0.5
    patch = value_noise(xy * 0.4, seed + 2) > 0.8  # darker repairs
    return hits.color * shade((0.85 + 0.25 * grain + 0.25 * wear) * np.where(patch, 0.78, 1.0))


def paint(hits: Hits, seed: int) -> np.ndarray:
    xy = hits.point[:, :2]
    worn = shade(np.clip((value_noise(xy * 2.0, seed + 3) - 0.65) * 3, 0, 0.6))
    return hits.color * shade(0.9 + 0.12 * value_noise(xy * 6.0, seed + 4)) * (1 - worn) + 0.3 * worn


def paving(hits: Hits, seed: int) -> np.ndarray:
    """Tiles in running bond: joints in the second colour, each tile a little lighter or darker."""
    size, joint = hits.params[:, 0:1], hits.params[:, 1:2]
    tile = np.concatenate([size, size / 2], axis=1)
    scaled = hits.point[:, :2] / tile
    row = np.floor(scaled[:, 1])
    scaled[:, 0] += 0.5 * (row % 2)
    cell = np.floor(scaled)
    frac = (scaled - cell) * tile
    in_joint = np.any((frac < joint) | (frac > tile - joint), axis=1)
    brightness = 0.88 + 0.24 * hash01(cell, seed + 5)
    grain = 0.93 + 0.1 * value_noise(hits.point[:, :2] * 9.0, seed + 6)
    return np.where(shade(in_joint), hits.color2, hits.color * shade(brightness * grain))


def grass(hits: Hits, seed: int) -> np.ndarray:
    xy = hits.point[:, :2]
    tufts = 0.7 + 0.35 * value_noise(xy * 3.0, seed + 7) + 0.25 * value_noise(xy * 14.0, seed + 8)
    dry = shade(np.clip((value_noise(xy * 0.25, seed + 9) - 0.55) * 4, 0, 1))
    return (hits.color * (1 - dry) + hits.color2 * dry) * shade(tufts)


def facade(hits: Hits, seed: int) -> np.ndarray:
    """Walls with a grid of windows (shop windows on the ground floor), ledges between floors, grey roofs."""
    floor, spacing, width_share, height_share, shop, building = hits.params.T
    u, z = tangent_u(hits), hits.point[:, 2]
    column, row = np.floor(u / spacing), np.floor(z / floor)
    fu, fz = u / spacing - column, z / floor - row
    upper = (np.abs(fu - 0.5) < width_share / 2) & (np.abs(fz - 0.55) < height_share / 2) & (row >= 1)
    ground = (row == 0) & np.where(shop > 0, (np.abs(fu - 0.5) < 0.44) & (fz > 0.12) & (fz < 0.85), upper)
    window = (upper | ground) & (z > 0.3)
    lit = hash01(np.stack([column, row, building], axis=1), seed + 10)
    glass = hits.color2 * shade(0.6 + 0.8 * lit)
    wall = hits.color * shade(0.88 + 0.16 * value_noise(np.stack([u, z], axis=1) * 1.5, seed + 11))
    wall = np.where(shade((fz < 0.035) & (row >= 1)), wall * 0.75, wall)  # ledges
    roof = 0.32 + 0.1 * value_noise(hits.point[:, :2], seed + 12)
    colour = np.where(shade(window), glass, wall)
    return np.where(shade(hits.normal[:, 2] > 0.7), np.repeat(shade(roof), 3, axis=1), colour)


def slats(hits: Hits, seed: int) -> np.ndarray:
    period, gap = hits.params[:, 0], hits.params[:, 1]
    u = tangent_u(hits)
    in_gap = (u / period) % 1.0 < gap
    grain = 0.85 + 0.2 * value_noise(np.stack([u * 3, hits.point[:, 2] * 0.5], axis=1), seed + 13)
    return np.where(shade(in_gap), hits.color2, hits.color * shade(grain))


def foliage(hits: Hits, seed: int) -> np.ndarray:
    clusters = shade(value_noise(hits.point * 1.2, seed + 14))
    leaves = value_noise(hits.point * 8.0, seed + 15)
    colour = hits.color * (1 - clusters) + hits.color2 * clusters
    return colour * shade(np.where(leaves < 0.25, 0.45, 0.6 + 0.6 * leaves))


def bark(hits: Hits, seed: int) -> np.ndarray:
    u = tangent_u(hits)
    return hits.color * shade(
        0.7 + 0.5 * value_noise(np.stack([u * 10, hits.point[:, 2] * 1.5], axis=1), seed + 16)
    )


def sign(hits: Hits, seed: int) -> np.ndarray:
    """Face of a traffic sign: outer colour, inner disc, a bar as the symbol (dark or white)."""
    offset = hits.point - hits.params[:, 0:3]
    radius, share, symbol = hits.params[:, 3], hits.params[:, 4], hits.params[:, 5]
    r = np.linalg.norm(offset, axis=1) / radius
    dz = np.abs(offset[:, 2]) / radius
    lateral = np.sqrt(np.maximum(r * r - dz * dz, 0))
    colour = np.where(shade(r < share), hits.color2, hits.color)
    dark = (symbol == 1) & (dz < 0.12) & (lateral < 0.42)
    white = (symbol == 2) & (dz < 0.14) & (lateral < 0.55)
    colour = np.where(shade(dark), np.float32(0.08), colour)
    return np.where(shade(white), np.float32(0.95), colour)


def reflection(hits: Hits) -> np.ndarray:
    """Sky seen in a mirror-like surface: bright where the reflected ray points up."""
    cos = np.einsum("ij,ij->i", hits.direction, hits.normal)
    reflected_z = hits.direction[:, 2] - 2 * cos * hits.normal[:, 2]
    return shade(np.clip(0.25 + 1.5 * reflected_z, 0, 1)) * HORIZON


def glass(hits: Hits, seed: int) -> np.ndarray:
    return hits.color + 0.35 * reflection(hits)


def bus(hits: Hits, seed: int) -> np.ndarray:
    """A band of windows with dark pillars between them and an accent colour along the bottom."""
    low, high, pillar, accent = hits.params[:, :4].T
    z, u = hits.point[:, 2], tangent_u(hits)
    side = hits.normal[:, 2] < 0.7
    window = side & (z > low) & (z < high) & ((u / pillar) % 1.0 > 0.07)
    colour = np.where(shade(side & (z < accent)), hits.color2, hits.color)
    return np.where(shade(window), GLASS_TINT + 0.35 * reflection(hits), colour)


def cargo(hits: Hits, seed: int) -> np.ndarray:
    z = hits.point[:, 2]
    stripe = (z > hits.params[:, 0]) & (z < hits.params[:, 1]) & (hits.normal[:, 2] < 0.7)
    dirt = 0.88 + 0.12 * value_noise(hits.point * 2.0, seed + 17)
    return np.where(shade(stripe), hits.color2, hits.color * shade(dirt))


def plain(hits: Hits, seed: int) -> np.ndarray:
    return hits.color * shade(0.93 + 0.12 * value_noise(hits.point * 4.0, seed + 18))


def unlit(hits: Hits, seed: int) -> np.ndarray:
    return hits.color


TEXTURES = {
    Texture.PLAIN: plain,
    Texture.ASPHALT: asphalt,
    Texture.PAINT: paint,
    Texture.PAVING: paving,
    Texture.GRASS: grass,
    Texture.FACADE: facade,
    Texture.SLATS: slats,
    Texture.FOLIAGE: foliage,
    Texture.BARK: bark,
    Texture.SIGN: sign,
    Texture.GLASS: glass,
    Texture.BUS: bus,
    Texture.CARGO: cargo,
    Texture.LIGHT: unlit,
}


def albedo(scene: Scene, material: np.ndarray, hits: Hits, seed: int | None = None) -> np.ndarray:
    """Surface colour (n, 3) float32 of each hit, texture by texture; `seed` of the texture noise (default:
    the scene's, so that a surface looks the same from every camera and frame)."""
    seed = scene.texture_seed if seed is None else seed
    kinds = scene.materials.texture[material]
    colour = np.empty((len(material), 3), dtype=np.float32)
    for kind in np.unique(kinds):
        index = np.flatnonzero(kinds == kind)
        colour[index] = TEXTURES[Texture(int(kind))](hits.take(index), seed)
    return colour


def texture_seeds(scene: Scene, cameras: Sequence[CameraConfig], rng: np.random.Generator) -> list[int]:
    """The texture noise seed of each camera: the scene's for `texture: world`; for `texture: view` one drawn
    per camera and frame, so the same surface differs between cameras and frames (cross-view consistency
    of texture is then not given; the colours and the geometric patterns, tiles, windows, slats, stay)."""
    return [
        scene.texture_seed if camera.texture == "world" else int(rng.integers(1 << 30)) for camera in cameras
    ]


def sky(directions: np.ndarray) -> np.ndarray:
    """Gradient from a pale horizon to a blue zenith, with soft clouds."""
    up = np.clip(directions[:, 2], 0, 1)
    blend = shade(np.sqrt(np.clip(up * 2.5, 0, 1)))
    colour = HORIZON * (1 - blend) + ZENITH * blend
    plane = directions[:, :2] / np.maximum(up, 0.05)[:, None]
    cloud = shade(np.clip((value_noise(plane * 1.5, 99) - 0.55) * 2.5, 0, 0.8) * (up > 0.03))
    return (colour * (1 - cloud) + np.float32(0.95) * cloud).astype(np.float32)


def render(
    scene: Scene,
    cameras: Sequence[CameraConfig],
    calibrations: Sequence[CameraCalibration],
    poses: Sequence[np.ndarray],
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """RGB uint8 images and per-pixel class ids (255: sky) of cameras whose LiDAR sits at `poses`.

    poses: T_world_lidar at each camera's exposure; the camera is at T_world_lidar @ inv(T_cam_lidar).
    All cameras' rays go to Embree in one call.
    """
    origins, directions, sizes = [], [], []
    for calibration, T_world_lidar in zip(calibrations, poses, strict=True):
        intrinsics = calibration.intrinsics
        T_world_cam = T_world_lidar @ invert_transform(calibration.T_cam_lidar)
        rays = pixel_rays(intrinsics.width, intrinsics.height, intrinsics.K.tobytes())
        directions.append(rays @ T_world_cam[:3, :3].T)
        origins.append(np.broadcast_to(T_world_cam[:3, 3], rays.shape))
        sizes.append((intrinsics.height, intrinsics.width))
    origins, directions = np.concatenate(origins), np.concatenate(directions)
    face, distance = scene.cast(origins, directions)
    hit = np.flatnonzero(face >= 0)
    hit_face = face[hit]

    direction = directions[hit].astype(np.float32)
    normal = scene.face_normals[hit_face].astype(np.float32)
    normal *= -np.sign(np.einsum("ij,ij->i", normal, direction) + 1e-12)[:, None]
    point = origins[hit] + distance[hit, None] * directions[hit]
    material = scene.face_material[hit_face]
    m = scene.materials
    hits = Hits(
        point.astype(np.float32), normal, direction, m.color[material], m.color2[material], m.params[material]
    )
    seeds = texture_seeds(scene, cameras, rng)
    if len(set(seeds)) == 1:
        surface = albedo(scene, material, hits, seeds[0])
    else:
        owner = np.repeat(np.arange(len(cameras)), [h * w for h, w in sizes])[hit]
        surface = np.empty((len(hit), 3), dtype=np.float32)
        for seed in set(seeds):
            index = np.flatnonzero(np.isin(owner, [i for i, s in enumerate(seeds) if s == seed]))
            surface[index] = albedo(scene, material[index], hits.take(index), seed)

    sun = scene.sun.astype(np.float32)
    facing_sun = normal @ sun
    lit = facing_sun > 0
    with_shadows = np.repeat([camera.shadows for camera in cameras], [h * w for h, w in sizes])[hit]
    if with_shadows.any():
        candidates = np.flatnonzero(lit & with_shadows)
        shadow_origins = point[candidates] + SHADOW_OFFSET_M * normal[candidates]
        blocked, _ = scene.cast(shadow_origins, np.broadcast_to(scene.sun, shadow_origins.shape))
        lit[candidates[blocked >= 0]] = False
    diffuse = shade(np.where(lit, facing_sun, 0)) * SUN_COLOUR
    ambient = shade(0.8 + 0.2 * normal[:, 2]) * SKY_LIGHT
    mirrored = direction - 2 * shade(np.einsum("ij,ij->i", direction, normal)) * normal
    highlight = shade(m.gloss[material] * lit * np.clip(mirrored @ sun, 0, 1) ** 40) * SUN_COLOUR
    colour = surface * (ambient + diffuse) + highlight
    emissive = m.texture[material] == Texture.LIGHT
    colour[emissive] = surface[emissive]
    haze = shade(1 - np.exp(-distance[hit] / HAZE_DISTANCE_M).astype(np.float32))
    colour = colour * (1 - haze) + HORIZON * haze

    radiance = np.empty((len(directions), 3), dtype=np.float32)
    radiance[hit] = colour
    missed = face < 0
    radiance[missed] = sky(directions[missed].astype(np.float32))
    classes = np.full(len(directions), IGNORE_INDEX, dtype=np.uint8)
    classes[hit] = scene.face_class[hit_face]

    images, class_images, start = [], [], 0
    exposure = rng.random()  # one for the frame (the sky's brightness), varied a little per camera
    white_balance = rng.uniform(0.97, 1.03, 3).astype(np.float32)
    for camera, (height, width) in zip(cameras, sizes, strict=True):
        stop = start + height * width
        gain = (camera.exposure[0] + exposure * (camera.exposure[1] - camera.exposure[0])) * rng.uniform(
            0.95, 1.05
        )
        image = (
            radiance[start:stop].reshape(height, width, 3) * (gain * white_balance) * vignette(width, height)
        )
        image = 255 * image + rng.normal(0.0, camera.noise_std, image.shape).astype(np.float32)
        images.append(np.clip(image + 0.5, 0, 255).astype(np.uint8))
        class_images.append(classes[start:stop].reshape(height, width))
        start = stop
    return images, class_images


def line_of_sight(
    scene: Scene, origin: np.ndarray, targets: np.ndarray, tolerance: float = SURFACE_TOLERANCE_M
) -> np.ndarray:
    """Whether a camera at world point `origin` (3,) sees each world point of `targets` (n, 3) on the scene's
    surfaces: the first triangle on the ray towards it is no nearer than the point itself.

    The targets are where LiDAR beams hit, without range noise, so the tolerance only has to cover float
    rounding and the next triangle of a curved surface; a surface that really hides the point (a post in
    front of a wall, a car in front of the road) lies decimetres or more before it.
    """
    offset = np.asarray(targets, dtype=np.float64) - origin
    length = np.linalg.norm(offset, axis=1)
    if not len(length):
        return np.zeros(0, dtype=bool)
    _, distance = scene.cast(np.asarray(origin, dtype=np.float64), offset / length[:, None])
    return distance >= length - tolerance


@cache
def vignette(width: int, height: int) -> np.ndarray:
    """Light fall-off towards the corners, (H, W, 1) float32."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((u - width / 2) ** 2 + (v - height / 2) ** 2) / ((width / 2) ** 2 + (height / 2) ** 2)
    return (1 - 0.25 * r2)[:, :, None]
