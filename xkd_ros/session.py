"""A recorded session read back (rosbags, no DDS): one labelled scan as the node published it, the camera
images recorded with it, and the picture of them that shows what rviz or Foxglove would.

The recording is the mcap that `xkd-demo` and `xkd-evaluate --live --record` write (xkd_ros.evaluate.live):
the labelled cloud `<node>/output/labeled_cloud` with its packed `rgb` class colours, the replayed camera
images and CameraInfo, and /tf_static. The cameras are found the way image_transport names them
(`<ns>/camera_info` beside `<ns>/image_raw[/compressed]`, the camera named by the last token of `<ns>`); their
calibration is the recorded CameraInfo and /tf_static (the LiDAR -> camera transforms), or a rig where the
recording lacks /tf_static. Nothing is recomputed: the colours are those the node put into the cloud.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.rosbag2 import Reader

from xkd_ros.data.messages import header_ns, rgb_from_image
from xkd_ros.data.render import label_text, render_bev, render_cameras
from xkd_ros.data.rosbag import TYPESTORE, add_static_transforms, cdr_header, transform_between
from xkd_ros.geometry import Rig, project_points
from xkd_ros.msgs import rig_from_camera_infos
from xkd_ros.msgs.labeled_cloud import unpack_rgb
from xkd_ros.msgs.point_cloud2 import PointCloud2Error, read_points

__all__ = ["LabelledScan", "SessionError", "read_labelled_scan", "session_picture", "write_session_picture"]

NS_PER_S = 1_000_000_000
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_STATIC = "/tf_static"


class SessionError(ValueError):
    """The recording lacks what the picture needs; the text names the bag and the topic."""


@dataclass
class LabelledScan:
    """One labelled cloud of a recording: its points (finite ones), class colours and labels; the camera
    images nearest to its stamp, and the rig they are drawn with (None: no calibration recorded or given)."""

    stamp_ns: int
    frame_id: str
    xyz: np.ndarray  # (N, 3) float32
    rgb: np.ndarray  # (N, 3) uint8, from the cloud's packed rgb field
    labels: np.ndarray  # (N,) uint8
    images: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> RGB
    rig: Rig | None = None


def _camera_topics(types: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """camera -> (image topic, CameraInfo topic) by image_transport's naming."""
    cameras = {}
    for info, msgtype in sorted(types.items()):
        if msgtype != CAMERA_INFO or not info.endswith("/camera_info"):
            continue
        namespace = info.removesuffix("/camera_info")
        images = [t for t, m in types.items() if m in IMAGE_TYPES and t.startswith(namespace + "/")]
        if images:
            cameras[namespace.rsplit("/", 1)[-1]] = (min(images, key=len), info)
    return cameras


def _tf_parents(reader: Reader, connections: list[Any]) -> dict[str, tuple[str, np.ndarray]]:
    """child frame -> (parent frame, T_parent_child) from /tf_static."""
    parents: dict[str, tuple[str, np.ndarray]] = {}
    if not connections:  # rosbags reads every topic for an empty list
        return parents
    for connection, _, raw in reader.messages(connections=connections):
        add_static_transforms(parents, TYPESTORE.deserialize_cdr(raw, connection.msgtype))
    return parents


def read_labelled_scan(
    bag: str | Path, node: str = "/segment", index: int = 0, rig: Rig | None = None
) -> LabelledScan:
    """Labelled cloud number `index` (in recording order) of `node` in the recording `bag`, with the
    camera images nearest to its stamp; calibration from the recorded CameraInfo and /tf_static, else
    `rig`."""
    bag = Path(bag)
    cloud_topic = f"/{node.strip('/')}/output/labeled_cloud"
    with Reader(bag if bag.is_dir() else bag.parent) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        by_topic: dict[str, list[Any]] = {}
        for connection in reader.connections:
            by_topic.setdefault(connection.topic, []).append(connection)
        if cloud_topic not in by_topic:
            raise SessionError(f"{bag}: no {cloud_topic} in the recording")
        clouds = list(reader.messages(connections=by_topic[cloud_topic]))
        if not -len(clouds) <= index < len(clouds):
            raise SessionError(f"{bag}: {cloud_topic}: no labelled cloud #{index} ({len(clouds)} recorded)")
        connection, _, raw = clouds[index]
        cloud = TYPESTORE.deserialize_cdr(raw, connection.msgtype)
        try:
            points = read_points(cloud, ["x", "y", "z", "label", "rgb"])
        except PointCloud2Error as error:
            raise SessionError(f"{bag}: {cloud_topic}: not a labelled cloud: {error}") from None
        xyz = np.column_stack([points["x"], points["y"], points["z"]]).astype(np.float32)
        finite = np.isfinite(xyz).all(axis=1)
        scan = LabelledScan(
            header_ns(cloud.header),
            cloud.header.frame_id,
            xyz[finite],
            unpack_rgb(points["rgb"][finite]),
            np.asarray(points["label"][finite], dtype=np.uint8),
        )
        cameras = _camera_topics(types)
        order = {name: i for i, name in enumerate(rig.names if rig is not None else ())}
        # the rig's order, as the other pictures show the cameras; by name where there is no rig
        cameras = dict(sorted(cameras.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))
        parents = _tf_parents(reader, by_topic.get(TF_STATIC, []))
        infos, extrinsics = {}, {}
        for camera, (image_topic, info_topic) in cameras.items():
            nearest, distance = None, None  # only the nearest image is deserialised
            for conn, _, raw in reader.messages(connections=by_topic[image_topic]):
                try:
                    gap = abs(cdr_header(raw)[0] - scan.stamp_ns)
                except ValueError:  # a damaged message: not the one to draw
                    continue
                if distance is None or gap < distance:
                    nearest, distance = (conn, raw), gap
            if nearest is None:
                continue
            scan.images[camera] = rgb_from_image(TYPESTORE.deserialize_cdr(nearest[1], nearest[0].msgtype))
            for conn, _, raw in reader.messages(connections=by_topic[info_topic]):
                infos[camera] = TYPESTORE.deserialize_cdr(raw, conn.msgtype)
                break
            if camera in infos:
                T = transform_between(parents, infos[camera].header.frame_id, scan.frame_id)
                if T is not None:
                    extrinsics[camera] = T
    if scan.images and set(extrinsics) >= set(scan.images) and set(infos) >= set(scan.images):
        ordered = {camera: infos[camera] for camera in scan.images}
        scan.rig = rig_from_camera_infos(ordered, extrinsics, scan.frame_id)
    elif rig is not None:
        scan.rig = rig
        scan.images = {camera: image for camera, image in scan.images.items() if camera in rig.names}
    return scan


def session_picture(scan: LabelledScan, title: str = "", tile_width: int = 480) -> np.ndarray:
    """BGR picture of a labelled scan as a viewer shows it: the bird's-eye view coloured by the cloud's
    rgb field and, where calibration is known, the points drawn into the camera images (occlusion test as
    the pipeline's)."""
    if scan.rig is None or not scan.images:
        bev = render_bev(scan.xyz, scan.rgb, size=600)
        label_text(bev, title or f"{scan.frame_id} @ {scan.stamp_ns / NS_PER_S:.3f} s", origin=(8, 590))
        return bev
    projection = project_points(scan.xyz, scan.rig, occlusion="footprint")
    images = {camera: scan.images[camera] for camera in scan.rig.names if camera in scan.images}
    mosaic = render_cameras(images, projection, scan.rgb, tile_width)
    bev = render_bev(scan.xyz, scan.rgb, size=mosaic.shape[0])
    label_text(
        bev, title or f"{scan.frame_id} @ {scan.stamp_ns / NS_PER_S:.3f} s", origin=(8, bev.shape[0] - 12)
    )
    return np.hstack([mosaic, bev])


def write_session_picture(bag: str | Path, out: str | Path, node: str = "/segment", **kwargs: Any) -> Path:
    """read_labelled_scan + session_picture, written as a PNG; returns `out`."""
    scan = read_labelled_scan(bag, node, **kwargs)
    out = Path(out)
    cv2.imwrite(str(out), session_picture(scan))
    return out
