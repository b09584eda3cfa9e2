"""A Frame as the ROS messages a robot publishes, and messages back into a Frame.

The one conversion the demo, the rosbag2 writer and reader, and the node share. Messages are created with
xkd_ros.msgs (rclpy classes); reading is duck-typed, so rosbags-deserialised messages work alike.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from xkd_ros.classes import IGNORE_INDEX, load_class_set
from xkd_ros.data.frame import RING, Frame
from xkd_ros.geometry import Rig
from xkd_ros.msgs import CvBridge, create_cloud, dtype_from_fields, intrinsics_to_camera_info, read_points
from xkd_ros.msgs.image import check_png_chunks

ImageFormat = Literal["raw", "jpeg", "png"]
LABEL_FIELD = "label"
XYZ = ("x", "y", "z")
NS_PER_S = 1_000_000_000
_BRIDGE = CvBridge()
_REDUCED_DECODE = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


class MessageError(ValueError):
    """A message cannot become part of a Frame; the text names where it came from and what is wrong."""


def stamp_to_ns(seconds: float) -> int:
    """Nanoseconds of a stamp, from its shortest decimal form: data sets give stamps in decimal micro- or
    milliseconds (1581624663.149), which the float only approximates (...663.14899992...)."""
    return round(Decimal(repr(float(seconds))) * NS_PER_S)


def ns_to_stamp(ns: int) -> float:
    """Seconds of a nanosecond stamp, correctly rounded, so that ns_to_stamp(stamp_to_ns(s)) == s."""
    return int(ns) / NS_PER_S


def header_at(seconds: float, frame_id: str) -> Header:
    sec, nanosec = divmod(stamp_to_ns(seconds), NS_PER_S)
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def header_ns(header: Any) -> int:
    """Nanoseconds of a message header's stamp (rclpy or rosbags): exact, a key to pair messages by."""
    return int(header.stamp.sec) * NS_PER_S + int(header.stamp.nanosec)


def header_stamp(header: Any) -> float:
    """Seconds of a message header (rclpy or rosbags)."""
    return ns_to_stamp(header_ns(header))


def point_fields(channels: Sequence[str]) -> list[PointField]:
    """Packed fields for a frame's channels: ring as uint16 (as Velodyne and Ouster drivers publish it), the
    others float32."""
    fields, offset = [], 0
    for name in channels:
        datatype, size = (PointField.UINT16, 2) if name == RING else (PointField.FLOAT32, 4)
        fields.append(PointField(name=name, offset=offset, datatype=datatype, count=1))
        offset += size
    return fields


def _cloud(header: Header, fields: list[PointField], columns: Sequence[np.ndarray]) -> PointCloud2:
    points = np.empty(len(columns[0]), dtype=dtype_from_fields(fields))
    for name, column in zip(points.dtype.names, columns, strict=True):
        points[name] = column
    cloud = create_cloud(header, fields, points)
    cloud.is_dense = not any(np.isnan(points[axis]).any() for axis in XYZ)
    return cloud


@dataclass
class FrameMessages:
    """What a sensor stack publishes for one frame; cameras keyed by the rig's names."""

    cloud: PointCloud2
    images: dict[str, Image | CompressedImage] = field(default_factory=dict)
    camera_infos: dict[str, CameraInfo] = field(default_factory=dict)
    label_cloud: PointCloud2 | None = None


def frame_to_messages(frame: Frame, image_format: ImageFormat = "raw") -> FrameMessages:
    """The frame's scan as a PointCloud2 (channels as fields), each image as an rgb8 Image or a jpeg/png
    CompressedImage with its CameraInfo (image stamp, camera frame_id), and its labels, if any, as a
    PointCloud2 of x, y, z and a uint8 `label` field (training ids) stamped like the scan."""
    where = frame.name or "frame"
    if RING in frame.channels:
        ring = frame.channel(RING)
        if not np.array_equal(ring, np.clip(np.round(ring), 0, np.iinfo(np.uint16).max)):
            raise MessageError(f"{where}: ring: not whole numbers in 0..65535, cannot be uint16")
    header = header_at(frame.stamp, frame.rig.lidar_frame)
    cloud = _cloud(header, point_fields(frame.channels), list(frame.points.T))
    label_cloud = None
    if frame.labels is not None:
        fields = [
            *point_fields(XYZ),
            PointField(name=LABEL_FIELD, offset=12, datatype=PointField.UINT8, count=1),
        ]
        label_cloud = _cloud(header, fields, [*frame.xyz.T, frame.labels])
    messages = FrameMessages(cloud, label_cloud=label_cloud)
    for name, rgb in frame.images.items():
        camera = frame.rig[name]
        image_header = header_at(frame.image_stamps.get(name, frame.stamp), camera.frame_id)
        if image_format == "raw":
            image = _BRIDGE.cv2_to_imgmsg(rgb, "rgb8", header=image_header)
        else:
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            image = _BRIDGE.cv2_to_compressed_imgmsg(bgr, {"jpeg": "jpg", "png": "png"}[image_format])
            image.header = image_header
            image.format = f"rgb8; {image_format} compressed bgr8"  # compressed_image_transport's convention
        messages.images[name] = image
        messages.camera_infos[name] = intrinsics_to_camera_info(camera.intrinsics, image_header)
    return messages


def points_from_cloud(
    cloud: Any, where: str, fields: Collection[str] | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """(N, C) float32 points and their channel names: x, y, z, then the cloud's other fields in order.

    `fields` keeps only those of the other fields (the ones a consumer uses, e.g. intensity and ring), so a
    cloud with thousands of fields costs what its x, y, z and those cost, not an (N, fields) array; the
    fields left out are not even parsed."""
    if fields is not None:
        wanted = {*XYZ, *fields}
        cloud = _FieldSubset(cloud, [f for f in cloud.fields if f.name in wanted])
    structured = read_points(cloud)
    names = structured.dtype.names
    if not set(XYZ) <= set(names):
        raise MessageError(f"{where}: fields {names} lack x, y, z")
    channels = (*XYZ, *(name for name in names if name not in XYZ))
    points = np.empty((len(structured), len(channels)), dtype=np.float32)
    for k, name in enumerate(channels):
        points[:, k] = structured[name]
    return points, channels


class _FieldSubset:
    """A PointCloud2 seen with some of its fields only (read_points is duck-typed): the same bytes."""

    def __init__(self, cloud: Any, fields: list[Any]) -> None:
        self._cloud = cloud
        self.fields = fields

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cloud, name)


def rgb_from_image(msg: Any, reduction: int = 1) -> np.ndarray:
    """An Image or CompressedImage message as a writable RGB array.

    `reduction` 2, 4 or 8 decodes a CompressedImage at that fraction of its size (libjpeg's scaled decoding:
    half the work for a 1600x900 JPEG at 2); an Image is always returned whole.
    """
    if hasattr(msg, "format"):
        if reduction == 1:
            return _BRIDGE.compressed_imgmsg_to_cv2(msg, "rgb8")
        if reduction not in _REDUCED_DECODE:
            raise ValueError(f"reduction: {reduction} is not one of {sorted(_REDUCED_DECODE)}")
        buf = np.frombuffer(msg.data, dtype=np.uint8)
        check_png_chunks(buf)  # OpenCV sizes a PNG chunk's buffer from its declared length
        try:
            bgr = cv2.imdecode(buf, _REDUCED_DECODE[reduction])
        except cv2.error:  # an empty buffer
            bgr = None
        if bgr is None:
            raise MessageError(
                f"CompressedImage field `data` ({buf.size} bytes, format {msg.format!r}) could not be decoded"
            )
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    rgb = _BRIDGE.imgmsg_to_cv2(msg, "rgb8")
    return rgb if rgb.flags.writeable else rgb.copy()  # a view on a read-only buffer otherwise


class SequenceGaps:
    """Messages of one topic that were published but never taken: the gaps in each publisher's sequence
    numbers (rclpy's MessageInfo). A queue of depth 1 that a busy subscriber does not empty in time is
    overwritten in the middleware without a trace; this is where such losses become a count.

    Only gaps after a publisher's first message count (what it sent before it was matched was never due),
    and middlewares that give no sequence number (0 or None) count nothing."""

    MAX_PUBLISHERS = 64  # publishers that come and go (a looping player) do not grow the table

    def __init__(self) -> None:
        self.lost = 0
        self._last: dict[bytes, int] = {}

    def add(self, info: Mapping[str, Any]) -> int:
        """Account for one message; returns how many of its publisher's messages were lost before it."""
        sequence = info.get("publication_sequence_number")
        if not isinstance(sequence, int) or sequence <= 0:
            return 0
        gid = info.get("publisher_gid")
        publisher = bytes(gid.get("data", b"")) if isinstance(gid, Mapping) else b""
        last = self._last.pop(publisher, None)
        self._last[publisher] = sequence if last is None else max(last, sequence)
        if len(self._last) > self.MAX_PUBLISHERS:
            del self._last[next(iter(self._last))]  # the one heard from longest ago
        if last is None or sequence <= last:
            return 0
        self.lost += sequence - last - 1
        return sequence - last - 1


def labels_from_cloud(cloud: Any, num_points: int, classes: str, where: str) -> np.ndarray:
    """The uint8 `label` field of a label cloud, checked: one per scan point, training ids of `classes`."""
    names = [f.name for f in cloud.fields]
    if LABEL_FIELD not in names:
        raise MessageError(f"{where}: no {LABEL_FIELD!r} field (fields: {names})")
    ids = read_points(cloud, [LABEL_FIELD])[LABEL_FIELD]
    if len(ids) != num_points:
        raise MessageError(f"{where}: {len(ids)} labels for the {num_points} points of the scan")
    class_set = load_class_set(classes)
    known = (ids == IGNORE_INDEX) | ((ids >= 0) & (ids < class_set.num_classes))
    if not known.all():
        unknown = np.unique(ids[~known])[:10].tolist()
        raise MessageError(
            f"{where}: label id(s) {unknown} are not training ids of class set {class_set.name!r} "
            f"(0..{class_set.num_classes - 1}, {IGNORE_INDEX} = ignore)"
        )
    return ids.astype(np.uint8)


def frame_from_messages(
    cloud: Any,
    images: Mapping[str, Any],
    rig: Rig,
    label_cloud: Any | None = None,
    classes: str | None = None,
    name: str = "",
) -> Frame:
    """A Frame from a scan, the images matched to it (camera name -> message) and the rig; stamps come from
    the headers. `where`-style errors name `name` and the part at fault."""
    where = name or "frame"
    points, channels = points_from_cloud(cloud, f"{where}: cloud")
    labels = None
    if label_cloud is not None:
        if classes is None:
            raise MessageError(f"{where}: a label cloud but no class set to read it with")
        labels = labels_from_cloud(label_cloud, len(points), classes, f"{where}: label cloud")
    return Frame(
        points=points,
        channels=channels,
        rig=rig,
        images={camera: rgb_from_image(msg) for camera, msg in images.items()},
        labels=labels,
        classes=classes if labels is not None else None,
        stamp=header_stamp(cloud.header),
        image_stamps={camera: header_stamp(msg.header) for camera, msg in images.items()},
        name=name,
    )
