"""rosbag2 bags <-> Frames, on the real nuScenes and RELLIS-3D frames, in mcap and sqlite3."""

import re
import shutil
import sqlite3
import sys
from contextlib import closing
from dataclasses import replace

import numpy as np
import pytest
import yaml
from conftest import REPO, assert_rigs_close
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.interfaces import QosDurability
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from xkd_ros.data import Frame, open_frames
from xkd_ros.data.rosbag import TYPESTORE, BagTopics, RosbagDataset, RosbagError, write_bag
from xkd_ros.geometry import CalibrationError, LidarProfile, Rig, invert_transform, transform_from_quaternion
from xkd_ros.msgs import (
    CvBridge,
    camera_info_to_intrinsics,
    create_cloud,
    intrinsics_to_camera_info,
    read_points,
    read_points_numpy,
)

CAMERAS = ("CAM_FRONT", "CAM_BACK")


def assert_frames_equal(read: Frame, original: Frame, exact_images: bool = True) -> None:
    assert read.channels == original.channels
    np.testing.assert_array_equal(read.points, original.points)
    assert read.stamp == original.stamp
    assert read.image_stamps == original.image_stamps
    assert read.images.keys() == original.images.keys()
    for name, image in original.images.items():
        assert read.images[name].shape == image.shape
        assert read.images[name].dtype == np.uint8
        if exact_images:
            np.testing.assert_array_equal(read.images[name], image)
        else:  # JPEG at OpenCV's default quality 95
            assert np.abs(read.images[name].astype(int) - image).mean() < 2.0
    if original.labels is None:
        assert read.labels is None
    else:
        np.testing.assert_array_equal(read.labels, original.labels)
        assert read.classes == original.classes


@pytest.fixture(scope="module")
def two_cameras(nuscenes_keyframe):
    """The keyframe with its real front and back cameras only: several frames stay small and quick."""
    frame = nuscenes_keyframe
    return replace(
        frame,
        rig=frame.rig.with_cameras([frame.rig[name] for name in CAMERAS]),
        images={name: frame.images[name] for name in CAMERAS},
        image_stamps={name: frame.image_stamps[name] for name in CAMERAS},
    )


@pytest.mark.parametrize("sample", ["nuscenes_keyframe", "rellis_frame"])
@pytest.mark.parametrize(
    ("storage", "image_format"), [("mcap", "raw"), ("sqlite3", "raw"), ("mcap", "png"), ("sqlite3", "jpeg")]
)
def test_round_trip(request, tmp_path, sample, storage, image_format):
    original = request.getfixturevalue(sample)
    bag = write_bag([original], tmp_path / "bag", storage=storage, image_format=image_format)

    dataset = RosbagDataset(bag)

    assert len(dataset) == 1
    assert_frames_equal(dataset[0], original, exact_images=image_format != "jpeg")
    assert_rigs_close(dataset.rig, original.rig)  # from rig.yaml, exactly
    assert dataset.stamps.tolist() == [original.stamp]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("sample", ["nuscenes_keyframe", "rellis_frame"])
def test_rig_rebuilt_from_camera_info_and_tf_static(request, tmp_path, sample, storage):
    original = request.getfixturevalue(sample)
    bag = write_bag([original], tmp_path / "bag", storage=storage, image_format="jpeg")
    (bag / "rig.yaml").unlink()

    dataset = RosbagDataset(bag, lidar=original.rig.lidar)  # CameraInfo and /tf_static carry no LiDAR profile

    assert_rigs_close(dataset.rig, original.rig, atol=1e-6)
    assert dataset[0].points.shape == original.points.shape


def test_frames_carry_the_lidar_profile_of_the_rig_they_are_read_with(tmp_path, rellis_frame):
    """The LiDAR profile (beams, ring order, intensity scale, min range) travels in rig.yaml; a rig built
    from CameraInfo has the default one unless `lidar` names it; a rig file passed in brings its own."""
    bag = write_bag([rellis_frame], tmp_path / "bag")
    assert "intensity_scale: 0.0115" in (bag / "rig.yaml").read_text()
    assert RosbagDataset(bag)[0].rig.lidar == rellis_frame.rig.lidar
    assert RosbagDataset(bag, rig=REPO / "config/rellis3d.rig.yaml")[0].rig.lidar == rellis_frame.rig.lidar
    (bag / "rig.yaml").unlink()
    assert RosbagDataset(bag)[0].rig.lidar == LidarProfile()
    section = {"sensor": "ouster_os1_64", "intensity_scale": 0.0115}
    read = open_frames(bag, lidar=section)[0]
    assert read.rig.lidar == LidarProfile.from_dict(section)
    assert read.rig.names == rellis_frame.rig.names
    assert RosbagDataset(bag, lidar=rellis_frame.rig.lidar).rig.lidar is rellis_frame.rig.lidar
    with pytest.raises(CalibrationError, match=r"lidar\.sensor: unknown sensor 'os1'"):
        RosbagDataset(bag, lidar={"sensor": "os1"})


def test_bag_layout_stamps_and_sidecar(tmp_path, rellis_frame):
    bag = write_bag([rellis_frame], tmp_path / "bag", image_format="png")
    camera = rellis_frame.rig["pylon_camera"]
    stamp_ns = 1581624663_149000000  # 1581624663.149 s, the image's file name

    with Reader(bag) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        tf_static = next(c for c in reader.connections if c.topic == "/tf_static")
        messages = {
            c.topic: (log_time, TYPESTORE.deserialize_cdr(raw, c.msgtype))
            for c, log_time, raw in reader.messages()
        }

    assert types == {
        "/tf_static": "tf2_msgs/msg/TFMessage",
        "/lidar/points": "sensor_msgs/msg/PointCloud2",
        "/lidar/labels": "sensor_msgs/msg/PointCloud2",
        "/cameras/pylon_camera/image_raw/compressed": "sensor_msgs/msg/CompressedImage",
        "/cameras/pylon_camera/camera_info": "sensor_msgs/msg/CameraInfo",
    }
    assert tf_static.ext.offered_qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL
    for topic, (log_time, msg) in messages.items():
        header = msg.transforms[0].header if topic == "/tf_static" else msg.header
        assert log_time == header.stamp.sec * 10**9 + header.stamp.nanosec == stamp_ns, topic
    scan = messages["/lidar/points"][1]
    assert scan.header.frame_id == "os1_lidar"
    assert [(f.name, f.datatype) for f in scan.fields] == [
        ("x", 7),
        ("y", 7),
        ("z", 7),
        ("intensity", 7),
        ("ring", PointField.UINT16),  # the OS1's beam, as its driver publishes it
    ]
    assert [(f.name, f.datatype) for f in messages["/lidar/labels"][1].fields][-1] == ("label", 2)
    assert messages["/cameras/pylon_camera/camera_info"][1].header.frame_id == camera.frame_id

    # TF parent -> child is the child's pose in the parent: the camera centre c, where T_cam_lidar maps
    # c to the camera's origin, is the transform's translation.
    (transform,) = messages["/tf_static"][1].transforms
    assert (transform.header.frame_id, transform.child_frame_id) == ("os1_lidar", camera.frame_id)
    centre = np.linalg.solve(camera.T_cam_lidar[:3, :3], -camera.T_cam_lidar[:3, 3])
    t, q = transform.transform.translation, transform.transform.rotation
    np.testing.assert_allclose([t.x, t.y, t.z], centre, atol=1e-9)
    T_lidar_cam = transform_from_quaternion([q.w, q.x, q.y, q.z], [t.x, t.y, t.z])
    np.testing.assert_allclose(T_lidar_cam, invert_transform(camera.T_cam_lidar), atol=1e-9)

    assert yaml.safe_load((bag / "xkd.yaml").read_text()) == {
        "lidar_topic": "/lidar/points",
        "label_topic": "/lidar/labels",
        "classes": "rellis3d",
        "cameras": {
            "pylon_camera": {
                "image": "/cameras/pylon_camera/image_raw/compressed",
                "camera_info": "/cameras/pylon_camera/camera_info",
            }
        },
    }
    assert Rig.load(bag / "rig.yaml").to_dict() == rellis_frame.rig.to_dict()


def test_custom_topics_are_read_through_the_sidecar(tmp_path, rellis_frame):
    topics = BagTopics(lidar="/os1/points", labels="/os1/semantic", camera_namespace="/{camera}")
    bag = write_bag([rellis_frame], tmp_path / "bag", storage="sqlite3", topics=topics)

    dataset = RosbagDataset(bag)

    assert (dataset.lidar_topic, dataset.label_topic) == ("/os1/points", "/os1/semantic")
    assert dataset.cameras["pylon_camera"].image == "/pylon_camera/image_raw"
    assert_frames_equal(dataset[0], rellis_frame)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_missing_image_leaves_only_that_camera_out(tmp_path, two_cameras, storage):
    def frame_at(k: int, cameras: tuple[str, ...]) -> Frame:
        return replace(
            two_cameras,
            points=two_cameras.points + np.float32(k),
            stamp=two_cameras.stamp + 0.5 * k,
            images={name: two_cameras.images[name] for name in cameras},
            image_stamps={name: two_cameras.image_stamps[name] + 0.5 * k for name in cameras},
        )

    frames = [frame_at(0, CAMERAS), frame_at(1, ("CAM_FRONT",)), frame_at(2, CAMERAS)]
    bag = write_bag(frames, tmp_path / "bag", storage=storage)

    dataset = RosbagDataset(bag)

    assert len(dataset) == 3
    for read, original in zip(dataset, frames, strict=True):
        assert_frames_equal(read, original)
    assert set(dataset[1].images) == {"CAM_FRONT"}
    assert dataset[-1].stamp == frames[2].stamp


def test_each_scan_gets_the_nearest_image_within_the_offset(tmp_path, two_cameras):
    t = two_cameras.stamp
    front = two_cameras.images["CAM_FRONT"]
    flipped = np.ascontiguousarray(front[::-1])
    frames = [  # scans at t, t + 0.1, t + 0.2; front images at t + 0.02 and t + 0.09
        replace(two_cameras, images={"CAM_FRONT": front}, image_stamps={"CAM_FRONT": t + 0.02}),
        replace(
            two_cameras, stamp=t + 0.1, images={"CAM_FRONT": flipped}, image_stamps={"CAM_FRONT": t + 0.09}
        ),
        replace(two_cameras, stamp=t + 0.2, images={}, image_stamps={}),
    ]
    bag = write_bag(frames, tmp_path / "bag")

    strict, lenient = RosbagDataset(bag), RosbagDataset(bag, max_image_offset=0.15)

    np.testing.assert_array_equal(strict[0].images["CAM_FRONT"], front)  # the later image is nearer
    np.testing.assert_array_equal(strict[1].images["CAM_FRONT"], flipped)  # the earlier one is nearer
    assert strict[2].images == {}  # 0.11 s away
    np.testing.assert_array_equal(lenient[2].images["CAM_FRONT"], flipped)
    assert lenient[2].image_stamps == {"CAM_FRONT": t + 0.09}


# Bags recorded by ROS: messages serialised by rclpy, no sidecar, topics found by type.


def write_rclpy_bag(path, messages, storage=StoragePlugin.MCAP):
    """A bag of rclpy messages serialised by rclpy, as `ros2 bag record` writes them."""
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=storage) as writer:
        connections = {}
        for topic, msg in messages:
            msgtype = type(msg).__module__.split(".")[0] + "/msg/" + type(msg).__name__
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            writer.write(connections[topic], stamp, serialize_message(msg))
    return path


def ros_messages(frame: Frame, labels: np.ndarray | None = None, camera_info: bool = True):
    """A RELLIS-3D frame as its driver and a labelling node would publish it."""
    ns = round(frame.stamp * 1000) * 1_000_000  # the stamp is whole milliseconds
    header = Header(frame_id=frame.rig.lidar_frame)
    header.stamp.sec, header.stamp.nanosec = divmod(ns, 10**9)
    fields = [
        PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, n in enumerate(frame.channels)
    ]
    messages = [("/os1_cloud_node/points", create_cloud(header, fields, frame.points))]
    if labels is not None:
        structured = np.zeros(len(labels), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("label", "u1")])
        structured["label"] = labels
        label_fields = [*fields[:3], PointField(name="label", offset=12, datatype=PointField.UINT8, count=1)]
        messages.append(("/os1_cloud_node/labels", create_cloud(header, label_fields, structured)))
    camera = frame.rig["pylon_camera"]
    image_header = Header(stamp=header.stamp, frame_id=camera.frame_id)
    image = CvBridge().cv2_to_imgmsg(frame.images["pylon_camera"], "rgb8", header=image_header)
    messages.append(("/pylon_camera/image_raw", image))
    if camera_info:
        messages.append(
            ("/pylon_camera/camera_info", intrinsics_to_camera_info(camera.intrinsics, image_header))
        )
    return messages


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_a_bag_of_rclpy_messages_reads_with_topics_found_by_type(tmp_path, rellis_frame, storage):
    bag = write_rclpy_bag(tmp_path / "bag", ros_messages(rellis_frame, rellis_frame.labels), storage)

    dataset = RosbagDataset(bag, rig=rellis_frame.rig, classes="rellis3d")

    assert (dataset.lidar_topic, dataset.label_topic) == ("/os1_cloud_node/points", "/os1_cloud_node/labels")
    assert dataset.cameras["pylon_camera"].camera_info == "/pylon_camera/camera_info"
    assert_frames_equal(dataset[0], rellis_frame)
    named = RosbagDataset(
        bag,
        camera_topics={"pylon_camera": "/pylon_camera/image_raw"},
        rig=rellis_frame.rig,
        classes="rellis3d",
    )
    np.testing.assert_array_equal(named[0].images["pylon_camera"], rellis_frame.images["pylon_camera"])


def test_ros_deserialises_what_write_bag_wrote(tmp_path, rellis_frame):
    bag = write_bag([rellis_frame], tmp_path / "bag")
    sensor_msgs = {f"sensor_msgs/msg/{t.__name__}": t for t in (PointCloud2, Image, CameraInfo)}
    with Reader(bag) as reader:
        messages = {
            c.topic: deserialize_message(raw, sensor_msgs[c.msgtype])
            for c, _, raw in reader.messages()
            if c.msgtype in sensor_msgs
        }

    cloud = messages["/lidar/points"]
    np.testing.assert_array_equal(
        read_points_numpy(cloud, ["x", "y", "z", "intensity"]), rellis_frame.points[:, :4]
    )
    np.testing.assert_array_equal(read_points(cloud, ["ring"])["ring"], rellis_frame.channel("ring"))
    labels = read_points(messages["/lidar/labels"], ["label"])["label"]
    np.testing.assert_array_equal(labels, rellis_frame.labels)
    rgb = CvBridge().imgmsg_to_cv2(messages["/cameras/pylon_camera/image_raw"], "rgb8")
    np.testing.assert_array_equal(rgb, rellis_frame.images["pylon_camera"])
    intrinsics = camera_info_to_intrinsics(messages["/cameras/pylon_camera/camera_info"])
    np.testing.assert_array_equal(intrinsics.K, rellis_frame.rig["pylon_camera"].intrinsics.K)


# Errors name the bag, the topic and what is wrong.


def test_a_path_that_is_not_a_bag(tmp_path):
    (tmp_path / "notes.txt").write_text("not a bag")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RosbagError, match=r"empty: not a rosbag2 bag"):
        RosbagDataset(tmp_path / "empty")
    with pytest.raises(RosbagError, match=r"notes\.txt: not a rosbag2 bag"):
        RosbagDataset(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="missing: no such bag"):
        RosbagDataset(tmp_path / "missing")


def test_no_point_cloud_topic(tmp_path, rellis_frame):
    bag = write_rclpy_bag(tmp_path / "bag", ros_messages(rellis_frame)[1:])
    with pytest.raises(
        RosbagError, match=r"bag: no PointCloud2 topic with messages \(topics: \['/pylon_camera/camera_info'"
    ):
        RosbagDataset(bag)


def test_an_absent_lidar_topic_lists_the_clouds(tmp_path, rellis_frame):
    bag = write_rclpy_bag(tmp_path / "bag", ros_messages(rellis_frame))
    with pytest.raises(RosbagError, match=r"topic /velodyne_points is absent.*\['/os1_cloud_node/points'\]"):
        RosbagDataset(bag, lidar_topic="/velodyne_points", rig=rellis_frame.rig)


def test_a_camera_without_camera_info_and_no_rig(tmp_path, rellis_frame):
    bag = write_rclpy_bag(tmp_path / "bag", ros_messages(rellis_frame, camera_info=False))
    message = (
        r"bag: camera pylon_camera \(/pylon_camera/image_raw\): no CameraInfo on /pylon_camera/camera_info"
    )
    with pytest.raises(RosbagError, match=message):
        RosbagDataset(bag)
    assert len(RosbagDataset(bag, rig=rellis_frame.rig)) == 1


def test_labels_without_a_class_set(tmp_path, rellis_frame):
    bag = write_rclpy_bag(tmp_path / "bag", ros_messages(rellis_frame, rellis_frame.labels))
    with pytest.raises(RosbagError, match="/os1_cloud_node/labels: labels but no class set"):
        RosbagDataset(bag, rig=rellis_frame.rig)


def test_a_label_count_mismatch(tmp_path, rellis_frame):
    bag = write_rclpy_bag(tmp_path / "bag", ros_messages(rellis_frame, rellis_frame.labels[:-5]))
    dataset = RosbagDataset(bag, rig=rellis_frame.rig, classes="rellis3d")
    n = len(rellis_frame.points)
    message = (
        rf"bag: /os1_cloud_node/labels at stamp 1581624663149000000 ns: {n - 5} labels for the {n} points"
    )
    with pytest.raises(RosbagError, match=message):
        dataset[0]


def test_unknown_class_ids(tmp_path, rellis_frame):
    labels = rellis_frame.labels.copy()
    labels[[3, 7]] = 19, 200  # rellis3d has training ids 0..18
    bag = write_rclpy_bag(tmp_path / "bag", ros_messages(rellis_frame, labels))
    dataset = RosbagDataset(bag, rig=rellis_frame.rig, classes="rellis3d")
    with pytest.raises(
        RosbagError, match=r"labels at stamp .* label id\(s\) \[19, 200\] .* class set 'rellis3d'"
    ):
        dataset[0]


def test_write_bag_refuses_mixed_rigs_and_existing_folders(tmp_path, nuscenes_keyframe, two_cameras):
    with pytest.raises(ValueError, match="rig differs from the first frame's"):
        write_bag([two_cameras, nuscenes_keyframe], tmp_path / "bag")
    assert not (tmp_path / "bag").exists()  # no half-written bag is left behind
    write_bag([two_cameras], tmp_path / "bag")
    with pytest.raises(FileExistsError, match="bag: exists already"):
        write_bag([two_cameras], tmp_path / "bag")
    with pytest.raises(ValueError, match="image_format: 'tiff'"):
        write_bag([two_cameras], tmp_path / "other", image_format="tiff")


# Damaged bags: one error naming the bag, never an exception from rosbags, sqlite3 or the mcap parser.


@pytest.fixture(scope="module")
def small_bags(tmp_path_factory, rellis_frame):
    """A 3-scan bag of the RELLIS-3D frame per storage; tests damage copies of them."""
    root = tmp_path_factory.mktemp("small_bags")
    frames = [
        replace(
            rellis_frame,
            stamp=rellis_frame.stamp + 0.1 * k,
            image_stamps={name: s + 0.1 * k for name, s in rellis_frame.image_stamps.items()},
        )
        for k in range(3)
    ]
    return {storage: write_bag(frames, root / storage, storage=storage) for storage in ("mcap", "sqlite3")}


def damaged(small_bags, tmp_path, storage, edit):
    """A copy of the small bag of `storage` with `edit(folder, storage file)` applied."""
    bag = tmp_path / f"damaged_{storage}"
    shutil.copytree(small_bags[storage], bag)
    edit(bag, next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")))
    return bag


def read_all(path):
    frames = open_frames(path)
    return [frames[i] for i in range(len(frames))]


def truncate(bag, data):
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def unreadable_schema_name(bag, data):
    """Each copy of the PointCloud2 schema name gets a byte that is not UTF-8; record sizes are kept."""
    name = b"sensor_msgs/msg/PointCloud2"
    data.write_bytes(data.read_bytes().replace(name, b"\xff" + name[1:]))


def garbled_page(bag, data):
    """A page in the middle of the sqlite3 file (message data: the database still opens) overwritten."""
    with closing(sqlite3.connect(data)) as db:
        page = db.execute("PRAGMA page_size").fetchone()[0]
    content = bytearray(data.read_bytes())
    middle = len(content) // page // 2 * page
    content[middle : middle + 8] = b"\xff" * 8
    data.write_bytes(bytes(content))


@pytest.mark.parametrize(
    ("storage", "edit"),
    [
        ("mcap", truncate),
        ("mcap", unreadable_schema_name),
        ("sqlite3", truncate),
        ("sqlite3", garbled_page),
    ],
)
def test_damaged_storage_is_an_error_naming_the_bag(small_bags, tmp_path, storage, edit):
    bag = damaged(small_bags, tmp_path, storage, edit)
    with pytest.raises(RosbagError, match=f"^{re.escape(str(bag))}: "):
        read_all(bag)
    data = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
    with pytest.raises(RosbagError, match=f"^{re.escape(str(data))}: "):  # the storage file alone
        read_all(data)


def edit_metadata(change):
    def edit(bag, data):
        path = bag / "metadata.yaml"
        metadata = yaml.safe_load(path.read_text())
        change(metadata["rosbag2_bagfile_information"])
        path.write_text(yaml.safe_dump(metadata))

    return edit


def lidar_type(msgtype):
    def change(info):
        for entry in info["topics_with_message_count"]:
            if entry["topic_metadata"]["name"] == "/lidar/points":
                entry["topic_metadata"]["type"] = msgtype

    return edit_metadata(change)


def storage_type(msgtype):
    def edit(bag, data):
        with closing(sqlite3.connect(data)) as db:
            db.execute("UPDATE topics SET type = ? WHERE name = '/lidar/points'", (msgtype,))
            db.commit()

    return edit


def message_counts(count):
    def change(info):
        info["message_count"] = count
        for entry in info["topics_with_message_count"]:
            entry["message_count"] = count

    return edit_metadata(change)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_metadata_that_lies_about_the_message_count(small_bags, tmp_path, storage):
    bag = damaged(small_bags, tmp_path, storage, message_counts(9999))
    with pytest.raises(
        RosbagError,
        match=r"^\S+damaged_\w+: /\S+: the bag's metadata lists 9999 messages, its storage holds 3",
    ):
        read_all(bag)


def test_a_storage_that_disagrees_with_the_metadata_on_a_type(small_bags, tmp_path):
    """rosbags skips messages whose storage type differs from the metadata: a bag of 3 scans read as 0."""
    bag = damaged(small_bags, tmp_path, "sqlite3", storage_type("sensor_msgs/msg/Image"))
    with pytest.raises(
        RosbagError, match=r"/lidar/points: the bag's metadata lists 3 messages, its storage holds 0"
    ):
        read_all(bag)


@pytest.mark.parametrize("msgtype", ["os/system", "xkd_evil/msg/Boom", "../../evil/msg/X", "a\nb"])
def test_a_type_name_that_is_not_the_expected_message_type(small_bags, tmp_path, msgtype):
    bag = damaged(small_bags, tmp_path, "mcap", lidar_type(msgtype))
    modules = set(sys.modules)
    with pytest.raises(RosbagError, match=re.escape(f"topic /lidar/points is {msgtype!r}, expected")):
        read_all(bag)
    assert not {m for m in set(sys.modules) - modules if "evil" in m or m in ("os.system",)}


def test_a_message_without_a_header_names_the_topic(tmp_path, rellis_frame):
    (topic, cloud), *_ = ros_messages(rellis_frame)
    bag = tmp_path / "bag"
    with Writer(bag, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(topic, "sensor_msgs/msg/PointCloud2", typestore=TYPESTORE)
        writer.write(connection, 5, serialize_message(cloud))
        writer.write(connection, 6, b"\x00\x01\x00\x00\x07")
    with pytest.raises(
        RosbagError, match=rf"bag: {topic} at log time 6 ns: no std_msgs/Header in its 5 bytes"
    ):
        RosbagDataset(bag, camera_topics={}, rig=rellis_frame.rig)


def test_an_unreadable_first_cloud_names_the_topic(tmp_path, rellis_frame):
    bag = tmp_path / "bag"
    with Writer(bag, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/points", "sensor_msgs/msg/PointCloud2", typestore=TYPESTORE)
        writer.write(connection, 5, b"\x00\x01\x00\x00\x07")
    with pytest.raises(RosbagError, match=r"bag: /points: its first message is not a readable PointCloud2"):
        RosbagDataset(bag, camera_topics={}, rig=rellis_frame.rig)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("xkd.yaml", "cameras: [\n", "not valid YAML"),
        (
            "xkd.yaml",
            "lidar_topic: /lidar/points\ncameras: {cam: {image: 3, camera_info: 4}}\n",
            "expected lidar_topic",
        ),
        ("rig.yaml", "cameras: 3\n", "cameras: expected a mapping of camera name to calibration"),
    ],
)
def test_a_broken_sidecar_or_rig_file_is_named(small_bags, tmp_path, name, text, message):
    bag = damaged(small_bags, tmp_path, "mcap", lambda folder, data: (folder / name).write_text(text))
    with pytest.raises(RosbagError, match=f"^{re.escape(str(bag / name))}: {message}"):
        read_all(bag)


def test_a_class_set_path_in_a_sidecar_is_not_opened(small_bags, tmp_path):
    """The sidecar names a class set; a path there (even to a valid class set file) is refused."""
    copy = tmp_path / "rellis3d.yaml"
    copy.write_text((REPO / "config/classes/rellis3d.yaml").read_text())

    def edit(folder, data):
        sidecar = yaml.safe_load((folder / "xkd.yaml").read_text())
        (folder / "xkd.yaml").write_text(yaml.safe_dump({**sidecar, "classes": str(copy)}))

    bag = damaged(small_bags, tmp_path, "mcap", edit)
    with pytest.raises(RosbagError, match=r"/lidar/labels: class set .* not a class set name"):
        read_all(bag)
