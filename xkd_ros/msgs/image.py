"""Conversions between sensor_msgs Image / CompressedImage and numpy arrays.

Mirrors the Python API of ROS's cv_bridge (``CvBridge``, ``CvBridgeError``, same method names,
arguments and conversion rules, ported from cv_bridge.cpp), because cv_bridge ships no wheel and code
written against it should run unchanged. Messages are duck-typed, so rosbags messages work as well as
rclpy ones; created messages are real ``sensor_msgs.msg`` messages.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from xkd_ros.msgs.fields import whole_number

__all__ = [
    "CompressedImageLike",
    "CvBridge",
    "CvBridgeError",
    "ImageLike",
    "check_png_chunks",
    "compressed_image_size",
]


class CvBridgeError(TypeError, ValueError):
    """Raised for malformed messages and impossible conversions.

    A TypeError, as in cv_bridge, and also a ValueError, as every malformed-message error of xkd_ros.msgs,
    so that one `except ValueError` covers clouds, images and camera infos.
    """


class ImageLike(Protocol):
    """What is read from an Image: rclpy, rosbags and hand-made messages all qualify."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any  # array.array('B') (rclpy), uint8 ndarray (rosbags), bytes, or a list of ints


class CompressedImageLike(Protocol):
    """What is read from a CompressedImage."""

    format: str
    data: Any


class _Encoding(NamedTuple):
    dtype: np.dtype
    channels: int
    family: str | None  # cv_bridge's colour format (cvtColor's name); None: data without colour meaning


_DEPTHS: dict[str, np.dtype] = {
    name: np.dtype(t)
    for name, t in (
        ("8U", np.uint8),
        ("8S", np.int8),
        ("16U", np.uint16),
        ("16S", np.int16),
        ("32S", np.int32),
        ("32F", np.float32),
        ("64F", np.float64),
    )
}
_DEPTH_OF_DTYPE: dict[str, str] = {dtype.name: name for name, dtype in _DEPTHS.items()}

# cv_bridge's "8UC3"-style names (used for passthrough) and the cv2.CV_* codes of the installed OpenCV.
_ENCODINGS: dict[str, _Encoding] = {
    f"{depth}C{n}": _Encoding(dtype, n, None) for depth, dtype in _DEPTHS.items() for n in (1, 2, 3, 4)
}
_CV_TYPES: dict[str, int] = {name: getattr(cv2, f"CV_{name}") for name in _ENCODINGS}
_CV_TYPE_NAMES: dict[int, str] = {code: name for name, code in _CV_TYPES.items()}

# The other sensor_msgs/image_encodings.hpp names.
_ENCODINGS.update(
    {
        f"{family.lower()}{bits}": _Encoding(np.dtype(f"uint{bits}"), len(family), family)
        for family in ("RGB", "BGR", "RGBA", "BGRA")
        for bits in (8, 16)
    }
    | {f"mono{bits}": _Encoding(np.dtype(f"uint{bits}"), 1, "GRAY") for bits in (8, 16)}
    | {
        f"bayer_{pattern}{bits}": _Encoding(np.dtype(f"uint{bits}"), 1, f"BAYER_{pattern.upper()}")
        for pattern in ("rggb", "bggr", "gbrg", "grbg")
        for bits in (8, 16)
    }
    | {
        "yuv422": _Encoding(np.dtype(np.uint8), 2, "YUV422"),
        "yuv422_yuy2": _Encoding(np.dtype(np.uint8), 2, "YUV422_YUY2"),
    }
)

# cv_bridge's SAME_FORMAT: no cvtColor, only Mat::convertTo to the destination depth.
_DEPTH_ONLY = -1
_RGB_FAMILIES = ("GRAY", "RGB", "BGR", "RGBA", "BGRA")
# cv_bridge.cpp getConversionCodes(). ROS names a Bayer pattern by its top-left 2x2 block, OpenCV by
# the second and third pixels of its second row, hence rggb -> BayerBG and so on.
_BAYER_CV_NAMES = {"BAYER_RGGB": "BG", "BAYER_BGGR": "RG", "BAYER_GBRG": "GR", "BAYER_GRBG": "GB"}
_COLOR_CODES: dict[tuple[str, str], int] = {(f, f): _DEPTH_ONLY for f in _RGB_FAMILIES}
_COLOR_CODES.update(
    {(s, d): getattr(cv2, f"COLOR_{s}2{d}") for s in _RGB_FAMILIES for d in _RGB_FAMILIES if s != d}
    | {
        (yuv, d): getattr(cv2, f"COLOR_YUV2{d}_{order}")
        for yuv, order in (("YUV422", "UYVY"), ("YUV422_YUY2", "YUY2"))
        for d in _RGB_FAMILIES
    }
    | {
        (bayer, d): getattr(cv2, f"COLOR_Bayer{cv_name}2{d}")
        for bayer, cv_name in _BAYER_CV_NAMES.items()
        for d in ("GRAY", "RGB", "BGR")
    }
)

# Mat::convertTo scale factors cv_bridge uses between 8- and 16-bit data, by (source bits, dest bits).
_DEPTH_SCALES: dict[tuple[int, int], float] = {(8, 16): 65535.0 / 255.0, (16, 8): 255.0 / 65535.0}

# What a decoded compressed image is, by (dtype, channels): imdecode returns OpenCV's BGR order.
_DECODED_ENCODINGS: dict[tuple[str, int], str] = {
    ("uint8", 1): "mono8",
    ("uint16", 1): "mono16",
    ("uint8", 3): "bgr8",
    ("uint16", 3): "bgr16",
    ("uint8", 4): "bgra8",
    ("uint16", 4): "bgra16",
}

_IS_BIGENDIAN: dict[str, int] = {">": 1, "<": 0, "|": 0, "=": int(sys.byteorder == "big")}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PASSTHROUGH = ("passthrough", "")  # cv_bridge treats an empty desired encoding as "keep it"


def _lookup(encoding: str, where: str) -> _Encoding:
    try:
        return _ENCODINGS[encoding]
    except (KeyError, TypeError):  # TypeError: not even a string (hand-made messages are not type-checked)
        raise CvBridgeError(f"Unrecognized image encoding {encoding!r} in {where}") from None


def _type_name(encoding: _Encoding) -> str:
    return f"{_DEPTH_OF_DTYPE[encoding.dtype.name]}C{encoding.channels}"


def _byte_view(data: Any, where: str) -> np.ndarray:
    """Flat uint8 view on a message's data, without copying whenever it exposes a buffer."""
    try:
        return np.frombuffer(data, np.uint8)
    except TypeError:  # a plain sequence of ints, as cv_bridge also accepts
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            raise CvBridgeError(
                f"{where} field `data` is a {type(data).__name__}, "
                "not bytes (a buffer or a sequence of 0..255)"
            ) from None


def _size(msg: ImageLike, name: str) -> int:
    """msg.<name> as a non-negative int (hand-made and deserialised messages are not type-checked)."""
    value = getattr(msg, name)
    size = whole_number(value)
    if size is None:
        raise CvBridgeError(f"Image field `{name}` is {value!r}; it must be a non-negative integer")
    return size


def _fill(msg: Image | CompressedImage, arr: np.ndarray) -> None:
    """A new message's (empty) data filled with arr's bytes in place, one copy in all.

    Assigning msg.data copies an array('B') once more (rclpy keeps it as is only when
    ROS_PYTHON_CHECK_FIELDS=1), and bytes are copied too (and checked element by element then).
    """
    msg.data.frombytes(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))


def _require_array(cvim: Any) -> np.ndarray:
    if not isinstance(cvim, np.ndarray):
        raise CvBridgeError(f"Your input type is not a numpy array: {type(cvim).__name__}")
    return cvim


def _image_view(msg: ImageLike, enc: _Encoding) -> np.ndarray:
    """The message's pixels as (height, width[, channels]) in native byte order.

    A view sharing msg.data when rows are unpadded and the byte order is native, as cv_bridge's
    toCvShare; otherwise one contiguous copy, so msg.data is never modified.
    """
    height, width, step = _size(msg, "height"), _size(msg, "width"), _size(msg, "step")
    itemsize = enc.dtype.itemsize
    row_bytes = width * enc.channels * itemsize
    if step < row_bytes:
        raise CvBridgeError(
            f"Image field `step` is {step} but a row of {width} x {enc.channels} x {itemsize}-byte "
            f"{msg.encoding!r} pixels needs {row_bytes} bytes"
        )
    buf = _byte_view(msg.data, "Image")
    if buf.size != step * height:
        raise CvBridgeError(
            f"Image field `data` holds {buf.size} bytes but step x height = {step} x {height} = "
            f"{step * height}"
        )
    dtype = enc.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    shape = (height, width, enc.channels) if enc.channels > 1 else (height, width)
    strides = (step, enc.channels * itemsize, itemsize)[: len(shape)]
    image = np.ndarray(shape, dtype, buffer=buf, strides=strides)
    if not dtype.isnative:
        return image.astype(dtype.newbyteorder("="))  # byte swap and unpad in a single pass
    return image if step == row_bytes else np.ascontiguousarray(image)


def _conversion_code(src_name: str, src: _Encoding, dst_name: str, dst: _Encoding) -> int:
    """cv_bridge.cpp getConversionCode(): the cvtColor code, or _DEPTH_ONLY."""
    if src.family is None:
        if dst.family is not None:
            raise CvBridgeError(
                f"[{src_name}] is not a color format but [{dst_name}] is. The conversion does not make sense"
            )
        if src.channels != dst.channels:
            raise CvBridgeError(f"[{src_name}] and [{dst_name}] do not have the same number of channels")
        return _DEPTH_ONLY
    if dst.family is None:
        if src.channels != dst.channels:
            raise CvBridgeError(
                f"[{src_name}] is a color format but [{dst_name}] is not, so they must have the same "
                "number of channels"
            )
        return _DEPTH_ONLY
    try:
        return _COLOR_CODES[(src.family, dst.family)]
    except KeyError:
        raise CvBridgeError(f"Unsupported conversion from [{src_name}] to [{dst_name}]") from None


def _convert_to(image: np.ndarray, dtype: np.dtype, scale: float) -> np.ndarray:
    """cv::Mat::convertTo: scale, then round to nearest and saturate when the target is integer.

    NaN and infinities become the target's minimum, as convertTo gives on x86 (0 for a 16UC1 depth image:
    "no reading"); numpy would cast them to an arbitrary value with a RuntimeWarning.
    """
    if scale == 1.0 and image.dtype == dtype:
        return image
    if dtype.kind == "f":  # scale factors only arise between 8- and 16-bit integer types
        return image.astype(dtype)
    limits = np.iinfo(dtype)
    if image.dtype.kind == "f" or scale != 1.0:
        image = np.rint(image * scale)
        low, high = limits.min, limits.max
        if image.dtype.kind == "f":
            image = np.where(np.isfinite(image), image, low)
    else:  # integer to integer: clip within the source type's range, where both bounds are valid
        source = np.iinfo(image.dtype)
        low, high = max(limits.min, source.min), min(limits.max, source.max)
    return np.clip(image, low, high).astype(dtype)


def _convert(image: np.ndarray, src_name: str, dst_name: str) -> np.ndarray:
    """cv_bridge.cpp toCvCopyImpl(): colour conversion, then depth conversion where needed."""
    if dst_name == src_name:  # cv_bridge copies here; passthrough semantics make the copy needless
        return image
    src = _ENCODINGS[src_name]
    dst = _lookup(dst_name, "desired_encoding")
    code = _conversion_code(src_name, src, dst_name, dst)
    if image.size == 0:  # cvtColor rejects empty input; the result is empty whatever the conversion
        return np.empty(image.shape[:2] + ((dst.channels,) if dst.channels > 1 else ()), dst.dtype)
    if code != _DEPTH_ONLY:
        try:
            image = cv2.cvtColor(image, code)
        except cv2.error as error:  # e.g. yuv422 with an odd width: its pixels come in pairs
            height, width = image.shape[:2]
            raise CvBridgeError(
                f"Cannot convert a {width}x{height} [{src_name}] image to [{dst_name}]: "
                f"OpenCV requires {error.err}"
            ) from None
    src_bits, dst_bits = 8 * src.dtype.itemsize, 8 * dst.dtype.itemsize
    if code == _DEPTH_ONLY or src_bits != dst_bits:
        image = _convert_to(image, dst.dtype, _DEPTH_SCALES.get((src_bits, dst_bits), 1.0))
    return image


# JPEG start-of-frame markers (they carry the size): C0-CF but DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-7, SOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})


def compressed_image_size(data: Any) -> tuple[str, int, int]:
    """("jpeg" | "png", width, height) of a CompressedImage's bytes, read from the header only.

    What a decoder would allocate is known before decoding: a 390 KB PNG can declare 20000 x 20000 pixels
    (1.2 GB decoded). Raises CvBridgeError for bytes that are neither, a header that is cut or
    inconsistent, or a JPEG without its end-of-image marker (cut in transit; trailing zero padding, as some
    USB cameras send, is allowed)."""
    buf = _byte_view(data, "CompressedImage")
    head = bytes(buf[:32])
    if head.startswith(_PNG_SIGNATURE):
        if len(buf) < 24 or head[12:16] != b"IHDR":
            raise CvBridgeError(f"PNG of {buf.size} bytes without an IHDR header")
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        return _sized("png", width, height)
    if not head.startswith(b"\xff\xd8"):
        raise CvBridgeError(
            f"{buf.size} bytes that are neither a JPEG nor a PNG (first bytes {head[:8].hex()})"
        )
    end = buf.size - int(np.argmax(buf[::-1] != 0)) if buf.any() else 0
    if end < 4 or buf[end - 2] != 0xFF or buf[end - 1] != 0xD9:
        raise CvBridgeError(f"JPEG of {buf.size} bytes without its end-of-image marker (cut short?)")
    jpeg = bytes(buf[:end])  # bytes index as ints, fast; the header walk below reads a few of them
    at = 2
    while at + 4 <= end:
        if jpeg[at] != 0xFF:
            raise CvBridgeError(f"JPEG header broken at byte {at} (0x{jpeg[at]:02x} where a marker starts)")
        marker = jpeg[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_STANDALONE:
            at += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header came first
            break
        length = int.from_bytes(jpeg[at + 2 : at + 4], "big")
        if length < 2:
            raise CvBridgeError(f"JPEG header broken at byte {at} (segment length {length})")
        if marker in _JPEG_SOF:
            if at + 9 > end:
                break
            height = int.from_bytes(jpeg[at + 5 : at + 7], "big")
            width = int.from_bytes(jpeg[at + 7 : at + 9], "big")
            return _sized("jpeg", width, height)
        at += 2 + length
    raise CvBridgeError(f"JPEG of {buf.size} bytes without a frame header (no image size before its data)")


def _sized(kind: str, width: int, height: int) -> tuple[str, int, int]:
    if width == 0 or height == 0:
        raise CvBridgeError(f"{kind.upper()} header declares a {width}x{height} image")
    return kind, width, height


def check_png_chunks(data: np.ndarray) -> None:
    """CvBridgeError if `data` is a PNG with a chunk that declares more bytes than follow it.

    OpenCV's PNG reader sizes its chunk buffer from the declared length before it reads: an 84-byte PNG
    whose second chunk claims 4 GB cost 4 GB and 2.4 s to refuse. The walk reads 8 bytes per chunk and
    stops at IEND or at the end of the data (what is cut short there is the decoder's to report).
    """
    if data.size < 8 or bytes(data[:8]) != _PNG_SIGNATURE:
        return
    at, end = 8, data.size
    while at + 8 <= end:
        length = int.from_bytes(bytes(data[at : at + 4]), "big")
        kind = bytes(data[at + 4 : at + 8])
        if length > end - at - 12:  # 4 length, 4 type, the data, 4 CRC
            raise CvBridgeError(
                f"CompressedImage field `data` ({end} bytes) is a PNG whose {kind!r} chunk at byte {at} "
                f"declares {length} bytes, more than the {max(end - at - 12, 0)} that follow"
            )
        if kind == b"IEND":
            return
        at += 12 + length


class CvBridge:
    """Drop-in replacement for cv_bridge.CvBridge."""

    def encoding_to_cvtype2(self, encoding: str) -> int:
        """The cv2.CV_* type code of an encoding, e.g. "bgr8" -> cv2.CV_8UC3."""
        return _CV_TYPES[_type_name(_lookup(encoding, "encoding"))]

    def encoding_to_dtype_with_channels(self, encoding: str) -> tuple[str, int]:
        """The numpy dtype name and channel count of an encoding, e.g. "bgr8" -> ("uint8", 3)."""
        enc = _lookup(encoding, "encoding")
        return enc.dtype.name, enc.channels

    def cvtype2_to_dtype_with_channels(self, cvtype: int) -> tuple[str, int]:
        """The numpy dtype name and channel count of a cv2.CV_* type code."""
        try:
            return self.encoding_to_dtype_with_channels(_CV_TYPE_NAMES[cvtype])
        except KeyError:
            raise CvBridgeError(f"Unsupported OpenCV type code {cvtype}") from None

    def dtype_with_channels_to_cvtype2(self, dtype: np.dtype, n_channels: int) -> str:
        """The cv_bridge type name ("8UC3") of a dtype and channel count; also the passthrough encoding."""
        depth = _DEPTH_OF_DTYPE.get(np.dtype(dtype).name)
        if depth is None or f"{depth}C{n_channels}" not in _CV_TYPES:
            raise CvBridgeError(
                f"No image encoding for {n_channels} channels of {np.dtype(dtype)}; "
                f"supported: 1 to 4 channels of {', '.join(_DEPTH_OF_DTYPE)}"
            )
        return f"{depth}C{n_channels}"

    def imgmsg_to_cv2(self, img_msg: ImageLike, desired_encoding: str = "passthrough") -> np.ndarray:
        """Image message -> array of shape (height, width[, channels]) in desired_encoding.

        Passthrough (or the message's own encoding) returns a view sharing msg.data where rows are
        unpadded and the byte order is native; writes to it change the message.
        """
        src = _lookup(img_msg.encoding, "Image field `encoding`")
        image = _image_view(img_msg, src)
        if desired_encoding in _PASSTHROUGH:
            return image
        return _convert(image, img_msg.encoding, desired_encoding)

    def cv2_to_imgmsg(self, cvim: np.ndarray, encoding: str = "passthrough", header: Any = None) -> Image:
        """Array -> sensor_msgs.msg.Image; passthrough names the encoding by type, e.g. "8UC3"."""
        cvim = _require_array(cvim)
        if cvim.ndim not in (2, 3):
            raise CvBridgeError(f"Expected an array of shape (height, width[, channels]), got {cvim.shape}")
        channels = cvim.shape[2] if cvim.ndim == 3 else 1
        type_name = self.dtype_with_channels_to_cvtype2(cvim.dtype, channels)
        if encoding not in _PASSTHROUGH and _type_name(_lookup(encoding, "encoding argument")) != type_name:
            raise CvBridgeError(
                f"encoding specified as {encoding}, but image has incompatible type {type_name}"
            )
        msg = Image()
        if header is not None:
            msg.header = header
        msg.height, msg.width = int(cvim.shape[0]), int(cvim.shape[1])
        msg.encoding = type_name if encoding in _PASSTHROUGH else encoding
        msg.is_bigendian = _IS_BIGENDIAN[cvim.dtype.byteorder]
        msg.step = int(cvim.shape[1] * channels * cvim.itemsize)
        _fill(msg, cvim)
        return msg

    def compressed_imgmsg_to_cv2(
        self, cmprs_img_msg: CompressedImageLike, desired_encoding: str = "passthrough"
    ) -> np.ndarray:
        """CompressedImage -> array in desired_encoding.

        The decoded image's encoding is taken from what was decoded (mono8, bgr8, bgra8, mono16, ...);
        cv_bridge always assumes bgr8, which breaks grey and 16-bit images.
        """
        buf = _byte_view(cmprs_img_msg.data, "CompressedImage")
        check_png_chunks(buf)
        try:
            image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            image = None
        if image is None:
            raise CvBridgeError(
                f"CompressedImage field `data` ({buf.size} bytes, format {cmprs_img_msg.format!r}) "
                "could not be decoded"
            )
        if desired_encoding in _PASSTHROUGH:
            return image
        key = (image.dtype.name, image.shape[2] if image.ndim == 3 else 1)
        src_name = _DECODED_ENCODINGS.get(key) or self.dtype_with_channels_to_cvtype2(*key)
        return _convert(image, src_name, desired_encoding)

    def cv2_to_compressed_imgmsg(
        self, cvim: np.ndarray, dst_format: str = "jpg", params: Sequence[int] = ()
    ) -> CompressedImage:
        """Array -> sensor_msgs.msg.CompressedImage encoded as dst_format ("jpg", "png", ...).

        params are cv2.imencode flags, e.g. (cv2.IMWRITE_JPEG_QUALITY, 90).
        """
        cvim = _require_array(cvim)
        failure = f"Cannot encode a {cvim.dtype} {cvim.shape} image as {dst_format!r}"
        try:
            ok, encoded = cv2.imencode(f".{dst_format}", cvim, list(params))
        except cv2.error as e:
            raise CvBridgeError(f"{failure}: {e}") from e
        if not ok:
            raise CvBridgeError(failure)
        msg = CompressedImage()
        msg.format = dst_format
        _fill(msg, encoded)
        return msg
