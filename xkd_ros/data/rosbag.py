"""rosbag2 recordings <-> Frames: `write_bag` turns frames into a bag a robot could have recorded, and
`RosbagDataset` reads such a bag, or any bag with a LiDAR and cameras, as a sequence of Frames.

Layout written by `write_bag` (names from `BagTopics`; message log times are the header stamps):

    /lidar/points                      sensor_msgs/PointCloud2: x, y, z, intensity (float32), ring (uint16),
                                       time (float32), ... as the frame's channels; frame_id = rig.lidar_frame
    /lidar/labels                      PointCloud2 x, y, z (float32), label (uint8 training id), scan stamp
    /cameras/<name>/image_raw          sensor_msgs/Image rgb8 (or .../image_raw/compressed: CompressedImage
                                       jpeg or png), stamped with that camera's image stamp and frame_id
    /cameras/<name>/camera_info        sensor_msgs/CameraInfo, one per image, same header
    /tf_static                         tf2_msgs/TFMessage, once: lidar_frame -> each camera frame_id
    rig.yaml, xkd.yaml                 in the bag folder: the rig (Rig.save) and which topics make a Frame

Each frame's messages come from xkd_ros.data.messages (the one Frame <-> ROS messages conversion) and are
serialised by rclpy, so these are the bytes ROS itself records. The rosbags typestore (ROS 2 Kilted) builds
only /tf_static (no tf2_msgs for rclpy here) and reads bags, ours and those recorded by ROS alike.

A bag is data, never code: reading deserialises only the fixed sensor types above with that typestore and
imports nothing a bag names. A corrupt bag (truncated, damaged storage, type names or message counts in its
metadata that its storage does not bear out, a broken xkd.yaml or rig.yaml) is a RosbagError naming the bag
and what is wrong, never an exception from the storage libraries.
"""

from __future__ import annotations

import itertools
import shutil
import struct
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import yaml
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from xkd_ros.classes import load_class_set
from xkd_ros.data.frame import Frame
from xkd_ros.data.messages import (
    LABEL_FIELD,
    NS_PER_S,
    ImageFormat,
    MessageError,
    frame_to_messages,
    header_ns,
    labels_from_cloud,
    ns_to_stamp,
    points_from_cloud,
    rgb_from_image,
    stamp_to_ns,
)
from xkd_ros.geometry import (
    CalibrationError,
    LidarProfile,
    Rig,
    invert_transform,
    transform_from_quaternion,
)
from xkd_ros.geometry.transforms import quaternion_from_rotation
from xkd_ros.msgs import rig_from_camera_infos

__all__ = [
    "BagTopics",
    "RosbagDataset",
    "RosbagError",
    "add_static_transforms",
    "cdr_header",
    "transform_between",
    "write_bag",
]

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
_MSG = TYPESTORE.types

POINT_CLOUD2 = "sensor_msgs/msg/PointCloud2"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
TF_STATIC = "/tf_static"
SIDECAR = "xkd.yaml"
RIG_FILE = "rig.yaml"

StorageName = Literal["mcap", "sqlite3"]
_STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_IMAGE_FORMATS: tuple[str, ...] = get_args(ImageFormat)
# Latched, as tf2's static broadcaster publishes it, so that `ros2 bag play` serves late subscribers.
_TF_STATIC_QOS = Qos(
    QosHistory.KEEP_LAST,
    1,
    QosReliability.RELIABLE,
    QosDurability.TRANSIENT_LOCAL,
    QosTime(0, 0),
    QosTime(0, 0),
    QosLiveliness.AUTOMATIC,
    QosTime(0, 0),
    False,
)


class RosbagError(ValueError):
    """A bag, or a topic in it, cannot make Frames; the message names the bag, the topic and what is wrong."""


@dataclass(frozen=True)
class BagTopics:
    """Topic names `write_bag` uses; camera topics follow image_transport's <namespace>/image_raw[/compressed]
    and <namespace>/camera_info convention, which `RosbagDataset` relies on to pair images with CameraInfo."""

    lidar: str = "/lidar/points"
    labels: str = "/lidar/labels"
    camera_namespace: str = "/cameras/{camera}"

    def image(self, camera: str, compressed: bool = False) -> str:
        base = f"{self.camera_namespace.format(camera=camera)}/image_raw"
        return f"{base}/compressed" if compressed else base

    def camera_info(self, camera: str) -> str:
        return f"{self.camera_namespace.format(camera=camera)}/camera_info"


def cdr_header(raw: bytes | memoryview) -> tuple[int, str]:
    """(stamp in ns, frame_id) of a serialised message whose first field is a std_msgs/Header.

    Indexing reads the header of every scan and image; this skips deserialising megabytes of pixels.
    CDR: a 4-byte encapsulation header (byte 1: 1 = little endian), int32 sec, uint32 nanosec, then the
    frame_id as uint32 length (including the NUL) and characters.
    """
    try:
        order = "<" if raw[1] == 1 else ">"
        sec, nanosec, length = struct.unpack_from(f"{order}iII", raw, 4)
        if 16 + length > len(raw):
            raise ValueError(f"frame_id of {length} bytes")
        frame_id = bytes(raw[16 : 16 + max(length - 1, 0)]).decode()
    except (IndexError, struct.error, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"no std_msgs/Header in its {len(raw)} bytes ({error})") from None
    return sec * NS_PER_S + nanosec, frame_id


# Writing.


def _log_time(msg: Any) -> int:
    """A message's header stamp in ns, which is its log time in the bag."""
    return header_ns(msg.header)


def _tf_static_cdr(rig: Rig, ns: int) -> bytes:
    """/tf_static, serialised: lidar_frame -> camera frame_id for each camera. A TF transform parent -> child
    is the child's pose in the parent frame, T_lidar_cam, which is the inverse of the calibration's
    T_cam_lidar."""
    sec, nanosec = divmod(ns, NS_PER_S)
    stamp = _MSG["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    header = _MSG["std_msgs/msg/Header"](stamp=stamp, frame_id=rig.lidar_frame)
    transforms = []
    for camera in rig:
        T_lidar_cam = invert_transform(camera.T_cam_lidar)
        w, x, y, z = quaternion_from_rotation(T_lidar_cam[:3, :3])
        tx, ty, tz = T_lidar_cam[:3, 3]
        transform = _MSG["geometry_msgs/msg/Transform"](
            translation=_MSG["geometry_msgs/msg/Vector3"](x=tx, y=ty, z=tz),
            rotation=_MSG["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w),
        )
        transforms.append(
            _MSG["geometry_msgs/msg/TransformStamped"](
                header=header, child_frame_id=camera.frame_id, transform=transform
            )
        )
    return TYPESTORE.serialize_cdr(_MSG[TF_MESSAGE](transforms=transforms), TF_MESSAGE)


def _write_frames(
    writer: Writer, frames: Iterable[Frame], rig: Rig, image_format: ImageFormat, topics: BagTopics
) -> str | None:
    """Write every frame's messages (and /tf_static before them); returns the labels' class set, if any.
    rclpy is imported here, not with the module: reading bags (evaluation, training) needs no ROS."""
    from rclpy.serialization import serialize_message

    connections: dict[str, Any] = {}

    def connect(topic: str, msgtype: str, qos: Sequence[Qos] = ()) -> None:
        connections[topic] = writer.add_connection(
            topic, msgtype, typestore=TYPESTORE, offered_qos_profiles=qos
        )

    def write(topic: str, msgtype: str, msg: Any) -> None:
        """An rclpy message, serialised by rclpy and logged at its header stamp."""
        if topic not in connections:
            connect(topic, msgtype)
        writer.write(connections[topic], _log_time(msg), serialize_message(msg))

    rig_layout = rig.to_dict()
    compressed = image_format != "raw"
    image_type = COMPRESSED_IMAGE if compressed else IMAGE
    # Every sensor's topics exist from the start, as in a recording, even if a camera never delivers.
    connect(TF_STATIC, TF_MESSAGE, (_TF_STATIC_QOS,))
    connect(topics.lidar, POINT_CLOUD2)
    for name in rig.names:
        connect(topics.image(name, compressed), image_type)
        connect(topics.camera_info(name), CAMERA_INFO)
    classes: str | None = None
    for index, frame in enumerate(frames):
        where = f"{writer.path}: {frame.name or 'frame'}"
        if frame.rig is not rig and frame.rig.to_dict() != rig_layout:
            raise ValueError(f"{where}: its rig differs from the first frame's; a bag holds one rig")
        if frame.labels is not None and classes not in (None, frame.classes):
            raise ValueError(f"{where}: labels of class set {frame.classes!r}, the bag's are {classes!r}")
        messages = frame_to_messages(frame, image_format)
        if index == 0:  # latched calibration first, as a recording starts
            start = min(_log_time(msg) for msg in (messages.cloud, *messages.images.values()))
            writer.write(connections[TF_STATIC], start, _tf_static_cdr(rig, start))
        write(topics.lidar, POINT_CLOUD2, messages.cloud)
        if messages.label_cloud is not None:
            classes = frame.classes
            write(topics.labels, POINT_CLOUD2, messages.label_cloud)
        for name, image in messages.images.items():
            write(topics.image(name, compressed), image_type, image)
            write(topics.camera_info(name), CAMERA_INFO, messages.camera_infos[name])
    return classes


def write_bag(
    frames: Iterable[Frame],
    path: str | Path,
    storage: StorageName = "mcap",
    image_format: ImageFormat = "raw",
    topics: BagTopics | None = None,
) -> Path:
    """Write `frames` as a rosbag2 folder at `path` (which must not exist) plus rig.yaml and xkd.yaml in it.

    A bag holds one static calibration, so every frame must carry the first frame's rig; labelled frames
    must share one class set. Frames are streamed, one at a time. On error the partial folder is removed.
    """
    if storage not in _STORAGES:
        raise ValueError(f"storage: {storage!r} is not one of {sorted(_STORAGES)}")
    if image_format not in _IMAGE_FORMATS:
        raise ValueError(f"image_format: {image_format!r} is not one of {list(_IMAGE_FORMATS)}")
    topics = topics or BagTopics()
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: exists already; write_bag creates a new bag folder")
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    try:
        with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=_STORAGES[storage]) as writer:
            classes = _write_frames(writer, itertools.chain([first], frames), first.rig, image_format, topics)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    first.rig.save(
        path / RIG_FILE, comment=f"Calibration of the bag {path.name} (written by xkd_ros write_bag)."
    )
    compressed = image_format != "raw"
    sidecar = {
        "lidar_topic": topics.lidar,
        "label_topic": topics.labels if classes is not None else None,
        "classes": classes,
        "cameras": {
            name: {"image": topics.image(name, compressed), "camera_info": topics.camera_info(name)}
            for name in first.rig.names
        },
    }
    comment = "# Which topics of this bag make a Frame (xkd_ros.data.RosbagDataset reads this).\n"
    (path / SIDECAR).write_text(comment + yaml.safe_dump(sidecar, sort_keys=False))
    return path


# Reading.


@dataclass(frozen=True)
class _CameraTopics:
    image: str
    camera_info: str


@contextmanager
def _open_bag(path: Path) -> Iterator[Reader]:
    """A rosbags Reader on `path`; a path that exists but is not a readable bag is a RosbagError naming it,
    and so is whatever goes wrong while reading it (see `_reading`)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such bag")
    try:
        if not path.is_dir() and path.suffix not in (".mcap", ".db3"):
            raise ReaderError(f"unknown file type {path.suffix!r}")
        reader = Reader(path)
        reader.open()
    except Exception as error:  # rosbags, sqlite3 and mcap parsing raise many types for a damaged bag
        raise RosbagError(
            f"{path}: not a rosbag2 bag (a folder with metadata.yaml, or a .mcap or .db3 file): "
            f"{_describe(error)}"
        ) from None
    try:
        with _reading(path):
            yield reader
    finally:
        reader.close()


def _describe(error: BaseException) -> str:
    """An error's first line, with its type where the text alone may not say what happened."""
    text = (str(error).strip().splitlines() or [""])[0]
    return text if isinstance(error, (ReaderError, FileNotFoundError)) else f"{type(error).__name__}: {text}"


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn any failure while reading the bag at `path` into a RosbagError naming it.

    Damaged storage surfaces anywhere in rosbags, sqlite3, the mcap parser or CDR deserialisation, with
    their own exception types (OverflowError, UnicodeDecodeError, sqlite3 errors, ...); a caller reading
    a bag must see one error type that says which bag, not a traceback from a library.
    """
    try:
        yield
    except RosbagError:
        raise
    except (MessageError, CalibrationError) as error:
        raise RosbagError(f"{path}: {error}") from None
    except Exception as error:
        raise RosbagError(f"{path}: corrupt or unreadable bag: {_describe(error)}") from None


def _load_sidecar(path: Path) -> dict[str, Any]:
    """The bag's xkd.yaml, or {} when there is none."""
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise RosbagError(f"{path}: not valid YAML: {_describe(error)}") from None
    cameras = data.get("cameras") if isinstance(data, dict) else None
    if (
        not isinstance(cameras, dict)
        or not isinstance(data.get("lidar_topic"), str)
        or not all(isinstance(data.get(key), str | None) for key in ("label_topic", "classes"))
        or not all(
            isinstance(name, str)
            and isinstance(entry, dict)
            and all(isinstance(entry.get(key), str) for key in ("image", "camera_info"))
            for name, entry in cameras.items()
        )
    ):
        raise RosbagError(
            f"{path}: expected lidar_topic, label_topic, classes (strings) and cameras "
            "(name: {image, camera_info})"
        )
    return data


def _image_namespace(topic: str, msgtype: str) -> str:
    """/ns/image_raw -> /ns; /ns/image_raw/compressed -> /ns (image_transport's naming)."""
    base = topic.removesuffix("/compressed") if msgtype == COMPRESSED_IMAGE else topic
    return base.rsplit("/", 1)[0]


def _nearest(stamps: np.ndarray, targets: np.ndarray, max_offset: int) -> np.ndarray:
    """Per target, the index of the nearest of the sorted `stamps`, or -1 when none lies within max_offset."""
    if not len(stamps):
        return np.full(len(targets), -1)
    after = np.searchsorted(stamps, targets)
    left, right = np.clip(after - 1, 0, len(stamps) - 1), np.clip(after, 0, len(stamps) - 1)
    best = np.where(np.abs(stamps[left] - targets) <= np.abs(stamps[right] - targets), left, right)
    return np.where(np.abs(stamps[best] - targets) <= max_offset, best, -1)


def add_static_transforms(parents: dict[str, tuple[str, np.ndarray]], message: Any) -> None:
    """Add a deserialised tf2_msgs/TFMessage to a static TF tree: child frame -> (parent, T_parent_child)."""
    for transform in message.transforms:
        t, q = transform.transform.translation, transform.transform.rotation
        T = transform_from_quaternion([q.w, q.x, q.y, q.z], [t.x, t.y, t.z])
        parents[transform.child_frame_id] = (transform.header.frame_id, T)


def transform_between(
    parents: Mapping[str, tuple[str, np.ndarray]], target: str, source: str
) -> np.ndarray | None:
    """T_target_source through the static TF tree (child -> (parent, T_parent_child)), or None if the two
    frames are not connected."""

    def pose_in_root(frame: str) -> tuple[str, np.ndarray]:
        T, seen = np.eye(4), set()
        while frame in parents and frame not in seen:
            seen.add(frame)
            parent, T_parent_child = parents[frame]
            T, frame = T_parent_child @ T, parent
        return frame, T

    target_root, T_root_target = pose_in_root(target)
    source_root, T_root_source = pose_in_root(source)
    return invert_transform(T_root_target) @ T_root_source if target_root == source_root else None


class RosbagDataset(Sequence[Frame]):
    """The scans of a rosbag2 bag (mcap or sqlite3) as Frames, each with the nearest image of every camera.

    Topics default to the bag's xkd.yaml (written by `write_bag`), else are found by type: the one
    PointCloud2 topic without a `label` field is the LiDAR, one with it the labels; Image and CompressedImage
    topics are the cameras, named by their namespace, with CameraInfo on <namespace>/camera_info.
    `camera_topics` maps camera names to image topics. Calibration: `rig` (a Rig or a YAML path), else
    rig.yaml in the bag folder, else CameraInfo plus /tf_static. The LiDAR's profile (beams, ring order,
    intensity scale, min range: xkd_ros.geometry.lidar) is that rig's (LidarProfile() for one built from
    CameraInfo), unless `lidar` gives one (a LidarProfile, or a rig file's `lidar:` section such as
    {"sensor": "ouster_os1_64"}). Labels are training ids of the class set
    `classes` (default: the sidecar's), read from the label cloud with the scan's stamp.

    The bag is indexed once (header stamps only); each item is read from the bag on access, opening it
    afresh, so the dataset can be shared with worker processes.
    """

    def __init__(
        self,
        path: str | Path,
        lidar_topic: str | None = None,
        camera_topics: Mapping[str, str] | None = None,
        label_topic: str | None = None,
        rig: Rig | str | Path | None = None,
        classes: str | None = None,
        max_image_offset: float = 0.1,
        lidar: LidarProfile | Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        folder = self.path if self.path.is_dir() else self.path.parent
        if rig is None and (folder / RIG_FILE).is_file():
            try:
                rig = Rig.load(folder / RIG_FILE)
            except (CalibrationError, OSError) as error:  # the message names the file in the bag folder
                raise RosbagError(str(error)) from None
        elif isinstance(rig, (str, Path)):
            rig = Rig.load(rig)  # a file the caller named: its own errors name it
        if lidar is not None and not isinstance(lidar, LidarProfile):
            lidar = LidarProfile.from_dict(lidar, "lidar")  # the caller's: its errors name the key
        with _open_bag(self.path) as reader:  # any failure inside is a RosbagError naming the bag
            self._types = {connection.topic: connection.msgtype for connection in reader.connections}
            sidecar = _load_sidecar(folder / SIDECAR)
            self.lidar_topic = lidar_topic or sidecar.get("lidar_topic") or self._discover_lidar(reader)
            self._require(self.lidar_topic, (POINT_CLOUD2,), "lidar_topic")
            if label_topic is None:
                label_topic = sidecar.get("label_topic") if sidecar else self._discover_labels(reader)
            self.label_topic = label_topic
            self.classes = classes or sidecar.get("classes")
            self._check_labels()
            self.cameras = self._camera_topics(camera_topics, sidecar)
            self._index(reader, rig)
        if lidar is not None:
            self.rig = Rig(self.rig.cameras, self.rig.lidar_frame, lidar)
        self._pairs = {
            name: _nearest(self._image_stamps[name][:, 0], self._scans[:, 0], stamp_to_ns(max_image_offset))
            for name in self.cameras
        }

    def _check_labels(self) -> None:
        """A label topic needs a known class set to read it with."""
        if self.label_topic is None:
            return
        self._require(self.label_topic, (POINT_CLOUD2,), "label_topic")
        if self.classes is None:
            raise RosbagError(
                f"{self.path}: {self.label_topic}: labels but no class set; pass classes (e.g. 'rellis3d')"
            )
        try:  # an unknown class set fails here, not at the first frame
            load_class_set(self.classes)
        except (ValueError, FileNotFoundError) as error:
            raise RosbagError(f"{self.path}: {self.label_topic}: {error}") from None

    def _camera_topics(
        self, camera_topics: Mapping[str, str] | None, sidecar: dict[str, Any]
    ) -> dict[str, _CameraTopics]:
        """Image and CameraInfo topic per camera: as given (CameraInfo beside the image), from the sidecar,
        or discovered."""
        if camera_topics is not None:
            cameras = {
                name: _CameraTopics(
                    topic, f"{_image_namespace(topic, self._types.get(topic, ''))}/camera_info"
                )
                for name, topic in camera_topics.items()
            }
        elif sidecar:
            cameras = {
                name: _CameraTopics(entry["image"], entry["camera_info"])
                for name, entry in sidecar["cameras"].items()
            }
        else:
            cameras = self._discover_cameras()
        for name, topics in cameras.items():
            self._require(topics.image, (IMAGE, COMPRESSED_IMAGE), f"camera {name}")
        return cameras

    def _require(self, topic: str, msgtypes: tuple[str, ...], role: str) -> None:
        if self._types.get(topic) not in msgtypes:
            found = repr(self._types[topic]) if topic in self._types else "absent"
            candidates = sorted(t for t, m in self._types.items() if m in msgtypes)
            raise RosbagError(
                f"{self.path}: {role}: topic {topic} is {found}, expected {' or '.join(msgtypes)} "
                f"(such topics in the bag: {candidates})"
            )

    def _discover_lidar(self, reader: Reader) -> str:
        fields = self._cloud_fields(reader)
        if not fields:
            raise RosbagError(
                f"{self.path}: no PointCloud2 topic with messages (topics: {sorted(self._types)})"
            )
        scans = [topic for topic, names in fields.items() if LABEL_FIELD not in names]
        if len(scans) != 1:
            raise RosbagError(
                f"{self.path}: {len(scans)} PointCloud2 topics without a {LABEL_FIELD!r} field {scans}; "
                "pass lidar_topic"
            )
        return scans[0]

    def _discover_labels(self, reader: Reader) -> str | None:
        labelled = [topic for topic, names in self._cloud_fields(reader).items() if LABEL_FIELD in names]
        if len(labelled) > 1:
            raise RosbagError(f"{self.path}: several label clouds {labelled}; pass label_topic")
        return labelled[0] if labelled else None

    def _cloud_fields(self, reader: Reader) -> dict[str, list[str]]:
        """Field names of the first message of each PointCloud2 topic that has one, to tell scans from
        label clouds."""
        fields = {}
        for topic in sorted(t for t, msgtype in self._types.items() if msgtype == POINT_CLOUD2):
            connections = [c for c in reader.connections if c.topic == topic]
            with closing(reader.messages(connections=connections)) as messages:
                first = next(messages, None)
            if first is not None:
                connection, _, raw = first
                try:
                    cloud = TYPESTORE.deserialize_cdr(raw, connection.msgtype)
                except Exception as error:  # rosbags raises several types for bytes that are not the type
                    raise RosbagError(
                        f"{self.path}: {topic}: its first message is not a readable PointCloud2: "
                        f"{_describe(error)}"
                    ) from None
                fields[topic] = [f.name for f in cloud.fields]
        return fields

    def _discover_cameras(self) -> dict[str, _CameraTopics]:
        images = sorted(t for t, m in self._types.items() if m in (IMAGE, COMPRESSED_IMAGE))
        cameras: dict[str, _CameraTopics] = {}
        for topic in images:
            if self._types[topic] == COMPRESSED_IMAGE and topic.removesuffix("/compressed") in images:
                continue  # the compressed transport of a raw topic that is read instead
            namespace = _image_namespace(topic, self._types[topic])
            name = namespace.rsplit("/", 1)[-1] or topic.strip("/")
            if name in cameras:
                raise RosbagError(
                    f"{self.path}: image topics {cameras[name].image} and {topic} both look like camera "
                    f"{name!r}; pass camera_topics"
                )
            cameras[name] = _CameraTopics(topic, f"{namespace}/camera_info")
        return cameras

    def _index(self, reader: Reader, rig: Rig | None) -> None:
        """One pass over the bag: header stamps of scans, labels and images; CameraInfo and /tf_static too
        when the calibration must come from them."""
        image_topics = {topics.image: name for name, topics in self.cameras.items()}
        info_topics = (
            {topics.camera_info: name for name, topics in self.cameras.items()} if rig is None else {}
        )
        wanted = {self.lidar_topic, *image_topics, *info_topics}
        wanted |= {self.label_topic} if self.label_topic else set()
        wanted |= {TF_STATIC} if rig is None else set()
        scans: list[tuple[int, int]] = []
        labels: dict[int, int] = {}
        images: dict[str, list[tuple[int, int]]] = {name: [] for name in self.cameras}
        camera_infos: dict[str, Any] = {}
        parents: dict[str, tuple[str, np.ndarray]] = {}
        lidar_frame = ""
        connections = [c for c in reader.connections if c.topic in wanted]
        counts: Counter[str] = Counter()
        for connection, log_time, raw in reader.messages(connections=connections):
            topic = connection.topic
            counts[topic] += 1
            if topic in (self.lidar_topic, self.label_topic, *image_topics):
                try:
                    stamp, frame_id = cdr_header(raw)
                except ValueError as error:
                    raise RosbagError(f"{self.path}: {topic} at log time {log_time} ns: {error}") from None
            if topic == self.lidar_topic:
                scans.append((stamp, log_time))
                lidar_frame = frame_id
            elif topic == self.label_topic:
                labels[stamp] = log_time
            elif topic in image_topics:
                images[image_topics[topic]].append((stamp, log_time))
            elif topic in info_topics:
                camera_infos.setdefault(
                    info_topics[topic], TYPESTORE.deserialize_cdr(raw, connection.msgtype)
                )
            elif topic == TF_STATIC:
                add_static_transforms(parents, TYPESTORE.deserialize_cdr(raw, connection.msgtype))
        self._check_counts(connections, counts)
        self._scans = np.array(sorted(scans), dtype=np.int64).reshape(-1, 2)
        self._labels = labels
        self._image_stamps = {
            name: np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2) for name, pairs in images.items()
        }
        self.rig = rig if rig is not None else self._rig_from_messages(camera_infos, parents, lidar_frame)
        unknown = [name for name in self.cameras if name not in self.rig.cameras]
        if unknown:
            raise RosbagError(
                f"{self.path}: camera(s) {unknown} are not in the rig {self.rig.names}; pass camera_topics "
                "with the rig's names"
            )

    def _check_counts(self, connections: Sequence[Any], counts: Counter[str]) -> None:
        """Every topic read holds as many messages as the bag's metadata lists: fewer or more means damaged
        storage, or types in the metadata that the storage does not bear out (rosbags then skips those
        messages), which must not pass as a shorter bag. A count of 0 means the bag lists none."""
        listed: Counter[str] = Counter()
        for connection in connections:
            listed[connection.topic] += connection.msgcount
        for topic, expected in sorted(listed.items()):
            if expected and counts[topic] != expected:
                raise RosbagError(
                    f"{self.path}: {topic}: the bag's metadata lists {expected} messages, its storage holds "
                    f"{counts[topic]} (a damaged or edited bag; `ros2 bag reindex` rebuilds the metadata)"
                )

    def _rig_from_messages(
        self, camera_infos: dict[str, Any], parents: dict[str, tuple[str, np.ndarray]], lidar_frame: str
    ) -> Rig:
        """The rig from each camera's first CameraInfo and the static TF tree, in camera order."""
        T_cam_lidar = {}
        for name, topics in self.cameras.items():
            if name not in camera_infos:
                raise RosbagError(
                    f"{self.path}: camera {name} ({topics.image}): no CameraInfo on {topics.camera_info} "
                    f"and no rig (pass rig, or put {RIG_FILE} in the bag folder)"
                )
            frame_id = camera_infos[name].header.frame_id
            T = transform_between(parents, frame_id, lidar_frame)
            if T is None:
                raise RosbagError(
                    f"{self.path}: camera {name}: {TF_STATIC} does not connect its frame {frame_id!r} to the "
                    f"LiDAR frame {lidar_frame!r} of {self.lidar_topic}, and there is no rig"
                )
            T_cam_lidar[name] = T
        try:
            ordered = {name: camera_infos[name] for name in self.cameras}
            return rig_from_camera_infos(ordered, T_cam_lidar, lidar_frame)
        except CalibrationError as error:
            raise RosbagError(f"{self.path}: CameraInfo: {error}") from None

    @property
    def stamps(self) -> np.ndarray:
        """Scan stamps in seconds, in item order."""
        return np.array([ns_to_stamp(stamp) for stamp in self._scans[:, 0]])

    def __len__(self) -> int:
        return len(self._scans)

    def __getitem__(self, index: int) -> Frame:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.path}: item {index} of {len(self)}")
        index %= len(self)
        stamp, log_time = (int(value) for value in self._scans[index])
        images, image_stamps, labels = {}, {}, None
        at = f"at stamp {stamp} ns"
        with _open_bag(self.path) as reader:
            cloud = self._fetch(reader, self.lidar_topic, log_time, stamp)
            for name, topics in self.cameras.items():
                nearest = self._pairs[name][index]
                if nearest >= 0:
                    image_stamp, image_log_time = (int(v) for v in self._image_stamps[name][nearest])
                    image = self._fetch(reader, topics.image, image_log_time, image_stamp)
                    try:
                        images[name] = rgb_from_image(image)
                    except MessageError as error:
                        where = f"{self.path}: {topics.image} at stamp {image_stamp} ns"
                        raise RosbagError(f"{where}: {error}") from None
                    image_stamps[name] = ns_to_stamp(image_stamp)
            try:
                points, channels = points_from_cloud(cloud, f"{self.path}: {self.lidar_topic} {at}")
                if stamp in self._labels:
                    label_cloud = self._fetch(reader, self.label_topic, self._labels[stamp], stamp)
                    where = f"{self.path}: {self.label_topic} {at}"
                    labels = labels_from_cloud(label_cloud, len(points), self.classes, where)
            except MessageError as error:
                raise RosbagError(str(error)) from None
        return Frame(
            points=points,
            channels=channels,
            rig=self.rig,
            images=images,
            labels=labels,
            classes=self.classes,
            stamp=ns_to_stamp(stamp),
            image_stamps=image_stamps,
            name=f"{self.path.name}/{index:06d}",
        )

    def _fetch(self, reader: Reader, topic: str, log_time: int, stamp: int) -> Any:
        """The message on `topic` logged at `log_time` whose header has `stamp`, deserialised."""
        connections = [c for c in reader.connections if c.topic == topic]
        for connection, _, raw in reader.messages(connections=connections, start=log_time, stop=log_time + 1):
            if cdr_header(raw)[0] == stamp:  # indexed, so readable
                return TYPESTORE.deserialize_cdr(raw, connection.msgtype)
        raise RosbagError(f"{self.path}: {topic}: the message stamped {stamp} ns is gone since indexing")
