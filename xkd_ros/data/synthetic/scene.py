"""Procedural urban streets as one triangle mesh: every triangle carries a class id and a material.

The street runs along world x (y left, z up, the road surface at z = 0). From the centre line outwards on each
side: traffic lanes, an optional parking lane, a curb, an optional grass strip, the sidewalk, grass yards,
buildings and, further back, a second row of buildings. Objects stand along it: trees, bushes, hedges,
fences, street lamps, signs, posts and bollards, parked and stationary vehicles, pedestrians and cyclists.
Everything is static; only the ego vehicle moves (`EgoTrajectory`).

Appearance carries information the geometry lacks, as in the real world: road, sidewalk and grass are
nearly co-planar, lane markings are paint on the road, sign faces differ from their backs only in colour,
and cars, trucks and buses are boxes of overlapping sizes told apart by paint, windows and details.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import cache, cached_property

import numpy as np
import trimesh
from trimesh.ray.ray_pyembree import RayMeshIntersector

from xkd_ros.classes import load_class_set
from xkd_ros.data.synthetic.config import CLASS_SET, Range, SceneConfig, SyntheticConfig
from xkd_ros.data.synthetic.noise import value_noise
from xkd_ros.data.synthetic.trajectory import EgoTrajectory

CLASS_NAMES = load_class_set(CLASS_SET).names
CLASS_ID = {name: index for index, name in enumerate(CLASS_NAMES)}
PARAMS = 6  # texture parameters per material


class Texture(IntEnum):
    """How a camera colours a surface (see camera.py for the meaning of each material's params)."""

    PLAIN = 0  # colour with a little noise: metal, cloth, skin, concrete, vehicle paint
    ASPHALT = 1
    PAINT = 2  # road markings
    PAVING = 3  # tile size, joint width
    GRASS = 4
    FACADE = 5  # floor height, window spacing, window width share, window height share, shop floor, seed
    SLATS = 6  # slat period, gap share
    FOLIAGE = 7
    BARK = 8
    SIGN = 9  # face centre x, y, z, radius, share of the inner colour, symbol (0 none, 1 dark, 2 white)
    GLASS = 10
    BUS = 11  # window band bottom and top (height above road), mullion period, accent band top
    CARGO = 12  # stripe bottom and top (height above road)
    LIGHT = 13  # lamps: not shaded


@dataclass(frozen=True, eq=False)
class Materials:
    """Material table: what the camera (texture, colours, gloss) and the LiDAR (reflectivity) see."""

    texture: np.ndarray  # (M,) uint8 Texture
    color: np.ndarray  # (M, 3) float32 RGB in [0, 1]
    color2: np.ndarray  # (M, 3) float32 RGB, the texture's second colour
    reflectivity: np.ndarray  # (M,) float32 in [0, 1], at 905 nm
    gloss: np.ndarray  # (M,) float32 strength of the sun's highlight
    params: np.ndarray  # (M, PARAMS) float32


@dataclass(eq=False)
class Scene:
    """A street: triangles with class ids and materials, the sun, and the ego vehicle's drive through it."""

    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64
    face_class: np.ndarray  # (F,) uint8 training id of the synthetic class set
    face_material: np.ndarray  # (F,) int32 row of `materials`
    materials: Materials
    sun: np.ndarray  # (3,) unit vector towards the sun
    trajectory: EgoTrajectory
    texture_seed: int

    @cached_property
    def mesh(self) -> trimesh.Trimesh:
        return trimesh.Trimesh(self.vertices, self.faces, process=False, validate=False)

    @cached_property
    def intersector(self) -> RayMeshIntersector:
        """Embree BVH over the whole street, built on first use (tens of milliseconds)."""
        return RayMeshIntersector(self.mesh)

    @cached_property
    def face_normals(self) -> np.ndarray:
        return np.asarray(self.mesh.face_normals, dtype=np.float64)

    @cached_property
    def face_anchor(self) -> np.ndarray:
        return self.vertices[self.faces[:, 0]]

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First triangle (-1: none) and distance (inf: none) along each unit-length ray (n, 3).

        Embree finds the triangle; the distance is the ray's intersection with that triangle's plane,
        computed in float64 so that centimetre-scale curbs and paint stay sharp at 70 m.
        """
        origins = np.broadcast_to(origins, directions.shape)
        face = self.intersector.intersects_first(origins, directions).astype(np.int64)
        hit = np.flatnonzero(face >= 0)
        distance = np.full(len(directions), np.inf)
        normal = self.face_normals[face[hit]]
        along = np.einsum("ij,ij->i", directions[hit], normal)
        along = np.where(np.abs(along) < 1e-9, 1e-9, along)
        distance[hit] = np.einsum("ij,ij->i", self.face_anchor[face[hit]] - origins[hit], normal) / along
        return face, distance

    @property
    def num_faces(self) -> int:
        return len(self.faces)


# --- primitives -------------------------------------------------------------------------------------------

BOX = trimesh.creation.box()  # unit cube centred at the origin
SPHERE = trimesh.creation.icosphere(subdivisions=2)
HEAD = trimesh.creation.icosphere(subdivisions=1)
CONE = trimesh.creation.cone(radius=1.0, height=1.0, sections=12)  # base at z = 0


@cache
def cylinder(sections: int) -> trimesh.Trimesh:
    """Unit cylinder along z centred at the origin; 3, 4 and 8 sections make triangle, diamond, octagon."""
    return trimesh.creation.cylinder(radius=1.0, height=1.0, sections=sections)


def rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def shape(
    unit: trimesh.Trimesh, size: object, center: object = (0, 0, 0), rotation: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and faces of a unit primitive scaled by `size`, rotated, then moved to `center`."""
    vertices = unit.vertices * np.asarray(size, dtype=np.float64)
    if rotation is not None:
        vertices = vertices @ rotation.T
    return vertices + np.asarray(center, dtype=np.float64), unit.faces


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    normal = np.cross(
        vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]]
    )
    return normal / np.linalg.norm(normal, axis=1, keepdims=True)


def lumpy(unit: trimesh.Trimesh, rng: np.random.Generator, amount: float) -> trimesh.Trimesh:
    """A copy of a sphere-like primitive with its surface pushed in and out by smooth noise (foliage)."""
    direction = unit.vertices
    offset = rng.uniform(-1000, 1000, 3)
    bumps = value_noise(direction * 1.8 + offset, int(rng.integers(1 << 30))) - 0.5
    return trimesh.Trimesh(direction * (1 + 2 * amount * bumps[:, None]), unit.faces, process=False)


# --- palettes (RGB in [0, 1]) ------------------------------------------------------------------------------

CAR_PAINT = np.array(
    [
        [0.92, 0.92, 0.92],
        [0.70, 0.72, 0.74],
        [0.08, 0.08, 0.09],
        [0.38, 0.39, 0.41],
        [0.62, 0.07, 0.07],
        [0.10, 0.20, 0.52],
        [0.12, 0.30, 0.18],
        [0.74, 0.66, 0.50],
        [0.85, 0.70, 0.10],
        [0.45, 0.10, 0.25],
    ]
)
TRUCK_CAB = np.array(
    [[0.92, 0.92, 0.92], [0.75, 0.10, 0.08], [0.10, 0.25, 0.60], [0.92, 0.48, 0.06], [0.12, 0.42, 0.20]]
)
CARGO_BOX = np.array([[0.93, 0.93, 0.91], [0.75, 0.76, 0.78], [0.85, 0.82, 0.72], [0.55, 0.58, 0.60]])
STRIPE = np.array([[0.80, 0.10, 0.10], [0.10, 0.30, 0.70], [0.10, 0.55, 0.25], [0.95, 0.60, 0.05]])
BUS_PAINT = np.array(
    [[0.78, 0.08, 0.08], [0.95, 0.75, 0.10], [0.92, 0.93, 0.95], [0.15, 0.55, 0.30], [0.95, 0.50, 0.08]]
)
BUS_ACCENT = np.array([[0.10, 0.20, 0.55], [0.15, 0.15, 0.16], [0.85, 0.85, 0.85], [0.60, 0.05, 0.10]])
FACADE = np.array(
    [
        [0.86, 0.79, 0.64],
        [0.60, 0.31, 0.23],
        [0.62, 0.62, 0.60],
        [0.90, 0.90, 0.87],
        [0.90, 0.81, 0.52],
        [0.84, 0.64, 0.58],
        [0.52, 0.56, 0.60],
        [0.72, 0.55, 0.40],
    ]
)
WINDOW = np.array([[0.14, 0.18, 0.24], [0.20, 0.22, 0.22], [0.22, 0.32, 0.38], [0.30, 0.26, 0.20]])
SKIN = np.array([[0.95, 0.78, 0.65], [0.80, 0.60, 0.45], [0.55, 0.38, 0.26], [0.35, 0.24, 0.17]])
TROUSERS = np.array(
    [[0.10, 0.12, 0.20], [0.08, 0.08, 0.08], [0.35, 0.35, 0.37], [0.60, 0.55, 0.40], [0.20, 0.30, 0.50]]
)
POLE_METAL = np.array([[0.55, 0.57, 0.58], [0.12, 0.25, 0.16], [0.10, 0.10, 0.11], [0.66, 0.66, 0.63]])
FENCE = np.array(
    [[0.55, 0.40, 0.25], [0.88, 0.88, 0.85], [0.14, 0.28, 0.18], [0.45, 0.47, 0.48], [0.35, 0.25, 0.18]]
)
RED, WHITE, BLUE = (0.75, 0.06, 0.06), (0.95, 0.95, 0.95), (0.06, 0.25, 0.65)
GREEN, YELLOW = (0.05, 0.45, 0.20), (0.98, 0.78, 0.05)
SIGN_KINDS = (  # plate shape, sections (0: rectangle), outer colour, inner colour, inner share, symbol
    ("prohibitory", 20, RED, WHITE, 0.74, 1),
    ("no_entry", 20, RED, RED, 1.0, 2),
    ("mandatory", 20, BLUE, BLUE, 1.0, 2),
    ("warning", 3, RED, WHITE, 0.42, 1),
    ("priority", 4, WHITE, YELLOW, 0.62, 0),
    ("stop", 8, RED, RED, 1.0, 2),
    ("information", 0, BLUE, BLUE, 1.0, 2),
    ("direction", 0, GREEN, GREEN, 1.0, 2),
)


def pick(rng: np.random.Generator, palette: np.ndarray, jitter: float = 0.04) -> np.ndarray:
    """A palette colour, slightly varied so that no two objects are exactly alike."""
    colour = palette[rng.integers(len(palette))] * rng.uniform(1 - jitter, 1 + jitter, 3)
    return np.clip(colour, 0.0, 1.0)


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """A clothing colour: any hue, moderate saturation."""
    base = rng.uniform(0.1, 0.85)
    return np.clip(base + rng.uniform(-0.3, 0.3, 3), 0.03, 0.97)


def paint_reflectivity(colour: np.ndarray) -> float:
    """Bright paint returns more of the LiDAR's light than dark paint."""
    return float(0.08 + 0.45 * np.mean(colour))


# --- the builder -------------------------------------------------------------------------------------------


class SceneBuilder:
    """Collects triangles with their class and material; objects are placed by a yaw and a position."""

    def __init__(self) -> None:
        self.vertices: list[np.ndarray] = []
        self.faces: list[np.ndarray] = []
        self.face_class: list[np.ndarray] = []
        self.face_material: list[np.ndarray] = []
        self.materials: list[tuple] = []
        self.vertex_count = 0

    def material(
        self,
        texture: Texture,
        color: object,
        color2: object = (0.0, 0.0, 0.0),
        reflectivity: float = 0.2,
        gloss: float = 0.0,
        params: object = (),
    ) -> int:
        values = np.zeros(PARAMS)
        values[: len(params)] = params
        self.materials.append((int(texture), color, color2, reflectivity, gloss, values))
        return len(self.materials) - 1

    def add(
        self,
        part: tuple[np.ndarray, np.ndarray],
        class_name: str,
        material: int | np.ndarray,
        yaw: float = 0.0,
        position: object = (0.0, 0.0, 0.0),
    ) -> None:
        """Add a part given in its object's frame; the object stands at `position`, turned by `yaw`."""
        vertices, faces = part
        self.vertices.append(vertices @ rot_z(yaw).T + np.asarray(position, dtype=np.float64))
        self.faces.append(np.asarray(faces, dtype=np.int64) + self.vertex_count)
        self.face_class.append(np.full(len(faces), CLASS_ID[class_name], dtype=np.uint8))
        self.face_material.append(np.broadcast_to(np.asarray(material, dtype=np.int32), (len(faces),)))
        self.vertex_count += len(vertices)

    def add_rectangles(self, rects: np.ndarray, z: float, class_name: str, material: int) -> None:
        """Horizontal rectangles (n, 4: x0, x1, y0, y1) at height z, two triangles each."""
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        x0, x1, y0, y1 = rects.T
        corners = np.stack([np.c_[x0, y0], np.c_[x1, y0], np.c_[x1, y1], np.c_[x0, y1]], axis=1)
        vertices = np.concatenate([corners.reshape(-1, 2), np.full((4 * len(rects), 1), z)], axis=1)
        start = 4 * np.arange(len(rects))[:, None]
        faces = np.concatenate([start + np.array([0, 1, 2]), start + np.array([0, 2, 3])])
        self.add((vertices, faces), class_name, material)

    def add_grid(
        self, x: Range, y: Range, step: float, height: object, class_name: str, material: int
    ) -> None:
        """A height field over [x0, x1] x [y0, y1]; `height(xy (n, 2)) -> z (n,)`."""
        xs = np.linspace(x[0], x[1], max(2, int(np.ceil((x[1] - x[0]) / step)) + 1))
        ys = np.linspace(y[0], y[1], max(2, int(np.ceil(abs(y[1] - y[0]) / step)) + 1))
        gx, gy = np.meshgrid(xs, ys, indexing="ij")
        xy = np.c_[gx.ravel(), gy.ravel()]
        vertices = np.c_[xy, height(xy)]
        index = np.arange(len(xs) * len(ys)).reshape(len(xs), len(ys))
        a, b, c, d = (
            index[:-1, :-1].ravel(),
            index[1:, :-1].ravel(),
            index[1:, 1:].ravel(),
            index[:-1, 1:].ravel(),
        )
        faces = np.concatenate([np.c_[a, b, c], np.c_[a, c, d]])
        self.add((vertices, faces), class_name, material)

    def build(self, sun: np.ndarray, trajectory: EgoTrajectory, texture_seed: int) -> Scene:
        texture, color, color2, reflectivity, gloss, params = zip(*self.materials, strict=True)
        materials = Materials(
            texture=np.array(texture, dtype=np.uint8),
            color=np.array(color, dtype=np.float32).reshape(-1, 3),
            color2=np.array(color2, dtype=np.float32).reshape(-1, 3),
            reflectivity=np.array(reflectivity, dtype=np.float32),
            gloss=np.array(gloss, dtype=np.float32),
            params=np.array(params, dtype=np.float32),
        )
        return Scene(
            vertices=np.concatenate(self.vertices),
            faces=np.concatenate(self.faces),
            face_class=np.concatenate(self.face_class),
            face_material=np.concatenate(self.face_material).astype(np.int32),
            materials=materials,
            sun=sun,
            trajectory=trajectory,
            texture_seed=texture_seed,
        )


# --- objects (each in its own frame: x forward, y left, z up, standing on z = 0) ------------------------


def add_wheels(
    b: SceneBuilder,
    name: str,
    axles: list[float],
    width: float,
    radius: float,
    yaw: float,
    position: np.ndarray,
) -> None:
    rubber = b.material(Texture.PLAIN, (0.05, 0.05, 0.05), reflectivity=0.04)
    for axle in axles:
        for side in (-1, 1):
            center = (axle, side * (width / 2 - 0.14), radius)
            b.add(
                shape(cylinder(12), (radius, radius, 0.24), center, rot_x(np.pi / 2)),
                name,
                rubber,
                yaw,
                position,
            )


def add_lights(
    b: SceneBuilder, name: str, length: float, width: float, z: float, yaw: float, position: np.ndarray
) -> None:
    """White head lamps in front, red tail lamps behind: details that say which way a vehicle faces."""
    front = b.material(Texture.LIGHT, (0.95, 0.95, 0.88), reflectivity=0.6)
    rear = b.material(Texture.LIGHT, (0.75, 0.05, 0.05), reflectivity=0.6)
    for side in (-1, 1):
        for end, material in ((1, front), (-1, rear)):
            center = (end * length / 2, side * (width / 2 - 0.25), z)
            b.add(shape(BOX, (0.06, 0.32, 0.14), center), name, material, yaw, position)


def add_car(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, yaw: float, length: float) -> None:
    width, height = rng.uniform(1.6, 2.0), rng.uniform(1.4, 1.95)
    position = np.array([x, y, 0.0])
    colour = pick(rng, CAR_PAINT)
    paint = b.material(Texture.PLAIN, colour, reflectivity=paint_reflectivity(colour), gloss=0.5)
    glass = b.material(Texture.GLASS, (0.07, 0.09, 0.11), reflectivity=0.05, gloss=0.8)
    clearance = 0.18
    body_top = clearance + (height - clearance) * rng.uniform(0.48, 0.6)
    b.add(
        shape(BOX, (length, width, body_top - clearance), (0, 0, (clearance + body_top) / 2)),
        "car",
        paint,
        yaw,
        position,
    )
    cabin_length = length * rng.uniform(0.45, 0.6)
    vertices, faces = shape(BOX, (cabin_length, width * 0.9, height - body_top))
    top = vertices[:, 2] > 0
    vertices[top, 0] = vertices[top, 0] * rng.uniform(0.6, 0.8) - cabin_length * 0.05
    vertices[:, 0] -= length * rng.uniform(0.0, 0.12)
    vertices[:, 2] += body_top + (height - body_top) / 2
    roof = face_normals(vertices, faces)[:, 2] > 0.9
    b.add((vertices, faces), "car", np.where(roof, paint, glass), yaw, position)
    radius = rng.uniform(0.3, 0.36)
    add_wheels(b, "car", [length / 2 - 0.85, -length / 2 + 0.8], width, radius, yaw, position)
    add_lights(b, "car", length, width, body_top - 0.15, yaw, position)


def add_truck(
    b: SceneBuilder, rng: np.random.Generator, x: float, y: float, yaw: float, length: float
) -> None:
    width, height = rng.uniform(2.0, 2.5), rng.uniform(2.4, 3.7)
    position = np.array([x, y, 0.0])
    cab_colour = pick(rng, TRUCK_CAB)
    paint = b.material(Texture.PLAIN, cab_colour, reflectivity=paint_reflectivity(cab_colour), gloss=0.4)
    glass = b.material(Texture.GLASS, (0.07, 0.09, 0.11), reflectivity=0.05, gloss=0.8)
    cab_length, cab_height = rng.uniform(1.8, 2.3), min(height, rng.uniform(2.3, 2.9))
    cab_x = length / 2 - cab_length / 2
    b.add(shape(BOX, (cab_length, width, 1.15), (cab_x, 0, 0.4 + 1.15 / 2)), "truck", paint, yaw, position)
    vertices, faces = shape(
        BOX, (cab_length, width * 0.97, cab_height - 1.55), (cab_x, 0, (1.55 + cab_height) / 2)
    )
    normal = face_normals(vertices, faces)
    painted = (normal[:, 2] > 0.9) | (normal[:, 0] < -0.9)
    b.add((vertices, faces), "truck", np.where(painted, paint, glass), yaw, position)
    cargo_length = length - cab_length - 0.15
    cargo_x = -length / 2 + cargo_length / 2
    body = pick(rng, CARGO_BOX)
    if rng.random() < 0.25:  # tanker
        tank = b.material(Texture.PLAIN, (0.72, 0.74, 0.76), reflectivity=0.5, gloss=0.7)
        radius = min(width / 2, (height - 1.0) / 2)
        b.add(
            shape(
                cylinder(20),
                (radius, width / 2, cargo_length),
                (cargo_x, 0, height - radius),
                rot_y(np.pi / 2),
            ),
            "truck",
            tank,
            yaw,
            position,
        )
    else:
        stripe_low = rng.uniform(1.3, 2.0)
        cargo = b.material(
            Texture.CARGO,
            body,
            pick(rng, STRIPE),
            paint_reflectivity(body),
            0.2,
            (stripe_low, stripe_low + rng.uniform(0.2, 0.6)),
        )
        b.add(
            shape(BOX, (cargo_length, width, height - 1.0), (cargo_x, 0, (1.0 + height) / 2)),
            "truck",
            cargo,
            yaw,
            position,
        )
    chassis = b.material(Texture.PLAIN, (0.12, 0.12, 0.13), reflectivity=0.1)
    b.add(shape(BOX, (cargo_length, width * 0.8, 0.45), (cargo_x, 0, 0.78)), "truck", chassis, yaw, position)
    axles = [cab_x, -length / 2 + 1.3] + ([-length / 2 + 2.7] if length > 7.5 else [])
    add_wheels(b, "truck", axles, width, rng.uniform(0.46, 0.52), yaw, position)
    add_lights(b, "truck", length, width, 0.75, yaw, position)


def add_bus(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, yaw: float, length: float) -> None:
    width, height = rng.uniform(2.45, 2.55), rng.uniform(2.9, 3.3)
    position = np.array([x, y, 0.0])
    colour = pick(rng, BUS_PAINT)
    window_low = rng.uniform(1.1, 1.3)
    params = (window_low, height - rng.uniform(0.35, 0.5), rng.uniform(1.0, 1.5), rng.uniform(0.6, 0.9))
    body = b.material(Texture.BUS, colour, pick(rng, BUS_ACCENT), paint_reflectivity(colour), 0.4, params)
    b.add(shape(BOX, (length, width, height - 0.3), (0, 0, (0.3 + height) / 2)), "bus", body, yaw, position)
    display = b.material(Texture.LIGHT, (0.95, 0.6, 0.1), reflectivity=0.3)
    b.add(
        shape(BOX, (0.05, width * 0.7, 0.25), (length / 2 + 0.01, 0, height - 0.25)),
        "bus",
        display,
        yaw,
        position,
    )
    add_wheels(b, "bus", [length / 2 - 2.5, -length / 2 + 3.0], width, rng.uniform(0.48, 0.52), yaw, position)
    add_lights(b, "bus", length, width, 0.6, yaw, position)


VEHICLES = {"car": add_car, "truck": add_truck, "bus": add_bus}
VEHICLE_LENGTH = {"car": (3.6, 5.3), "truck": (5.5, 10.0), "bus": (9.0, 13.0)}


def add_pedestrian(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, yaw: float) -> None:
    height = rng.uniform(1.5, 1.95)
    position = np.array([x, y, 0.0])
    trousers = b.material(Texture.PLAIN, pick(rng, TROUSERS, 0.15), reflectivity=rng.uniform(0.1, 0.4))
    shirt_colour = random_colour(rng)
    shirt = b.material(Texture.PLAIN, shirt_colour, reflectivity=0.1 + 0.4 * float(np.mean(shirt_colour)))
    skin = b.material(Texture.PLAIN, pick(rng, SKIN), reflectivity=0.3)
    leg, torso, head = 0.47 * height, 0.3 * height, 0.065 * height
    shoulders, stride = rng.uniform(0.36, 0.48), rng.uniform(0.0, 0.3)
    for side in (-1, 1):
        b.add(
            shape(BOX, (0.15, 0.14, leg), (side * stride / 2, side * 0.1, leg / 2)),
            "pedestrian",
            trousers,
            yaw,
            position,
        )
        arm_center = (-side * stride / 3, side * (shoulders / 2 + 0.05), leg + torso * 0.52)
        b.add(shape(BOX, (0.1, 0.09, torso * 0.95), arm_center), "pedestrian", shirt, yaw, position)
    b.add(shape(BOX, (0.24, shoulders, torso), (0, 0, leg + torso / 2)), "pedestrian", shirt, yaw, position)
    b.add(
        shape(HEAD, (head, head * 0.9, head * 1.1), (0, 0, leg + torso + head * 1.15)),
        "pedestrian",
        skin,
        yaw,
        position,
    )
    if rng.random() < 0.35:  # backpack or bag
        bag = b.material(Texture.PLAIN, random_colour(rng) * 0.6, reflectivity=0.2)
        b.add(shape(BOX, (0.16, 0.3, 0.38), (-0.2, 0, leg + torso * 0.6)), "pedestrian", bag, yaw, position)


def add_cyclist(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, yaw: float) -> None:
    position = np.array([x, y, 0.0])
    radius, base = rng.uniform(0.33, 0.36), rng.uniform(1.0, 1.1)
    frame_colour = random_colour(rng)
    frame = b.material(Texture.PLAIN, frame_colour, reflectivity=paint_reflectivity(frame_colour), gloss=0.4)
    tyre = b.material(Texture.PLAIN, (0.05, 0.05, 0.05), reflectivity=0.05)
    clothes = b.material(Texture.PLAIN, random_colour(rng), reflectivity=rng.uniform(0.1, 0.5))
    trousers = b.material(Texture.PLAIN, pick(rng, TROUSERS, 0.15), reflectivity=0.2)
    helmet = b.material(Texture.PLAIN, random_colour(rng), reflectivity=0.4, gloss=0.5)
    for end in (-1, 1):
        b.add(
            shape(cylinder(16), (radius, radius, 0.05), (end * base / 2, 0, radius), rot_x(np.pi / 2)),
            "cyclist",
            tyre,
            yaw,
            position,
        )
    seat = np.array([-0.12, 0, radius + 0.62])
    bar = np.array([base / 2 - 0.12, 0, radius + 0.7])
    for start, end in (
        (seat, bar),
        (seat, [0.0, 0, radius]),
        ([0.0, 0, radius], bar),
        ([-base / 2, 0, radius], seat),
    ):
        start, end = np.asarray(start, float), np.asarray(end, float)
        delta = end - start
        pitch = np.arctan2(-delta[2], delta[0])
        center = (start + end) / 2
        b.add(
            shape(BOX, (np.linalg.norm(delta), 0.04, 0.04), center, rot_y(pitch)),
            "cyclist",
            frame,
            yaw,
            position,
        )
    b.add(shape(BOX, (0.04, 0.5, 0.04), bar), "cyclist", frame, yaw, position)
    lean = rng.uniform(0.4, 0.8)  # forward lean of the torso, radians from upright
    torso = 0.58
    hip = seat + np.array([0, 0, 0.05])
    shoulder = hip + torso * np.array([np.sin(lean), 0, np.cos(lean)])
    b.add(
        shape(BOX, (0.22, 0.38, torso), (hip + shoulder) / 2, rot_y(lean)), "cyclist", clothes, yaw, position
    )
    b.add(
        shape(HEAD, (0.12, 0.11, 0.12), shoulder + np.array([0.08, 0, 0.17])),
        "cyclist",
        helmet,
        yaw,
        position,
    )
    for side in (-1, 1):
        pedal = np.array([side * 0.12, side * 0.12, radius + 0.1])
        knee = (hip + pedal) / 2 + [0.2, 0, 0.1]
        for start, end, material, thickness in (
            (hip, knee, trousers, 0.14),
            (knee, pedal, trousers, 0.11),
            (shoulder, bar, clothes, 0.08),
        ):
            delta = end - start
            pitch = np.arctan2(-delta[2], delta[0])
            center = (start + end) / 2 + [0, side * 0.12, 0]
            b.add(
                shape(BOX, (np.linalg.norm(delta), thickness, thickness), center, rot_y(pitch)),
                "cyclist",
                material,
                yaw,
                position,
            )


def add_tree(b: SceneBuilder, rng: np.random.Generator, x: float, y: float) -> None:
    position = np.array([x, y, 0.0])
    bark = b.material(Texture.BARK, np.array([0.35, 0.26, 0.18]) * rng.uniform(0.7, 1.2), reflectivity=0.35)
    leaves = np.array([0.22, 0.42, 0.14]) * rng.uniform(0.7, 1.25, 3)
    foliage = b.material(
        Texture.FOLIAGE, leaves, leaves * [1.5, 1.3, 1.0], reflectivity=rng.uniform(0.4, 0.6)
    )
    trunk_height, trunk_radius = rng.uniform(1.8, 3.5), rng.uniform(0.1, 0.25)
    if rng.random() < 0.25:  # conifer
        radius, height = rng.uniform(1.2, 2.2), rng.uniform(5.0, 9.0)
        b.add(
            shape(cylinder(10), (trunk_radius, trunk_radius, 1.5), (0, 0, 0.75)),
            "vegetation",
            bark,
            0,
            position,
        )
        cone = lumpy(CONE, rng, 0.12)
        b.add(shape(cone, (radius, radius, height), (0, 0, 1.0)), "vegetation", foliage, 0, position)
        return
    radius = rng.uniform(1.5, 3.5)
    b.add(
        shape(
            cylinder(10),
            (trunk_radius, trunk_radius, trunk_height + radius),
            (0, 0, (trunk_height + radius) / 2),
        ),
        "vegetation",
        bark,
        0,
        position,
    )
    for lobe in range(int(rng.integers(1, 4))):
        scale = radius * (1.0 if lobe == 0 else rng.uniform(0.5, 0.8))
        offset = (0, 0, 0) if lobe == 0 else rng.uniform(-0.6, 0.6, 3) * radius
        center = np.array([0, 0, trunk_height + radius * 0.85]) + offset
        size = (scale, scale * rng.uniform(0.85, 1.15), scale * rng.uniform(0.75, 1.1))
        b.add(shape(lumpy(SPHERE, rng, 0.2), size, center), "vegetation", foliage, 0, position)


def add_bush(
    b: SceneBuilder, rng: np.random.Generator, x: float, y: float, z: float, length: float = 0.0
) -> None:
    """A bush, or with `length` a hedge along x (flat-topped)."""
    leaves = np.array([0.2, 0.38, 0.13]) * rng.uniform(0.7, 1.3, 3)
    foliage = b.material(
        Texture.FOLIAGE, leaves, leaves * [1.4, 1.3, 1.0], reflectivity=rng.uniform(0.35, 0.55)
    )
    radius = rng.uniform(0.5, 1.2)
    vertices, faces = shape(
        lumpy(SPHERE, rng, 0.15), (max(radius, length / 2), radius * rng.uniform(0.6, 1.0), radius)
    )
    if length:
        vertices[:, 2] = np.minimum(vertices[:, 2], radius * 0.6)
    b.add((vertices, faces), "vegetation", foliage, 0, (x, y, z + radius * 0.45))


def add_lamp(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, toward_road: float) -> None:
    position = np.array([x, y, 0.0])
    metal = b.material(Texture.PLAIN, pick(rng, POLE_METAL), reflectivity=rng.uniform(0.35, 0.6), gloss=0.3)
    height, radius, arm = rng.uniform(6.0, 9.0), rng.uniform(0.07, 0.12), rng.uniform(1.0, 2.2)
    b.add(
        shape(cylinder(12), (radius, radius, height), (0, 0, height / 2)),
        "pole",
        metal,
        toward_road,
        position,
    )
    b.add(shape(BOX, (arm, 0.08, 0.08), (arm / 2, 0, height - 0.1)), "pole", metal, toward_road, position)
    head = b.material(Texture.PLAIN, (0.75, 0.75, 0.72), reflectivity=0.5)
    b.add(shape(BOX, (0.6, 0.3, 0.15), (arm, 0, height - 0.2)), "pole", head, toward_road, position)


def add_sign(b: SceneBuilder, rng: np.random.Generator, x: float, y: float, facing: float) -> None:
    """A sign post (pole) with a plate (traffic_sign) whose face looks along `facing` (yaw, radians)."""
    position = np.array([x, y, 0.0])
    metal = b.material(Texture.PLAIN, (0.6, 0.62, 0.63), reflectivity=0.45)
    post_height, size = rng.uniform(2.0, 2.6), rng.uniform(0.55, 0.9)
    b.add(
        shape(cylinder(10), (0.04, 0.04, post_height + size / 2), (0, 0, (post_height + size / 2) / 2)),
        "pole",
        metal,
        facing,
        position,
    )
    _, sections, outer, inner, share, symbol = SIGN_KINDS[rng.integers(len(SIGN_KINDS))]
    center = np.array([0.06, 0.0, post_height + size / 2])
    if sections:
        turn = {3: rot_z(np.pi), 8: rot_z(np.pi / 8)}.get(sections, np.eye(3))
        plate = shape(cylinder(sections), (size / 2, size / 2, 0.03), center, rot_y(np.pi / 2) @ turn)
    else:
        plate = shape(BOX, (0.03, size * 1.3, size * 0.75), center)
    world_center = rot_z(facing) @ center + position
    face = b.material(Texture.SIGN, outer, inner, 0.9, 0.2, (*world_center, size / 2, share, symbol))
    back = b.material(Texture.PLAIN, (0.55, 0.56, 0.57), reflectivity=0.4)
    front = face_normals(*plate)[:, 0] > 0.9
    b.add(plate, "traffic_sign", np.where(front, face, back), facing, position)


def add_post(b: SceneBuilder, rng: np.random.Generator, x: float, y: float) -> None:
    """Bollards, posts, parking meters and wooden utility poles: thin vertical things that are not people."""
    position = np.array([x, y, 0.0])
    kind = rng.choice(["bollard", "post", "meter", "utility"], p=[0.35, 0.3, 0.2, 0.15])
    if kind == "utility":
        wood = b.material(Texture.BARK, (0.38, 0.3, 0.22), reflectivity=0.3)
        height, radius = rng.uniform(7.0, 10.0), rng.uniform(0.13, 0.2)
        b.add(shape(cylinder(12), (radius, radius, height), (0, 0, height / 2)), "pole", wood, 0, position)
        b.add(
            shape(BOX, (0.12, 1.6, 0.12), (0, 0, height - 0.6)), "pole", wood, rng.uniform(0, np.pi), position
        )
        return
    metal = b.material(Texture.PLAIN, pick(rng, POLE_METAL), reflectivity=rng.uniform(0.3, 0.6), gloss=0.3)
    height, radius = {
        "bollard": (rng.uniform(0.8, 1.1), rng.uniform(0.08, 0.15)),
        "post": (rng.uniform(1.5, 2.2), rng.uniform(0.05, 0.1)),
        "meter": (rng.uniform(1.1, 1.3), 0.05),
    }[kind]
    b.add(shape(cylinder(12), (radius, radius, height), (0, 0, height / 2)), "pole", metal, 0, position)
    if kind == "meter":
        b.add(
            shape(BOX, (0.2, 0.25, 0.35), (0, 0, height + 0.17)),
            "pole",
            metal,
            rng.uniform(0, np.pi),
            position,
        )


def add_fence(b: SceneBuilder, rng: np.random.Generator, x: Range, y: float, base: float) -> None:
    """A fence along x from x[0] to x[1] at lateral position y, standing on `base` (the yard's height)."""
    height = rng.uniform(0.8, 2.0)
    colour = pick(rng, FENCE, 0.1)
    slats = b.material(
        Texture.SLATS,
        colour,
        colour * 0.35,
        rng.uniform(0.2, 0.45),
        0.0,
        (rng.uniform(0.1, 0.3), rng.uniform(0.1, 0.5)),
    )
    length = x[1] - x[0]
    b.add(shape(BOX, (length, 0.05, height), ((x[0] + x[1]) / 2, y, base + height / 2)), "fence", slats)


def add_building(
    b: SceneBuilder, rng: np.random.Generator, x: Range, y: Range, height: float, shop: bool
) -> None:
    """A block from x[0] to x[1] and y[0] to y[1] (either order), `height` tall, with a window grid."""
    colour = pick(rng, FACADE, 0.08)
    params = (
        rng.uniform(2.9, 3.6),  # floor height
        rng.uniform(1.8, 3.6),  # window spacing
        rng.uniform(0.3, 0.7),  # window width share
        rng.uniform(0.35, 0.65),  # window height share
        float(shop),
        rng.uniform(0, 1000),
    )
    facade = b.material(Texture.FACADE, colour, pick(rng, WINDOW, 0.15), rng.uniform(0.2, 0.45), 0.0, params)
    size = (abs(x[1] - x[0]), abs(y[1] - y[0]), height)
    b.add(shape(BOX, size, (np.mean(x), np.mean(y), height / 2)), "building", facade)


# --- the street --------------------------------------------------------------------------------------------


def walk(
    rng: np.random.Generator, start: float, stop: float, gap: Range, length: Range = (0.0, 0.0)
) -> list[tuple[float, float]]:
    """(start, length) of things placed one after another along x, with gaps drawn from `gap`."""
    items, x = [], start + rng.uniform(0, gap[1])
    while True:
        size = rng.uniform(*length)
        if x + size > stop:
            return items
        items.append((x, size))
        x += size + rng.uniform(*gap)


@dataclass(frozen=True)
class Side:
    """One side of the street, distances from the centre line: where the curb, grass and sidewalk are."""

    sign: int  # +1 left (y > 0), -1 right
    road_edge: float
    curb_height: float
    lawn: Range | None  # grass strip between curb and sidewalk
    sidewalk: Range
    yard_depth: float

    @property
    def facade(self) -> float:
        return self.sidewalk[1] + self.yard_depth

    @property
    def furniture(self) -> float:
        """Distance from the centre line of lamps, signs and posts: just behind the curb."""
        return (self.lawn[0] if self.lawn else self.road_edge) + 0.45


def mix_choice(rng: np.random.Generator, mix: dict[str, float]) -> str:
    names = sorted(mix)
    weights = np.array([mix[name] for name in names], dtype=np.float64)
    return names[rng.choice(len(names), p=weights / weights.sum())]


def build_scene(config: SyntheticConfig, rng: np.random.Generator) -> Scene:
    """A street long enough for one sequence of `config.sequence` frames, drawn from `rng`."""
    sc: SceneConfig = config.scene
    seq = config.sequence
    b = SceneBuilder()
    u = rng.uniform
    lanes = int(rng.integers(sc.lanes_per_direction[0], sc.lanes_per_direction[1] + 1))
    lane_width = u(*sc.lane_width_m)
    speed = u(*config.ego.speed_mps)
    drive = speed * ((seq.frames_per_scene - 1) * seq.frame_interval_s + config.lidar.sweep_s)
    x_range = (-sc.margin_m, drive + sc.margin_m)
    ego_lane = int(rng.integers(lanes))
    trajectory = EgoTrajectory(
        speed_mps=speed,
        lane_y=-(ego_lane + 0.5) * lane_width,
        weave_m=u(*config.ego.weave_m),
        period_s=u(*config.ego.weave_period_s),
        phase=u(0, 2 * np.pi),
        height_m=config.lidar.mount_height,
    )
    texture_seed = int(rng.integers(1 << 30))

    sides, parking = [], {}
    for sign in (1, -1):
        parking[sign] = u(*sc.parking_width_m) if rng.random() < sc.parking_lane else 0.0
        edge = lanes * lane_width + parking[sign]
        lawn = None
        if rng.random() < sc.tree_lawn:
            lawn = (edge + 0.25, edge + 0.25 + u(*sc.tree_lawn_width_m))
        walk_start = lawn[1] if lawn else edge
        sidewalk = (walk_start, walk_start + u(*sc.sidewalk_width_m))
        sides.append(Side(sign, edge, u(*sc.curb_height_m), lawn, sidewalk, u(*sc.yard_depth_m)))

    add_ground(b, rng, sides, x_range, texture_seed)
    add_markings(b, rng, lanes, lane_width, parking, x_range)
    crosswalks = u(
        x_range[0] + 30, x_range[1] - 30, int(rng.integers(sc.crosswalks[0], sc.crosswalks[1] + 1))
    )
    for x in crosswalks:
        add_crosswalk(b, rng, x, lanes, lane_width, ego_lane)
    for side in sides:
        add_roadside(b, rng, sc, side, x_range)
    add_traffic(b, rng, sc, lanes, lane_width, ego_lane, parking, x_range, crosswalks)

    elevation, azimuth = np.deg2rad(u(*sc.sun_elevation_deg)), u(0, 2 * np.pi)
    sun = np.array(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]
    )
    scene = b.build(sun, trajectory, texture_seed)
    if config.lidar.reflectivity:  # drawn last: the rest of the scene is the same with or without bands
        apply_reflectivity_bands(scene, config.lidar.reflectivity, rng)
    return scene


def apply_reflectivity_bands(scene: Scene, bands: dict[str, Range], rng: np.random.Generator) -> None:
    """Give every material of a class with a band a reflectivity drawn uniformly from it (in place).

    With bands that do not overlap, the LiDAR's intensity tells those classes apart (the neutral regime,
    config/synthetic_neutral.yaml). Each material belongs to one class (objects make their own materials).
    """
    material_class = np.full(len(scene.materials.reflectivity), -1, dtype=np.int64)
    material_class[scene.face_material] = scene.face_class
    draws = rng.random(len(material_class)).astype(np.float32)
    for name, (low, high) in bands.items():
        chosen = material_class == CLASS_ID[name]
        scene.materials.reflectivity[chosen] = low + (high - low) * draws[chosen]


def add_slab(b: SceneBuilder, side: Side, x: Range, y: Range, material: int) -> None:
    """A block of paving from y[0] to y[1] out from the centre line, curb-high, its face the curb."""
    center = (np.mean(x), side.sign * (y[0] + y[1]) / 2, side.curb_height / 2)
    b.add(shape(BOX, (x[1] - x[0], y[1] - y[0], side.curb_height), center), "sidewalk", material)


def grass_height(side: Side, amplitude: float, seed: int, inner: float, outer: float = np.inf) -> object:
    """Height field of grass between `inner` and `outer` (distances from the centre line): just under the
    paving at its edges, hidden below the slabs it meets, rising into gentle bumps away from them."""

    def height(xy: np.ndarray) -> np.ndarray:
        distance = np.abs(xy[:, 1])
        ramp = np.clip(np.minimum(distance - inner, outer - distance), 0, 1)
        return side.curb_height - 0.01 + amplitude * ramp * value_noise(xy / 3.0, seed + side.sign)

    return height


def add_ground(b: SceneBuilder, rng: np.random.Generator, sides: list[Side], x: Range, seed: int) -> None:
    """Road, curbs, sidewalks and grass. Surfaces overlap a little under each other so that no ray slips
    through a seam into the void."""
    u = rng.uniform
    grey = u(0.24, 0.36)
    asphalt = b.material(Texture.ASPHALT, (grey, grey, grey * 1.03), reflectivity=u(0.08, 0.16))
    b.add_rectangles(
        [[x[0], x[1], -sides[1].road_edge - 0.3, sides[0].road_edge + 0.3]], 0.0, "road", asphalt
    )
    for side in sides:
        s = side.sign
        kind = rng.choice(["concrete", "brick", "asphalt"], p=[0.55, 0.25, 0.2])
        if kind == "concrete":
            tone = u(0.58, 0.72)
            paving = b.material(
                Texture.PAVING,
                (tone, tone, tone * 0.97),
                (tone * 0.7,) * 3,
                u(0.18, 0.35),
                0,
                (u(0.3, 0.6), 0.012),
            )
        elif kind == "brick":
            paving = b.material(
                Texture.PAVING, (0.55, 0.32, 0.26), (0.4, 0.38, 0.36), u(0.18, 0.3), 0, (u(0.2, 0.3), 0.01)
            )
        else:
            tone = u(0.3, 0.4)
            paving = b.material(Texture.ASPHALT, (tone, tone, tone), reflectivity=u(0.1, 0.2))
        curb = b.material(Texture.PLAIN, (0.68, 0.68, 0.66), reflectivity=0.3)
        green = np.array([0.26, 0.42, 0.16]) * u(0.8, 1.2, 3)
        grass = b.material(Texture.GRASS, green, (0.52, 0.48, 0.3), u(0.25, 0.5))

        if side.lawn:
            add_slab(b, side, x, (side.road_edge, side.lawn[0]), curb)
            lawn = (s * (side.lawn[0] - 0.05), s * (side.lawn[1] + 0.05))
            b.add_grid(x, lawn, 0.5, grass_height(side, 0.03, seed, *side.lawn), "terrain", grass)
            add_slab(b, side, x, side.sidewalk, paving)
        else:
            add_slab(b, side, x, (side.road_edge, side.road_edge + 0.2), curb)
            add_slab(b, side, x, (side.road_edge + 0.2, side.sidewalk[1]), paving)
        outer = (s * (side.sidewalk[1] - 0.1), s * (side.sidewalk[1] + 70.0))
        b.add_grid(x, outer, 1.0, grass_height(side, 0.08, seed, side.sidewalk[1]), "terrain", grass)


def add_markings(
    b: SceneBuilder,
    rng: np.random.Generator,
    lanes: int,
    lane_width: float,
    parking: dict,
    x: Range,
) -> None:
    """Paint 4 mm proud of the asphalt: same geometry for the LiDAR, another colour and reflectivity."""
    white = b.material(Texture.PAINT, (0.9, 0.9, 0.87), reflectivity=rng.uniform(0.5, 0.75))
    yellow = b.material(Texture.PAINT, (0.9, 0.75, 0.2), reflectivity=rng.uniform(0.45, 0.7))
    z, width = 0.004, rng.uniform(0.1, 0.15)
    dash, gap = rng.uniform(2.5, 3.5), rng.uniform(5.0, 7.0)
    starts = np.arange(x[0], x[1] - dash, dash + gap)

    def solid(y: float) -> list[list[float]]:
        return [[x[0], x[1], y - width / 2, y + width / 2]]

    def dashed(y: float) -> list[list[float]]:
        return [[start, start + dash, y - width / 2, y + width / 2] for start in starts]

    rects = []
    if rng.random() < 0.5:  # double yellow centre line
        b.add_rectangles(solid(-0.12) + solid(0.12), z, "lane_marking", yellow)
    else:
        rects += dashed(0.0)
    for i in range(1, lanes):
        rects += dashed(i * lane_width) + dashed(-i * lane_width)
    for sign in (1, -1):
        rects += solid(sign * (lanes * lane_width - (0.0 if parking[sign] else 0.3)))
    b.add_rectangles(rects, z, "lane_marking", white)


def add_crosswalk(
    b: SceneBuilder, rng: np.random.Generator, x: float, lanes: int, lane_width: float, ego_lane: int
) -> None:
    """Zebra stripes across the traffic lanes, a stop line before them, people crossing (not in the ego
    lane)."""
    white = b.material(Texture.PAINT, (0.92, 0.92, 0.9), reflectivity=rng.uniform(0.5, 0.75))
    half = lanes * lane_width
    stripes = np.arange(-half + 0.25, half - 0.5, 1.0)
    depth = rng.uniform(2.5, 4.0)
    rects = [[x, x + depth, y, y + 0.5] for y in stripes]
    rects.append([x - 1.5, x - 1.1, -half, 0.0])
    b.add_rectangles(rects, 0.004, "lane_marking", white)
    ego = (-(ego_lane + 1) * lane_width - 0.5, -ego_lane * lane_width + 0.5)
    for y in rng.uniform(-half, half, int(rng.integers(0, 4))):
        if not ego[0] < y < ego[1]:
            add_pedestrian(b, rng, x + rng.uniform(0.3, depth - 0.3), y, rng.choice([-np.pi / 2, np.pi / 2]))


def add_roadside(b: SceneBuilder, rng: np.random.Generator, sc: SceneConfig, side: Side, x: Range) -> None:
    """Street furniture, trees, pedestrians, yards, fences and buildings on one side."""
    s, u, spacing = side.sign, rng.uniform, sc.spacing_m
    toward_road = -s * np.pi / 2
    curb_zone = side.furniture
    tree_lined = side.lawn is not None or rng.random() < 0.5
    if tree_lined:
        tree_y = np.mean(side.lawn) if side.lawn else side.road_edge + 0.9
        for position, _ in walk(rng, *x, spacing["street_tree"]):
            add_tree(b, rng, position, s * tree_y)
    for position, _ in walk(rng, *x, spacing["street_lamp"]):
        add_lamp(b, rng, position, s * curb_zone, toward_road)
    # Signs face the traffic that drives towards them on this side: +x traffic on the right, -x on the left.
    facing = np.pi if s < 0 else 0.0
    for position, _ in walk(rng, *x, spacing["sign"]):
        turn = rng.choice([0.0, np.pi, toward_road - facing], p=[0.7, 0.15, 0.15])
        add_sign(b, rng, position, s * (curb_zone + u(-0.1, 0.2)), facing + turn)
    for position, _ in walk(rng, *x, spacing["post"]):
        add_post(b, rng, position, s * (curb_zone + u(-0.15, 0.15)))
    walking = (side.sidewalk[0] + 0.4, side.sidewalk[1] - 0.4)
    if side.lawn is None:
        walking = (max(walking[0], side.road_edge + 1.0), walking[1])
    for position, _ in walk(rng, *x, spacing["pedestrian"]):
        along_the_street = rng.random() < 0.8
        yaw = rng.choice([0.0, np.pi]) + u(-0.3, 0.3) if along_the_street else u(-np.pi, np.pi)
        add_pedestrian(b, rng, position, s * u(*walking), yaw)

    base, start = side.curb_height, x[0]
    while start < x[1]:
        width, depth, height = u(*sc.building_width_m), u(*sc.building_depth_m), u(*sc.building_height_m)
        setback = side.facade + u(0.0, 1.5)
        add_building(
            b, rng, (start, start + width), (s * setback, s * (setback + depth)), height, rng.random() < 0.4
        )
        if side.yard_depth > 1.0 and rng.random() < sc.fence:
            add_fence(b, rng, (start, start + width), s * (side.sidewalk[1] + 0.15), base)
        elif side.yard_depth > 1.5 and rng.random() < 0.3:
            add_bush(b, rng, start + width / 2, s * (side.sidewalk[1] + 0.6), base, length=width * 0.8)
        if side.yard_depth > 1.5:
            for bush_x, _ in walk(rng, start, start + width, spacing["bush"]):
                add_bush(b, rng, bush_x, s * (setback - u(0.6, min(side.yard_depth, 3.0))), base)
        start += width
        if rng.random() < sc.building_gap:  # an alley or a garden
            gap = u(3.0, 12.0)
            if gap > 5.0:
                add_tree(b, rng, start + gap / 2, s * (setback + u(1.0, 4.0)))
            add_bush(b, rng, start + gap / 2, s * (setback + u(0.0, 3.0)), base)
            start += gap
    for position, _ in walk(rng, *x, spacing["yard_tree"]):
        if side.yard_depth > 3.0:
            add_tree(b, rng, position, s * (side.sidewalk[1] + u(1.5, side.yard_depth - 1.0)))
    for start, width in walk(rng, *x, (0.0, 6.0), (15.0, 40.0)):  # the second row, behind
        setback = side.facade + u(25.0, 40.0)
        add_building(
            b, rng, (start, start + width), (s * setback, s * (setback + 20.0)), u(10.0, 45.0), False
        )


def add_traffic(
    b: SceneBuilder,
    rng: np.random.Generator,
    sc: SceneConfig,
    lanes: int,
    lane_width: float,
    ego_lane: int,
    parking: dict,
    x: Range,
    crosswalks: np.ndarray,
) -> None:
    """Stationary vehicles in every lane but the ego's, parked vehicles, cyclists in the outer lanes."""
    spacing = sc.spacing_m
    bands = []  # (lateral centre, yaw, mix, gaps between vehicles, cyclists ride here)
    for i in range(lanes):
        bands.append(((i + 0.5) * lane_width, np.pi, sc.vehicle_mix, spacing["vehicle"], i == lanes - 1))
        if i != ego_lane:
            bands.append((-(i + 0.5) * lane_width, 0.0, sc.vehicle_mix, spacing["vehicle"], i == lanes - 1))
    for sign, width in parking.items():
        if width:
            y, yaw = sign * (lanes * lane_width + width / 2), np.pi if sign > 0 else 0.0
            bands.append((y, yaw, sc.parked_mix, spacing["parked"], False))
    for y, yaw, mix, gaps, cyclists in bands:
        busy = [(c - 2.0, c + 6.0) for c in crosswalks]  # keep the crossings clear
        if cyclists:
            outward = np.sign(y) * (lane_width / 2 - 0.8)
            for position, _ in walk(rng, *x, spacing["cyclist"]):
                add_cyclist(b, rng, position, y + outward, yaw + rng.uniform(-0.1, 0.1))
                busy.append((position - 3.0, position + 3.0))
        start = x[0] + rng.uniform(0, gaps[1])
        while start < x[1]:
            kind = mix_choice(rng, mix)
            length = rng.uniform(*VEHICLE_LENGTH[kind])
            if not any(low < start + length and start < high for low, high in busy):
                center, lateral = start + length / 2, y + rng.uniform(-0.2, 0.2)
                VEHICLES[kind](b, rng, center, lateral, yaw + rng.uniform(-0.04, 0.04), length)
            start += length + rng.uniform(*gaps)
