"""Tests for xkd_ros.msgs.image, the cv_bridge replacement."""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from xkd_ros.msgs.image import CvBridge, CvBridgeError, compressed_image_size, cvtColorForDisplay, getCvType

DATA = Path(__file__).parent / "data" / "nuscenes_demo"
LITTLE = sys.byteorder == "little"


@pytest.fixture
def bridge() -> CvBridge:
    return CvBridge()


def _random(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    """Values over the dtype's whole range, so sign, byte order and saturation mistakes show."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(shape) * 1e6).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def _msg(encoding: str, height: int, width: int, step: int, data: bytes, is_bigendian: int = 0) -> Image:
    return Image(
        encoding=encoding, height=height, width=width, step=step, is_bigendian=is_bigendian, data=data
    )


ROUND_TRIPS = [
    ("rgb8", np.uint8, 3),
    ("bgr8", np.uint8, 3),
    ("rgba8", np.uint8, 4),
    ("bgra8", np.uint8, 4),
    ("mono8", np.uint8, 1),
    ("mono16", np.uint16, 1),
    ("8UC1", np.uint8, 1),
    ("8UC2", np.uint8, 2),
    ("8UC3", np.uint8, 3),
    ("8UC4", np.uint8, 4),
    ("8SC3", np.int8, 3),
    ("16UC1", np.uint16, 1),
    ("16SC2", np.int16, 2),
    ("32SC1", np.int32, 1),
    ("32FC1", np.float32, 1),
    ("32FC3", np.float32, 3),
    ("64FC1", np.float64, 1),
]


@pytest.mark.parametrize(("encoding", "dtype", "channels"), ROUND_TRIPS)
def test_round_trip(bridge: CvBridge, encoding: str, dtype: type, channels: int) -> None:
    shape = (5, 7) if channels == 1 else (5, 7, channels)
    image = _random(shape, dtype)
    msg = bridge.cv2_to_imgmsg(image, encoding)
    assert isinstance(msg, Image)
    assert (msg.encoding, msg.height, msg.width) == (encoding, 5, 7)
    assert msg.step == 7 * channels * np.dtype(dtype).itemsize
    assert len(msg.data) == msg.step * 5
    assert msg.is_bigendian == (not LITTLE)
    back = bridge.imgmsg_to_cv2(msg)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, image)
    assert back.shape == shape


@pytest.mark.parametrize(("encoding", "dtype", "channels"), [r for r in ROUND_TRIPS if r[0][0].isdigit()])
def test_passthrough_names_the_type(bridge: CvBridge, encoding: str, dtype: type, channels: int) -> None:
    image = _random((2, 3) if channels == 1 else (2, 3, channels), dtype)
    msg = bridge.cv2_to_imgmsg(image)
    assert msg.encoding == encoding
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg, encoding), image)


def test_unpadded_decode_is_a_view_on_the_message(bridge: CvBridge) -> None:
    msg = bridge.cv2_to_imgmsg(_random((4, 6, 3), np.uint8), "rgb8")
    view = bridge.imgmsg_to_cv2(msg)
    assert np.shares_memory(view, msg.data)
    assert np.shares_memory(bridge.imgmsg_to_cv2(msg, "rgb8"), msg.data)  # same encoding: no copy either
    view[0, 0] = (1, 2, 3)
    view[3, 5, 2] = 99
    assert list(msg.data[:3]) == [1, 2, 3]
    assert msg.data[-1] == 99


def test_padded_rows_decode_to_a_contiguous_copy(bridge: CvBridge) -> None:
    image = _random((4, 5, 3), np.uint8)
    step = 5 * 3 + 7
    rows = np.full((4, step), 0xAB, np.uint8)  # garbage in the padding
    rows[:, :15] = image.reshape(4, 15)
    msg = _msg("rgb8", 4, 5, step, rows.tobytes())
    back = bridge.imgmsg_to_cv2(msg)
    np.testing.assert_array_equal(back, image)
    assert back.flags.c_contiguous
    assert not np.shares_memory(back, msg.data)
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg, "bgr8"), image[..., ::-1])


def test_padded_step_need_not_be_a_multiple_of_the_pixel_size(bridge: CvBridge) -> None:
    image = _random((3, 4), np.uint16)
    step = 4 * 2 + 3
    rows = np.full((3, step), 0xCD, np.uint8)
    rows[:, :8] = image.astype("<u2").view(np.uint8).reshape(3, 8)
    msg = _msg("mono16", 3, 4, step, rows.tobytes())
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg), image)


@pytest.mark.parametrize(("encoding", "dtype"), [("mono16", np.uint16), ("32FC1", np.float32)])
def test_big_endian_messages_decode_to_native_values(bridge: CvBridge, encoding: str, dtype: type) -> None:
    image = _random((3, 4), dtype)
    data = image.astype(np.dtype(dtype).newbyteorder(">")).tobytes()
    msg = _msg(encoding, 3, 4, 4 * np.dtype(dtype).itemsize, data, is_bigendian=1)
    back = bridge.imgmsg_to_cv2(msg)
    assert back.dtype == dtype
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, image)
    assert bytes(msg.data) == data


def test_big_endian_padded_message(bridge: CvBridge) -> None:
    image = _random((3, 4), np.uint16)
    rows = np.full((3, 10), 0xEE, np.uint8)
    rows[:, :8] = image.astype(">u2").view(np.uint8).reshape(3, 8)
    msg = _msg("mono16", 3, 4, 10, rows.tobytes(), is_bigendian=1)
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg), image)
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg, "mono8"), np.rint(image / 257.0).astype(np.uint8))


def test_big_endian_array_sets_is_bigendian(bridge: CvBridge) -> None:
    image = _random((3, 4), np.float32).astype(">f4")
    msg = bridge.cv2_to_imgmsg(image, "32FC1")
    assert msg.is_bigendian == 1
    assert bytes(msg.data) == image.tobytes()
    back = bridge.imgmsg_to_cv2(msg)
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, image)


@pytest.mark.parametrize("view", ["flipped", "every_other_row", "channels_reversed", "fortran"])
def test_non_contiguous_arrays_encode(bridge: CvBridge, view: str) -> None:
    base = _random((6, 8, 3), np.uint8)
    image = {
        "flipped": base[:, ::-1],
        "every_other_row": base[::2],
        "channels_reversed": base[..., ::-1],
        "fortran": np.asfortranarray(base),
    }[view]
    assert not image.flags.c_contiguous
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(bridge.cv2_to_imgmsg(image, "bgr8")), image)


def test_header_is_carried(bridge: CvBridge) -> None:
    header = Header(frame_id="cam_front")
    header.stamp.sec = 12
    msg = bridge.cv2_to_imgmsg(np.zeros((2, 2), np.uint8), "mono8", header=header)
    assert (msg.header.frame_id, msg.header.stamp.sec) == ("cam_front", 12)


def test_rgb_bgr_swap(bridge: CvBridge) -> None:
    image = _random((4, 5, 3), np.uint8)
    np.testing.assert_array_equal(
        bridge.imgmsg_to_cv2(bridge.cv2_to_imgmsg(image, "rgb8"), "bgr8"), image[..., ::-1]
    )
    np.testing.assert_array_equal(
        bridge.imgmsg_to_cv2(bridge.cv2_to_imgmsg(image, "bgr8"), "rgb8"), image[..., ::-1]
    )


def test_rgb8_to_mono8_matches_opencv(bridge: CvBridge) -> None:
    image = _random((6, 7, 3), np.uint8)
    mono = bridge.imgmsg_to_cv2(bridge.cv2_to_imgmsg(image, "rgb8"), "mono8")
    np.testing.assert_array_equal(mono, cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    assert mono.shape == (6, 7)


def test_bgra8_to_rgb8_drops_alpha(bridge: CvBridge) -> None:
    image = _random((3, 4, 4), np.uint8)
    rgb = bridge.imgmsg_to_cv2(bridge.cv2_to_imgmsg(image, "bgra8"), "rgb8")
    np.testing.assert_array_equal(rgb, image[..., 2::-1])


def test_mono16_to_mono8_scales(bridge: CvBridge) -> None:
    image = np.array([[0, 257, 128 * 257, 65535, 300]], np.uint16)
    mono8 = bridge.imgmsg_to_cv2(bridge.cv2_to_imgmsg(image, "mono16"), "mono8")
    assert mono8.dtype == np.uint8
    np.testing.assert_array_equal(mono8, [[0, 1, 128, 255, 1]])


def test_mono8_to_mono16_scales(bridge: CvBridge) -> None:
    image = np.array([[0, 1, 128, 255]], np.uint8)
    mono16 = bridge.imgmsg_to_cv2(bridge.cv2_to_imgmsg(image, "mono8"), "mono16")
    assert mono16.dtype == np.uint16
    np.testing.assert_array_equal(mono16, [[0, 257, 128 * 257, 65535]])


def test_colour_and_depth_change_together(bridge: CvBridge) -> None:
    image = _random((4, 4, 3), np.uint16)
    mono8 = bridge.imgmsg_to_cv2(bridge.cv2_to_imgmsg(image, "bgr16"), "mono8")
    expected = np.rint(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) * (255 / 65535)).astype(np.uint8)
    np.testing.assert_array_equal(mono8, expected)
    rgb16 = bridge.imgmsg_to_cv2(bridge.cv2_to_imgmsg(_random((2, 2, 3), np.uint8), "bgr8"), "rgb16")
    assert rgb16.dtype == np.uint16
    assert (rgb16 % 257 == 0).all()


@pytest.mark.parametrize(
    ("encoding", "code"),
    [
        ("bayer_rggb8", cv2.COLOR_BayerBG2BGR),
        ("bayer_bggr8", cv2.COLOR_BayerRG2BGR),
        ("bayer_gbrg8", cv2.COLOR_BayerGR2BGR),
        ("bayer_grbg8", cv2.COLOR_BayerGB2BGR),
    ],
)
def test_bayer_to_bgr8_matches_opencv(bridge: CvBridge, encoding: str, code: int) -> None:
    raw = _random((8, 10), np.uint8)
    msg = _msg(encoding, 8, 10, 10, raw.tobytes())
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg, "bgr8"), cv2.cvtColor(raw, code))


def test_bayer16_to_bgr8_demosaics_then_scales(bridge: CvBridge) -> None:
    raw = _random((8, 10), np.uint16)
    msg = _msg("bayer_rggb16", 8, 10, 20, raw.astype("<u2").tobytes())
    expected = np.rint(cv2.cvtColor(raw, cv2.COLOR_BayerBG2BGR) / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg, "bgr8"), expected)


@pytest.mark.parametrize(
    ("encoding", "code"), [("yuv422", cv2.COLOR_YUV2BGR_UYVY), ("yuv422_yuy2", cv2.COLOR_YUV2BGR_YUY2)]
)
def test_yuv422_to_bgr8_matches_opencv(bridge: CvBridge, encoding: str, code: int) -> None:
    raw = _random((4, 6, 2), np.uint8)
    msg = _msg(encoding, 4, 6, 12, raw.tobytes())
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg, "bgr8"), cv2.cvtColor(raw, code))


def test_depth_only_conversion_rounds_and_saturates(bridge: CvBridge) -> None:
    depth = np.array([[-1.5, 0.4, 2.6, 70000.0]], np.float32)
    out = bridge.imgmsg_to_cv2(bridge.cv2_to_imgmsg(depth, "32FC1"), "16UC1")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, [[0, 0, 3, 65535]])
    signed = np.array([[-5, 100, 300]], np.int16)
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(bridge.cv2_to_imgmsg(signed), "32SC1"), signed)


def test_colour_to_same_channel_count_generic_type(bridge: CvBridge) -> None:
    image = _random((3, 3), np.uint16)
    out = bridge.imgmsg_to_cv2(bridge.cv2_to_imgmsg(image, "mono16"), "16UC1")
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize(
    ("encoding", "shape", "dtype", "desired", "words"),
    [
        ("32FC1", (2, 2), np.float32, "rgb8", "not a color format"),
        ("8UC3", (2, 2, 3), np.uint8, "8UC1", "same number of channels"),
        ("8UC1", (2, 2), np.uint8, "mono8", "not a color format"),
        ("bgr8", (2, 2, 3), np.uint8, "8UC1", "same number of channels"),
        ("bgr8", (2, 2, 3), np.uint8, "yuv422", "Unsupported conversion"),
        ("mono8", (2, 2), np.uint8, "foo8", "'foo8'"),
    ],
)
def test_impossible_conversions_raise(bridge: CvBridge, encoding, shape, dtype, desired, words) -> None:
    msg = bridge.cv2_to_imgmsg(np.zeros(shape, dtype), encoding)
    with pytest.raises(CvBridgeError, match=words):
        bridge.imgmsg_to_cv2(msg, desired)


def test_bayer_to_rgba_is_unsupported_as_in_cv_bridge(bridge: CvBridge) -> None:
    msg = _msg("bayer_rggb8", 2, 2, 2, bytes(4))
    with pytest.raises(CvBridgeError, match=r"Unsupported conversion from \[bayer_rggb8\] to \[rgba8\]"):
        bridge.imgmsg_to_cv2(msg, "rgba8")


def test_compressed_jpeg_file_decodes_like_imread(bridge: CvBridge) -> None:
    path = next(DATA.glob("*CAM_FRONT__*.jpg"))
    msg = CompressedImage(format="jpeg")
    msg.data = path.read_bytes()
    expected = cv2.imread(str(path))
    np.testing.assert_array_equal(bridge.compressed_imgmsg_to_cv2(msg, "rgb8"), expected[..., ::-1])
    np.testing.assert_array_equal(bridge.compressed_imgmsg_to_cv2(msg), expected)


def test_compressed_jpeg_round_trip(bridge: CvBridge) -> None:
    image = cv2.GaussianBlur(_random((48, 64, 3), np.uint8), (9, 9), 3)
    msg = bridge.cv2_to_compressed_imgmsg(image, params=(cv2.IMWRITE_JPEG_QUALITY, 95))
    assert isinstance(msg, CompressedImage)
    assert msg.format == "jpg"
    assert bytes(msg.data[:2]) == b"\xff\xd8"
    back = bridge.compressed_imgmsg_to_cv2(msg, "bgr8")
    assert back.shape == image.shape
    assert np.abs(back.astype(int) - image).mean() < 3


@pytest.mark.parametrize(
    ("encoding", "shape", "dtype"), [("mono16", (9, 11), np.uint16), ("bgr8", (9, 11, 3), np.uint8)]
)
def test_compressed_png_round_trip_is_exact(bridge: CvBridge, encoding: str, shape, dtype) -> None:
    image = _random(shape, dtype)
    msg = bridge.cv2_to_compressed_imgmsg(image, "png")
    assert msg.format == "png"
    for desired in ("passthrough", encoding):
        back = bridge.compressed_imgmsg_to_cv2(msg, desired)
        assert back.dtype == dtype
        np.testing.assert_array_equal(back, image)


def test_compressed_grey_image_is_mono8_not_bgr8(bridge: CvBridge) -> None:
    image = _random((5, 6), np.uint8)
    msg = bridge.cv2_to_compressed_imgmsg(image, "png")
    np.testing.assert_array_equal(bridge.compressed_imgmsg_to_cv2(msg, "mono8"), image)
    np.testing.assert_array_equal(
        bridge.compressed_imgmsg_to_cv2(msg, "rgb8"), np.stack([image] * 3, axis=-1)
    )


@pytest.mark.parametrize("data", [b"", b"not an image at all"])
def test_garbage_compressed_data_names_the_field(bridge: CvBridge, data: bytes) -> None:
    msg = CompressedImage(format="jpeg")
    msg.data = data
    with pytest.raises(CvBridgeError, match=r"`data` \(\d+ bytes, format 'jpeg'\)"):
        bridge.compressed_imgmsg_to_cv2(msg)


def test_unknown_compressed_format_raises(bridge: CvBridge) -> None:
    with pytest.raises(CvBridgeError, match="'nope'"):
        bridge.cv2_to_compressed_imgmsg(np.zeros((2, 2, 3), np.uint8), "nope")


def test_unknown_encoding_names_the_field(bridge: CvBridge) -> None:
    with pytest.raises(CvBridgeError, match=r"'rgb9'.*`encoding`"):
        bridge.imgmsg_to_cv2(_msg("rgb9", 1, 1, 3, bytes(3)))


def test_short_data_names_the_field_and_sizes(bridge: CvBridge) -> None:
    with pytest.raises(CvBridgeError, match=r"`data` holds 11 bytes .* 3 x 4 = 12"):
        bridge.imgmsg_to_cv2(_msg("mono8", 4, 3, 3, bytes(11)))


def test_excess_data_is_not_silently_dropped(bridge: CvBridge) -> None:
    with pytest.raises(CvBridgeError, match=r"`data` holds 13 bytes"):
        bridge.imgmsg_to_cv2(_msg("mono8", 4, 3, 3, bytes(13)))


def test_small_step_names_the_field(bridge: CvBridge) -> None:
    with pytest.raises(CvBridgeError, match=r"`step` is 5 .* needs 6"):
        bridge.imgmsg_to_cv2(_msg("mono16", 2, 3, 5, bytes(10)))


@pytest.mark.parametrize(("height", "width", "step"), [(0, 4, 12), (3, 0, 0), (0, 0, 0)])
def test_empty_images(bridge: CvBridge, height: int, width: int, step: int) -> None:
    msg = _msg("rgb8", height, width, step, b"")
    assert bridge.imgmsg_to_cv2(msg).shape == (height, width, 3)
    mono = bridge.imgmsg_to_cv2(msg, "mono16")
    assert (mono.shape, mono.dtype) == ((height, width), np.uint16)
    encoded = bridge.cv2_to_imgmsg(np.zeros((height, width, 3), np.uint8))
    assert (encoded.step, len(encoded.data)) == (width * 3, 0)
    assert bridge.imgmsg_to_cv2(encoded).shape == (height, width, 3)


@pytest.mark.parametrize(
    ("image", "encoding", "words"),
    [
        (np.zeros((2, 2, 3), np.uint8), "mono8", "mono8, but image has incompatible type 8UC3"),
        (np.zeros((2, 2), np.float32), "bgr8", "bgr8, but image has incompatible type 32FC1"),
        (np.zeros((2, 2), np.uint16), "mono8", "mono8, but image has incompatible type 16UC1"),
        (np.zeros((2, 2), np.uint8), "mono9", "'mono9'"),
        (np.zeros((2, 2), np.int64), "passthrough", "int64"),
        (np.zeros((2, 2, 513), np.uint8), "passthrough", "513 channels"),
        (np.zeros(4, np.uint8), "passthrough", "shape"),
    ],
)
def test_cv2_to_imgmsg_rejects_mismatches(
    bridge: CvBridge, image: np.ndarray, encoding: str, words: str
) -> None:
    with pytest.raises(CvBridgeError, match=words):
        bridge.cv2_to_imgmsg(image, encoding)


def test_non_array_input_is_a_type_error(bridge: CvBridge) -> None:
    with pytest.raises(TypeError):
        bridge.cv2_to_imgmsg([[1, 2], [3, 4]])


@dataclasses.dataclass
class RosbagsImage:
    """The shape of a rosbags sensor_msgs/msg/Image: data is a numpy uint8 array."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: np.ndarray


def test_rosbags_style_message(bridge: CvBridge) -> None:
    image = _random((3, 4, 3), np.uint8)
    msg = RosbagsImage(3, 4, "bgr8", 0, 12, image.reshape(-1).copy())
    view = bridge.imgmsg_to_cv2(msg)
    np.testing.assert_array_equal(view, image)
    assert np.shares_memory(view, msg.data)
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg, "rgb8"), image[..., ::-1])
    depth = _random((2, 3), np.float32)
    ns = types.SimpleNamespace(
        height=2, width=3, encoding="32FC1", is_bigendian=0, step=12, data=depth.view(np.uint8).reshape(-1)
    )
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(ns), depth)
    compressed = types.SimpleNamespace(
        format="png", data=np.frombuffer(cv2.imencode(".png", image)[1], np.uint8)
    )
    np.testing.assert_array_equal(bridge.compressed_imgmsg_to_cv2(compressed), image)


def test_bytes_and_list_data(bridge: CvBridge) -> None:
    image = _random((2, 3), np.uint8)
    as_bytes = types.SimpleNamespace(
        height=2, width=3, encoding="mono8", is_bigendian=0, step=3, data=image.tobytes()
    )
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(as_bytes), image)
    as_list = types.SimpleNamespace(**{**vars(as_bytes), "data": image.reshape(-1).tolist()})
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(as_list), image)


def test_type_helpers(bridge: CvBridge) -> None:
    assert bridge.encoding_to_dtype_with_channels("bgr8") == ("uint8", 3)
    assert bridge.encoding_to_dtype_with_channels("mono16") == ("uint16", 1)
    assert bridge.encoding_to_dtype_with_channels("32FC2") == ("float32", 2)
    assert bridge.encoding_to_dtype_with_channels("yuv422") == ("uint8", 2)
    assert bridge.encoding_to_cvtype2("rgb8") == cv2.CV_8UC3
    assert bridge.encoding_to_cvtype2("bayer_grbg16") == cv2.CV_16UC1
    assert bridge.encoding_to_cvtype2("64FC4") == cv2.CV_64FC4
    assert bridge.cvtype2_to_dtype_with_channels(cv2.CV_16SC2) == ("int16", 2)
    assert bridge.dtype_with_channels_to_cvtype2(np.dtype(np.float64), 4) == "64FC4"
    assert bridge.dtype_with_channels_to_cvtype2(np.dtype(">u2"), 1) == "16UC1"
    with pytest.raises(CvBridgeError, match="'rgb9'"):
        bridge.encoding_to_cvtype2("rgb9")
    with pytest.raises(CvBridgeError, match="12345"):
        bridge.cvtype2_to_dtype_with_channels(12345)


DEPTHS = {"8U": np.uint8, "8S": np.int8, "16U": np.uint16, "16S": np.int16, "32S": np.int32}
DEPTHS |= {"32F": np.float32, "64F": np.float64}


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("channels", [5, 7, 64, 512])
def test_generic_encodings_round_trip_any_channel_count(bridge: CvBridge, depth: str, channels: int) -> None:
    image = _random((3, 2, channels), DEPTHS[depth], seed=channels)
    msg = bridge.cv2_to_imgmsg(image)
    assert (msg.encoding, msg.step) == (f"{depth}C{channels}", 2 * channels * image.itemsize)
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg), image)
    named = bridge.cv2_to_imgmsg(image, f"{depth}C{channels}")
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(named, f"{depth}C{channels}"), image)
    assert bridge.encoding_to_dtype_with_channels(msg.encoding) == (np.dtype(DEPTHS[depth]).name, channels)


@pytest.mark.parametrize("depth", DEPTHS)
def test_bare_depth_is_one_channel(bridge: CvBridge, depth: str) -> None:
    image = _random((3, 4), DEPTHS[depth])
    msg = bridge.cv2_to_imgmsg(image, depth)
    assert msg.encoding == depth
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg), image)
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg, f"{depth}C1"), image)
    with pytest.raises(CvBridgeError, match=f"{depth}, but image has incompatible type"):
        bridge.cv2_to_imgmsg(np.dstack([image, image]), depth)


@pytest.mark.parametrize("depth", DEPTHS)
def test_getcvtype_is_opencvs_cv_maketype(depth: str) -> None:
    code = getattr(cv2, f"CV_{depth}")
    for channels in (1, 2, 3, 4, 5, 9, 100, 512):
        assert getCvType(f"{depth}C{channels}") == cv2.CV_MAKETYPE(code, channels)
    assert getCvType(depth) == cv2.CV_MAKETYPE(code, 1) == getattr(cv2, f"CV_{depth}C1")
    assert getCvType(f"{depth}C007") == cv2.CV_MAKETYPE(code, 7)  # cv_bridge reads the number with atoi
    bridge = CvBridge()
    for channels in (1, 5, 512):
        expected = (np.dtype(DEPTHS[depth]).name, channels)
        assert bridge.cvtype2_to_dtype_with_channels(cv2.CV_MAKETYPE(code, channels)) == expected


def test_getcvtype_of_named_encodings() -> None:
    assert getCvType("bgr8") == getCvType("rgb8") == cv2.CV_8UC3
    assert getCvType("rgba16") == cv2.CV_16UC4
    assert getCvType("mono16") == getCvType("bayer_rggb16") == cv2.CV_16UC1
    assert getCvType("yuv422") == cv2.CV_8UC2


@pytest.mark.parametrize(
    "encoding", ["8UC0", "8UC513", "8UC1000", "8UC", "8uc3", "16FC1", "8UC3 ", "rgb9", ""]
)
def test_unknown_encodings_raise_as_in_cv_bridge(bridge: CvBridge, encoding: str) -> None:
    with pytest.raises(RuntimeError, match="Unrecognized image encoding"):
        getCvType(encoding)
    with pytest.raises(CvBridgeError, match="Unrecognized image encoding"):
        bridge.encoding_to_cvtype2(encoding)
    with pytest.raises(CvBridgeError, match="Image field `encoding`"):
        bridge.imgmsg_to_cv2(_msg(encoding, 1, 1, 1, b"\0"))


def test_getcvtype_of_a_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="int"):
        getCvType(16)


def test_generic_depth_conversion_keeps_channels_and_scales_8_to_16_bits(bridge: CvBridge) -> None:
    image = _random((2, 3, 5), np.uint8)
    msg = bridge.cv2_to_imgmsg(image)
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg, "16UC5"), image.astype(np.uint16) * 257)
    as_float = bridge.imgmsg_to_cv2(msg, "32FC5")
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(as_float, image)
    with pytest.raises(CvBridgeError, match="same number of channels"):
        bridge.imgmsg_to_cv2(msg, "8UC4")
    with pytest.raises(CvBridgeError, match="not a color format"):
        bridge.imgmsg_to_cv2(msg, "bgr8")


def test_converted_image_holds_no_hidden_reference(bridge: CvBridge) -> None:
    """cv_bridge's enumerants test: the converted array is the caller's alone (getrefcount counts its arg)."""
    msg = _msg("rgba8", 4, 5, 20, bytes(range(80)))
    converted = bridge.imgmsg_to_cv2(msg, "rgb8")
    assert sys.getrefcount(converted) == 2
    assert converted.base is None


def test_cv_bridge_lookup_tables(bridge: CvBridge) -> None:
    assert bridge.cvtype_to_name[cv2.CV_16SC3] == "16SC3"
    assert len(bridge.cvtype_to_name) == 28
    assert bridge.cvdepth_to_numpy_depth[cv2.CV_32F] == "float32"
    assert bridge.numpy_type_to_cvtype["uint8"] == "8U"
    assert bridge.numpy_type_to_cvtype["8U"] == "uint8"


def test_display_colours_label_images_with_cv_bridges_table() -> None:
    """Expected values are cv_bridge's rgb_colors.cpp entries x 255, truncated, in BGR order."""
    labels = np.array([[0, 9, 146], [-1, 110, 123], [-147, 145, 292]])
    shown = cvtColorForDisplay(labels, "32SC1", "")  # int64 read as 32SC1, as cv_bridge's binding casts
    assert shown.dtype == np.uint8
    assert shown.shape == (3, 3, 3)
    # aliceblue, blue, 146 wraps to 0; -1 the background; palevioletred and sandybrown as cv_bridge has them;
    # a negative label has no colour; yellowgreen (0.604, 0.804, 0.196)
    assert shown.tolist() == [
        [[255, 248, 239], [255, 0, 0], [255, 248, 239]],
        [[0, 0, 0], [237, 237, 174], [95, 163, 249]],
        [[0, 0, 0], [49, 205, 154], [255, 248, 239]],
    ]
    np.testing.assert_array_equal(cvtColorForDisplay(labels.astype(np.int32), "32SC1", "bgr8"), shown)


def test_display_dynamic_scaling_maps_min_max_to_0_255() -> None:
    depth = np.array([[0, 1000], [2000, 4000]], np.uint16)
    assert cvtColorForDisplay(depth, "16UC1", "mono8", True).tolist() == [[0, 64], [128, 255]]
    grey = cvtColorForDisplay(depth, "16UC1", "", False, 0.0, 2000.0)  # fixed range; beyond it saturates
    np.testing.assert_array_equal(
        grey, np.repeat(np.array([[0, 128], [255, 255]], np.uint8)[..., None], 3, 2)
    )
    flat = cvtColorForDisplay(np.full((2, 3), 7, np.uint16), "16UC1", "mono8", True)
    np.testing.assert_array_equal(flat, np.full((2, 3, 3), 128, np.uint8))  # cv_bridge: mid-grey, 3 channels


def test_display_colormap_blacks_out_nan() -> None:
    depth = np.array([[0.5, np.nan], [1.5, 2.5]], np.float32)
    shown = cvtColorForDisplay(depth, "32FC1", "bgr8", True, colormap=cv2.COLORMAP_JET)
    scaled = np.array([[0, 0], [128, 255]], np.uint8)  # 0.5..2.5 -> 0..255; NaN reads 0 before it is blacked
    expected = cv2.applyColorMap(scaled, cv2.COLORMAP_JET)
    expected[0, 1] = 0
    np.testing.assert_array_equal(shown, expected)


def test_display_converts_colour_and_keeps_what_needs_nothing() -> None:
    image = _random((2, 3, 3), np.uint8)
    assert cvtColorForDisplay(image, "bgr8", "") is image
    np.testing.assert_array_equal(cvtColorForDisplay(image, "bgr8", "rgb8"), image[..., ::-1])
    mono16 = np.array([[0, 65535]], np.uint16)
    assert cvtColorForDisplay(mono16, "16UC1", "").tolist() == [[[0, 0, 0], [255, 255, 255]]]


@pytest.mark.parametrize(
    ("source", "encoding_in", "encoding_out", "words"),
    [
        (np.zeros((2, 2), np.float32), "32FC1", "", "is not a color format"),  # cv_bridge needs scaling here
        (np.zeros((2, 2), np.float64), "64FC1", "", "cannot be guessed"),
        (np.zeros((2, 2), np.uint16), "16UC1", "mono16", "none of mono8"),
        (np.zeros((2, 2), np.uint16), "mono8", "", "source is 16UC1 but encoding_in 'mono8' is 8UC1"),
        (np.zeros((2, 2, 3), np.uint8), "bgr8", "", "2-channel|3-channel"),
        (np.zeros((2, 2), np.uint8), "rgb9", "", "'rgb9'"),
    ],
)
def test_display_errors_are_runtime_errors_as_in_cv_bridge(source, encoding_in, encoding_out, words) -> None:
    scaling = source.ndim == 3
    with pytest.raises(RuntimeError, match=words):
        cvtColorForDisplay(source, encoding_in, encoding_out, scaling)


def test_display_of_a_non_array_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        cvtColorForDisplay([[1, 2]], "mono8", "")


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
    with pytest.raises(CvBridgeError, match=reason):
        compressed_image_size(data)
