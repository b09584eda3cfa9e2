"""`xkd-demo` end to end on the real nuScenes keyframe, and the Frame <-> messages conversion under it."""

import json

import cv2
import numpy as np
import pytest
from conftest import NUSCENES_COUNTS
from sensor_msgs.msg import CompressedImage

from xkd_ros.data.messages import (
    MessageError,
    SequenceGaps,
    frame_from_messages,
    frame_to_messages,
    points_from_cloud,
    rgb_from_image,
    stamp_to_ns,
)
from xkd_ros.projection_demo import main


@pytest.mark.parametrize("image_format", ["raw", "png", "jpeg"])
def test_frame_messages_round_trip(rellis_frame, image_format):
    messages = frame_to_messages(rellis_frame, image_format)
    assert messages.cloud.header.frame_id == rellis_frame.rig.lidar_frame
    assert [f.name for f in messages.cloud.fields] == list(rellis_frame.channels)
    info = messages.camera_infos["pylon_camera"]
    assert info.header.frame_id == "pylon_camera"
    assert list(info.k) == rellis_frame.rig["pylon_camera"].intrinsics.K.ravel().tolist()
    back = frame_from_messages(
        messages.cloud, messages.images, rellis_frame.rig, messages.label_cloud, "rellis3d", rellis_frame.name
    )
    np.testing.assert_array_equal(back.points, rellis_frame.points)
    np.testing.assert_array_equal(back.labels, rellis_frame.labels)
    assert back.stamp == rellis_frame.stamp
    assert back.image_stamps == rellis_frame.image_stamps
    error = np.abs(back.images["pylon_camera"].astype(int) - rellis_frame.images["pylon_camera"]).mean()
    assert error == 0 if image_format != "jpeg" else error < 3


@pytest.mark.parametrize("reduction", [2, 4, 8])
def test_jpeg_decoded_at_a_reduced_scale(nuscenes_keyframe, reduction):
    msg = frame_to_messages(nuscenes_keyframe, "jpeg").images["CAM_FRONT"]
    rgb = rgb_from_image(msg, reduction)
    height, width = -(-900 // reduction), 1600 // reduction  # libjpeg rounds up: 113 rows at 8
    assert rgb.shape == (height, width, 3)
    assert rgb.flags.writeable
    full = nuscenes_keyframe.images["CAM_FRONT"]
    expected = cv2.resize(full, (width, height), interpolation=cv2.INTER_AREA)
    assert np.abs(rgb.astype(int) - expected).mean() < 4  # RGB order, the same picture
    raw = frame_to_messages(nuscenes_keyframe, "raw").images["CAM_FRONT"]
    assert rgb_from_image(raw, reduction).shape == (900, 1600, 3)  # a raw Image comes whole


def test_undecodable_jpeg_and_unknown_reduction_are_errors(nuscenes_keyframe):
    msg = frame_to_messages(nuscenes_keyframe, "jpeg").images["CAM_FRONT"]
    with pytest.raises(ValueError, match="reduction: 3"):
        rgb_from_image(msg, 3)
    msg.data = bytes(100)
    with pytest.raises(MessageError, match="CompressedImage field `data` \\(100 bytes"):
        rgb_from_image(msg, 2)


def test_reduced_decode_refuses_a_png_chunk_longer_than_the_data():
    """84 bytes whose second chunk claims 4 GB: OpenCV would allocate that before finding the data short."""
    data = bytearray(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    data[33:37] = (0xFFFFFFF0).to_bytes(4, "big")  # the length of the chunk after IHDR
    msg = CompressedImage(format="png", data=bytes(data[:84]))
    with pytest.raises(ValueError, match="declares 4294967280 bytes"):
        rgb_from_image(msg, 2)


def test_points_from_cloud_decodes_only_the_fields_asked_for(rellis_frame):
    """The fields left out are not even parsed: 10,000 of them, of a type no decoder knows, cost nothing."""
    from sensor_msgs.msg import PointField

    cloud = frame_to_messages(rellis_frame).cloud
    cloud.fields = [
        *cloud.fields,
        *(PointField(name=f"f{i}", offset=0, datatype=99, count=1) for i in range(10_000)),
    ]
    points, channels = points_from_cloud(cloud, "cloud", ("intensity", "ring"))
    assert channels == ("x", "y", "z", *(c for c in rellis_frame.channels if c in ("intensity", "ring")))
    np.testing.assert_array_equal(points[:, :3], rellis_frame.xyz)
    with pytest.raises(ValueError, match="unknown datatype 99"):
        points_from_cloud(cloud, "cloud")  # all fields: the bad ones too


def test_sequence_gaps_count_messages_never_taken():
    gaps = SequenceGaps()

    def info(sequence, publisher=b"a"):
        return {"publication_sequence_number": sequence, "publisher_gid": {"data": publisher}}

    assert gaps.add(info(7)) == 0  # what a publisher sent before its first message reached us: not due
    assert gaps.add(info(8)) == 0
    assert gaps.add(info(11)) == 2
    assert gaps.add(info(3, b"b")) == 0  # another publisher, counted apart
    assert gaps.add(info(5, b"b")) == 1
    assert gaps.add(info(10)) == 0  # late or repeated: no gap, no negative count
    assert gaps.add({"publication_sequence_number": None}) == 0  # a middleware without sequence numbers
    assert gaps.lost == 3


def test_stamps_keep_their_decimal_value():
    assert stamp_to_ns(1581624663.149) == 1581624663_149000000  # the float is ...663.14899992...


def test_label_cloud_must_match_the_scan(rellis_frame):
    messages = frame_to_messages(rellis_frame)
    with pytest.raises(MessageError, match="a label cloud but no class set"):
        frame_from_messages(messages.cloud, {}, rellis_frame.rig, messages.label_cloud)
    bad = frame_to_messages(rellis_frame)
    np.frombuffer(bad.label_cloud.data, np.uint8).reshape(-1, bad.label_cloud.point_step)[0, 12] = 200
    with pytest.raises(
        MessageError, match=r"label id\(s\) \[200\] are not training ids of class set 'rellis3d'"
    ):
        frame_from_messages(messages.cloud, {}, rellis_frame.rig, bad.label_cloud, "rellis3d")


def test_demo_writes_the_projection_picture_and_summary(tmp_path, capsys):
    main(["--out", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    picture = cv2.imread(str(tmp_path / "nuscenes_projection.png"))
    assert picture.shape == (900, 2400, 3)  # six 800x450 tiles, three per row
    assert summary["points"] == 34688
    seen = summary["points_per_camera"]
    assert list(seen) == list(NUSCENES_COUNTS)
    for camera, count in seen.items():  # the occlusion test hides some points, never most of them
        assert 0.9 * NUSCENES_COUNTS[camera] < count < NUSCENES_COUNTS[camera]
    assert "CAM_BACK" in capsys.readouterr().out


def session_bag(tmp_path, frame, tf_static=True):
    """A recorded session as xkd_ros.evaluate.live writes one: the replayed frame's topics (images,
    CameraInfo and, unless not wanted, /tf_static) and the node's labelled cloud of it."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import Reader

    from xkd_ros.classes import load_class_set
    from xkd_ros.data.rosbag import write_bag
    from xkd_ros.msgs.labeled_cloud import create_labeled_cloud
    from xkd_ros.record import BagSink, replay_offer

    replayed = write_bag([frame], tmp_path / "replayed", image_format="jpeg")
    sink = BagSink(tmp_path / "session")
    with Reader(replayed) as reader:
        connections = [c for c in reader.connections if tf_static or c.topic != "/tf_static"]
        for c in connections:
            sink.add(c.topic, c.msgtype, c.ext.offered_qos_profiles)
        for c, log_ns, raw in reader.messages(connections=connections):
            sink.write(c.topic, log_ns, bytes(raw))
    messages = frame_to_messages(frame, "jpeg")
    palette = load_class_set(frame.classes).colors
    labels = frame.labels.astype(np.uint8)
    cloud = create_labeled_cloud(
        messages.cloud.header, frame.xyz, None, labels, np.ones(len(labels), np.float32), palette
    )
    sink.add("/segment/output/labeled_cloud", "sensor_msgs/msg/PointCloud2", [replay_offer()])
    sink.write("/segment/output/labeled_cloud", stamp_to_ns(frame.stamp), serialize_message(cloud))
    sink.close()
    return tmp_path / "session", palette


def test_the_session_picture_is_drawn_from_what_the_recording_holds(tmp_path, rellis_frame):
    from xkd_ros.classes import IGNORE_COLOR, IGNORE_INDEX
    from xkd_ros.session import read_labelled_scan, session_picture

    bag, palette = session_bag(tmp_path, rellis_frame)
    scan = read_labelled_scan(bag)
    assert scan.frame_id == rellis_frame.rig.lidar_frame
    assert scan.stamp_ns == stamp_to_ns(rellis_frame.stamp)
    labels = rellis_frame.labels
    colours = np.where(
        (labels == IGNORE_INDEX)[:, None], IGNORE_COLOR, palette[np.minimum(labels, len(palette) - 1)]
    )
    assert np.array_equal(scan.rgb, colours)  # the cloud's packed rgb, as rviz's RGB8 shows it
    # calibration from the recorded CameraInfo and /tf_static, not from a rig file
    (camera,) = scan.rig
    original = rellis_frame.rig["pylon_camera"]
    assert camera.name == "pylon_camera"
    np.testing.assert_allclose(camera.intrinsics.K, original.intrinsics.K)
    np.testing.assert_allclose(camera.T_cam_lidar, original.T_cam_lidar, atol=1e-6)
    assert scan.images["pylon_camera"].shape == rellis_frame.images["pylon_camera"].shape
    picture = session_picture(scan)
    assert picture.shape[0] == 480 * original.intrinsics.height // original.intrinsics.width
    assert picture.shape[1] == 480 + picture.shape[0]  # the camera with its points, the bird's-eye view


def test_without_tf_static_the_session_picture_takes_the_rig_or_shows_the_bev(tmp_path, rellis_frame):
    from xkd_ros.session import read_labelled_scan, session_picture

    bag, _ = session_bag(tmp_path, rellis_frame, tf_static=False)
    assert read_labelled_scan(bag).rig is None
    assert session_picture(read_labelled_scan(bag)).shape == (600, 600, 3)
    assert read_labelled_scan(bag, rig=rellis_frame.rig).rig is rellis_frame.rig
