"""Pictures of a frame: camera images with projected points, and a bird's-eye view of the scan.

Used by the demo, the docs and the evaluation; everything is numpy + OpenCV, points painted in bulk.
"""

from __future__ import annotations

import cv2
import numpy as np

from xkd_ros.classes import load_class_set
from xkd_ros.data.frame import Frame
from xkd_ros.geometry import Projection, Rig, project_points

MAX_DEPTH_COLOURED = 40.0  # metres mapped onto the turbo colour map


def depth_colours(depth: np.ndarray) -> np.ndarray:
    """RGB uint8 turbo colour per depth, 0 to 40 m."""
    scaled = np.clip(depth / MAX_DEPTH_COLOURED * 255, 0, 255).astype(np.uint8)[:, None]
    return cv2.applyColorMap(scaled, cv2.COLORMAP_TURBO)[:, 0, ::-1]


def paint_points(bgr: np.ndarray, uv: np.ndarray, rgb: np.ndarray, radius: int = 2) -> None:
    """Paint squares of side 2*radius+1 at pixel coordinates uv in place; later points cover earlier ones."""
    height, width = bgr.shape[:2]
    centre = np.rint(uv).astype(np.int64)
    colours = np.ascontiguousarray(rgb[:, ::-1])
    for dv in range(-radius, radius + 1):
        for du in range(-radius, radius + 1):
            u, v = centre[:, 0] + du, centre[:, 1] + dv
            inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
            bgr[v[inside], u[inside]] = colours[inside]


def label_text(image: np.ndarray, text: str, origin: tuple[int, int] = (8, 24), scale: float = 0.7) -> None:
    """White text on a dark box: legible on sky and road alike."""
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = origin
    image[max(y - height - 4, 0) : y + baseline + 2, max(x - 4, 0) : x + width + 4] //= 3
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def render_cameras(
    images: dict[str, np.ndarray],
    projection: Projection,
    point_colours: np.ndarray | None = None,
    tile_width: int = 800,
    columns: int = 3,
) -> np.ndarray:
    """BGR mosaic of the RGB camera images with the points each sees: `point_colours` (N, 3) RGB per point,
    or, when None, coloured by depth. Far points are painted first so that near ones stay visible."""
    tiles = []
    for name, rgb in images.items():
        index, uv, depth = projection.visible(name)
        order = np.argsort(-depth)
        colours = depth_colours(depth) if point_colours is None else point_colours[index]
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        paint_points(bgr, uv[order], colours[order], radius=max(1, rgb.shape[1] // 500))
        scale = tile_width / bgr.shape[1]
        tile = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        label_text(tile, f"{name}: {len(index)} pts")
        tiles.append(tile)
    columns = min(columns, len(tiles))
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
    return np.vstack([np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)])


def render_bev(
    xyz: np.ndarray, point_colours: np.ndarray, size: int = 600, extent: float = 50.0
) -> np.ndarray:
    """BGR bird's-eye view within +-extent metres in the LiDAR frame (x up, y left), rings every 10 m."""
    bev = np.full((size, size, 3), 20, dtype=np.uint8)
    scale = size / (2 * extent)
    centre = size / 2
    for ring in range(10, int(extent) + 1, 10):
        cv2.circle(bev, (int(centre), int(centre)), int(ring * scale), (60, 60, 60), 1, cv2.LINE_AA)
    order = np.argsort(xyz[:, 2])  # higher points on top
    uv = np.column_stack([centre - xyz[order, 1] * scale, centre - xyz[order, 0] * scale])
    paint_points(bev, uv, point_colours[order], radius=1)
    cv2.rectangle(
        bev, (int(centre - 5), int(centre - 10)), (int(centre + 5), int(centre + 10)), (255, 255, 255), 1
    )
    label_text(bev, f"LiDAR x up, {2 * extent:.0f} m")
    return bev


def render_frame(
    frame: Frame, rig: Rig | None = None, tile_width: int = 480, occlusion: str | None = "footprint"
) -> np.ndarray:
    """The frame's cameras with projected points and, beside them, its bird's-eye view (BGR).

    Points are coloured by class when the frame has labels, else by depth (cameras) and height (BEV).
    Projection uses `rig`, by default the motion-compensated rig of the frame, and the occlusion test the
    pipeline uses (`project_points`' occlusion: "footprint", "cell" or None for none).
    """
    rig = rig or frame.compensated_rig()
    projection = project_points(frame.xyz, rig, occlusion=occlusion)
    if frame.labels is not None:
        colours = load_class_set(frame.classes).colorize(frame.labels)
        mosaic = render_cameras(frame.images, projection, colours, tile_width)
    else:
        colours = depth_colours(np.clip(frame.xyz[:, 2] + 2.0, 0, 4) * MAX_DEPTH_COLOURED / 4)
        mosaic = render_cameras(frame.images, projection, None, tile_width)
    bev = render_bev(frame.xyz, colours, size=mosaic.shape[0])
    return np.hstack([mosaic, bev])
