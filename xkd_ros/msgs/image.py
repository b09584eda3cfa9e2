"""Conversions between sensor_msgs Image / CompressedImage and numpy arrays.

Mirrors the Python API of ROS's cv_bridge (``CvBridge``, ``CvBridgeError``, ``getCvType``,
``cvtColorForDisplay``: what ``import cv_bridge`` offers; same method names,
arguments and conversion rules, ported from cv_bridge.cpp), because cv_bridge ships no wheel and code
written against it should run unchanged. Messages are duck-typed, so rosbags messages work as well as
rclpy ones; created messages are real ``sensor_msgs.msg`` messages.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from types import MappingProxyType
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
    "cvtColorForDisplay",
    "getCvType",
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
# The cv2.CV_* depth codes of the installed OpenCV (OpenCV 5 numbers types unlike 4: never hard-coded).
_CV_DEPTHS: dict[str, int] = {name: getattr(cv2, f"CV_{name}") for name in _DEPTHS}
_DEPTH_OF_CV_DEPTH: dict[int, str] = {code: name for name, code in _CV_DEPTHS.items()}
_CN_MAX = 512  # OpenCV's CV_CN_MAX: the most channels a Mat can have
_CN_SHIFT = cv2.CV_8UC2.bit_length() - 1  # CV_MAKETYPE(depth, n) = depth + ((n - 1) << _CN_SHIFT)
# cv_bridge's generic encodings, "8UC<n>" for any n, and the bare depth "8U" (= "8UC1"). Leading zeros are
# allowed as cv_bridge's atoi reads them; at most three digits remain, so a huge n is no int() to parse.
_GENERIC = re.compile(r"(8U|8S|16U|16S|32S|32F|64F)(?:C0*([0-9]{1,3}))?")

# The common generic names, looked up without the regex (passthrough produces them).
_ENCODINGS: dict[str, _Encoding] = {
    f"{depth}C{n}": _Encoding(dtype, n, None) for depth, dtype in _DEPTHS.items() for n in (1, 2, 3, 4)
}

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


def _parse(encoding: Any) -> _Encoding | None:
    """The encoding a name stands for, as cv_bridge's getCvType reads it; None for an unknown name."""
    if not isinstance(encoding, str):  # hand-made messages are not type-checked
        return None
    known = _ENCODINGS.get(encoding)
    if known is not None:
        return known
    match = _GENERIC.fullmatch(encoding)
    if match is None:
        return None
    channels = int(match[2] or 1)
    if not 1 <= channels <= _CN_MAX:
        return None
    return _Encoding(_DEPTHS[match[1]], channels, None)


def _lookup(encoding: Any, where: str) -> _Encoding:
    parsed = _parse(encoding)
    if parsed is None:
        raise CvBridgeError(f"Unrecognized image encoding {encoding!r} in {where}")
    return parsed


def _type_name(encoding: _Encoding) -> str:
    return f"{_DEPTH_OF_DTYPE[encoding.dtype.name]}C{encoding.channels}"


def _cv_type(encoding: _Encoding) -> int:
    return cv2.CV_MAKETYPE(_CV_DEPTHS[_DEPTH_OF_DTYPE[encoding.dtype.name]], encoding.channels)


def getCvType(encoding: str) -> int:  # noqa: N802 (cv_bridge's name)
    """cv_bridge.getCvType: the cv2.CV_* type of an encoding: "bgr8" -> CV_8UC3, "8U" -> CV_8UC1, "32FC5".

    Raises RuntimeError for an unknown encoding and TypeError for a non-string, as cv_bridge's binding does
    (CvBridge.encoding_to_cvtype2 raises CvBridgeError instead, as there).
    """
    if not isinstance(encoding, str):
        raise TypeError(f"getCvType takes an encoding string, not {type(encoding).__name__}")
    parsed = _parse(encoding)
    if parsed is None:
        raise RuntimeError(f"Unrecognized image encoding [{encoding}]")
    return _cv_type(parsed)


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
    src = _lookup(src_name, "encoding")
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


# cv_bridge's label colours (rgb_colors.cpp): the CSS named colours in alphabetical order, each channel kept
# there to three significant digits of value/255, which int(value * 255) then truncates. Two entries keep
# cv_bridge's departures from the standard: palevioletred holds paleturquoise's value, sandybrown's red is fa.
_LABEL_COLOURS = """
f0f8ff faebd7 00ffff 7fffd4 f0ffff f5f5dc ffe4c4 000000 ffebcd 0000ff 8a2be2 a52a2a deb887 5f9ea0 7fff00
d2691e ff7f50 6495ed fff8dc dc143c 00ffff 00008b 008b8b b8860b a9a9a9 006400 a9a9a9 bdb76b 8b008b 556b2f
ff8c00 9932cc 8b0000 e9967a 8fbc8f 483d8b 2f4f4f 2f4f4f 00ced1 9400d3 ff1493 00bfff 696969 696969 1e90ff
b22222 fffaf0 228b22 ff00ff dcdcdc f8f8ff ffd700 daa520 808080 008000 adff2f 808080 f0fff0 ff69b4 cd5c5c
4b0082 fffff0 f0e68c e6e6fa fff0f5 7cfc00 fffacd add8e6 f08080 e0ffff fafad2 d3d3d3 90ee90 d3d3d3 ffb6c1
ffa07a 20b2aa 87cefa 778899 778899 b0c4de ffffe0 00ff00 32cd32 faf0e6 ff00ff 800000 66cdaa 0000cd ba55d3
9370db 3cb371 7b68ee 00fa9a 48d1cc c71585 191970 f5fffa ffe4e1 ffe4b5 ffdead 000080 fdf5e6 808000 6b8e23
ffa500 ff4500 da70d6 eee8aa 98fb98 afeeee ffefd5 ffdab9 cd853f ffc0cb dda0dd b0e0e6 800080 ff0000 bc8f8f
4169e1 8b4513 fa8072 faa460 2e8b57 fff5ee a0522d c0c0c0 87ceeb 6a5acd 708090 708090 fffafa 00ff7f 4682b4
d2b48c 008080 d8bfd8 ff6347 40e0d0 ee82ee f5deb3 ffffff f5f5f5 ffff00 9acd32
"""
_LABEL_BGR = np.array(
    [
        [int(float(f"{c / 255:.3g}") * 255) for c in reversed(bytes.fromhex(rgb))]
        for rgb in _LABEL_COLOURS.split()
    ],
    np.uint8,
)
_DISPLAY_ENCODINGS = ("mono8", "rgb8", "bgr8", "rgba8", "bgra8")


def _display_error(message: str) -> RuntimeError:
    return RuntimeError(f"cvtColorForDisplay: {message}")


def _scaled_for_display(source: np.ndarray, low: float, high: float) -> np.ndarray:
    """cv_bridge's Mat(source - low).convertTo(CV_8U, 255 / (high - low)): the shift saturates in its type."""
    if source.dtype.kind == "f":
        shifted = source - source.dtype.type(low)
    else:
        info = np.iinfo(source.dtype)
        shifted = np.clip(np.rint(source - low), info.min, info.max).astype(source.dtype)
    return _convert_to(shifted, np.dtype(np.uint8), 255.0 / (high - low))


def cvtColorForDisplay(  # noqa: N802 (cv_bridge's name)
    source: np.ndarray,
    encoding_in: str,
    encoding_out: str = "",
    do_dynamic_scaling: bool = False,
    min_image_value: float = 0.0,
    max_image_value: float = 0.0,
    colormap: int = -1,
) -> np.ndarray:
    """cv_bridge.cvtColorForDisplay: an image made viewable as mono8, rgb8, bgr8, rgba8 or bgra8.

    With cv_bridge's rules: an empty encoding_out means bgr8 (1 channel of 8, 16 or 32 bits, or more channels
    of 8 or 16); a 32SC1 image to bgr8 is a label image, one colour per label (cv_bridge's table, negative
    labels black); do_dynamic_scaling maps the image's min..max to 0..255 (a constant image gives a mid-grey
    3-channel image) and so does min_image_value != max_image_value, coloured by the cv2.COLORMAP_* colormap
    when given (NaN pixels of a 32FC1 image black); anything else is converted as imgmsg_to_cv2 converts
    (16UC1 read as mono16), and returned as is where nothing changes. Raises RuntimeError where cv_bridge's
    binding does, and CvBridgeError (a TypeError) for a source that is no numpy array.
    """
    source = _require_array(source)
    if source.dtype in (np.int64, np.uint64):  # cv_bridge's binding casts these to CV_32S too
        source = source.astype(np.int32)
    src = _parse(encoding_in)
    if src is None:
        raise _display_error(f"unrecognized image encoding_in {encoding_in!r}")
    channels = source.shape[2] if source.ndim == 3 else 1
    if source.ndim not in (2, 3) or _DEPTH_OF_DTYPE.get(source.dtype.name) is None:
        raise _display_error(f"source of shape {source.shape} and type {source.dtype} is no image")
    if (source.dtype, channels) != (src.dtype, src.channels):
        raise _display_error(
            f"source is {_DEPTH_OF_DTYPE[source.dtype.name]}C{channels} but encoding_in {encoding_in!r} is "
            f"{_type_name(src)}"
        )
    bits = 8 * src.dtype.itemsize
    encoding = encoding_out
    if not encoding:
        if bits not in ((8, 16, 32) if channels == 1 else (8, 16)):
            raise _display_error(f"encoding_out is empty and cannot be guessed for {encoding_in!r}")
        encoding = "bgr8"
    elif encoding not in _DISPLAY_ENCODINGS:
        raise _display_error(f"encoding_out {encoding!r} is none of {', '.join(_DISPLAY_ENCODINGS)}")

    if encoding == "bgr8" and encoding_in == "32SC1":
        labels = source.reshape(source.shape[:2])
        coloured = _LABEL_BGR[labels % len(_LABEL_BGR)]
        coloured[labels < 0] = 0  # C's % keeps the sign: no colour, and the background label -1 is black
        return coloured

    low, high = float(min_image_value), float(max_image_value)
    if (do_dynamic_scaling or low != high) and channels != 1:
        raise _display_error(f"scaling a {channels}-channel image is unsupported")
    if do_dynamic_scaling:
        if source.size == 0:
            raise _display_error("dynamic scaling of an empty image")
        low, high, _, _ = cv2.minMaxLoc(source)
        if low == high:
            return np.full((*source.shape[:2], 3), 128, np.uint8)
    try:
        if low != high:
            scaled = _scaled_for_display(source, low, high)
            if colormap == -1:
                return _convert(scaled, "mono8", encoding)
            coloured = cv2.applyColorMap(scaled, colormap)
            if encoding_in == "32FC1":
                coloured[np.isnan(source.reshape(source.shape[:2]))] = 0
            return _convert(coloured, "bgr8", encoding)
        typed = "mono16" if encoding_in == "16UC1" else encoding_in
        return source if typed == encoding else _convert(source, typed, encoding)
    except (CvBridgeError, cv2.error) as error:
        raise _display_error(f"converting {encoding_in!r} to {encoding!r} failed: {error}") from None


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

    # cv_bridge's public lookup tables (instance attributes there, read-only here): code written against them
    # keeps working.
    cvtype_to_name = MappingProxyType(
        {getattr(cv2, f"CV_{depth}C{n}"): f"{depth}C{n}" for depth in _DEPTHS for n in (1, 2, 3, 4)}
    )
    cvdepth_to_numpy_depth = MappingProxyType({code: _DEPTHS[name].name for name, code in _CV_DEPTHS.items()})
    numpy_type_to_cvtype = MappingProxyType(
        _DEPTH_OF_DTYPE | {name: dtype.name for name, dtype in _DEPTHS.items()}
    )

    def encoding_to_cvtype2(self, encoding: str) -> int:
        """The cv2.CV_* type code of an encoding, e.g. "bgr8" -> cv2.CV_8UC3: getCvType with CvBridgeError."""
        return _cv_type(_lookup(encoding, "encoding"))

    def encoding_to_dtype_with_channels(self, encoding: str) -> tuple[str, int]:
        """The numpy dtype name and channel count of an encoding, e.g. "bgr8" -> ("uint8", 3)."""
        enc = _lookup(encoding, "encoding")
        return enc.dtype.name, enc.channels

    def cvtype2_to_dtype_with_channels(self, cvtype: int) -> tuple[str, int]:
        """The numpy dtype name and channel count of a cv2.CV_* type code (CV_MAT_DEPTH, CV_MAT_CN)."""
        code = whole_number(cvtype)
        depth = None if code is None else _DEPTH_OF_CV_DEPTH.get(code & ((1 << _CN_SHIFT) - 1))
        channels = 0 if code is None else (code >> _CN_SHIFT) + 1
        if depth is None or channels > _CN_MAX:
            raise CvBridgeError(
                f"Unsupported OpenCV type code {cvtype!r}: not 1 to {_CN_MAX} channels of "
                f"{', '.join(_CV_DEPTHS)}"
            )
        return _DEPTHS[depth].name, channels

    def dtype_with_channels_to_cvtype2(self, dtype: np.dtype, n_channels: int) -> str:
        """The cv_bridge type name ("8UC3") of a dtype and channel count; also the passthrough encoding."""
        depth = _DEPTH_OF_DTYPE.get(np.dtype(dtype).name)
        channels = whole_number(n_channels)
        if depth is None or channels is None or not 1 <= channels <= _CN_MAX:
            raise CvBridgeError(
                f"No image encoding for {n_channels} channels of {np.dtype(dtype)}; "
                f"supported: 1 to {_CN_MAX} channels of {', '.join(_DEPTH_OF_DTYPE)}"
            )
        return f"{depth}C{channels}"

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
