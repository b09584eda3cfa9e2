"""`xkd-demo` end to end on the real nuScenes keyframe, and the Frame <-> messages conversion under it."""

import json

import cv2
import numpy as np
import pytest
from conftest import NUSCENES_COUNTS

from xkd_ros.data.messages import (
    MessageError,
    SequenceGaps,
    compressed_image_size,
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


@pytest.mark.parametrize(("extension", "kind"), [(".jpg", "jpeg"), (".png", "png")])
@pytest.mark.parametrize(("width", "height"), [(1600, 900), (17, 5), (1, 1)])
def test_compressed_image_size_from_the_header(extension, kind, width, height):
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    data = cv2.imencode(extension, image)[1]
    assert compressed_image_size(data.tobytes()) == (kind, width, height)
    padded = np.concatenate([data.ravel(), np.zeros(100, np.uint8)])  # USB cameras pad their JPEGs
    assert compressed_image_size(padded) == (kind, width, height)


def test_compressed_image_size_of_a_huge_png_without_decoding_it():
    """A few hundred bytes declaring 20000 x 20000 pixels: read as such from the header (decoding would
    allocate 1.2 GB)."""
    data = bytearray(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    data[16:24] = (20000).to_bytes(4, "big") * 2
    assert compressed_image_size(bytes(data)) == ("png", 20000, 20000)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "neither a JPEG nor a PNG"),
        (b"GIF89a" + bytes(100), "neither a JPEG nor a PNG"),
        (b"\x89PNG\r\n\x1a\n" + bytes(4), "without an IHDR"),
        ("half", "end-of-image marker"),
        ("no-frame", "without a frame header"),
        ("zero-size", "declares a 0x8 image"),
        (b"\xff\xd8\x00\x10" + bytes(20) + b"\xff\xd9", "header broken at byte 2"),
    ],
)
def test_compressed_image_size_refuses_what_is_not_a_whole_image(data, reason):
    jpeg = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    sof = jpeg.index(b"\xff\xc0")
    if data == "half":
        data = bytes(jpeg[: len(jpeg) // 2])
    elif data == "no-frame":
        data = b"\xff\xd8\xff\xfe\x00\x04ab\xff\xd9"  # a comment, then the end
    elif data == "zero-size":
        jpeg[sof + 7 : sof + 9] = b"\x00\x00"
        data = bytes(jpeg)
    with pytest.raises(MessageError, match=reason):
        compressed_image_size(data)


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
