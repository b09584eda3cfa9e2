"""Property tests (hypothesis) of the message conversions in xkd_ros.msgs, with the real sensor_msgs classes.

Valid messages of random layout round-trip exactly; malformed ones, whatever is wrong, raise a ValueError
that names the field at fault, never an IndexError, TypeError, struct.error, cv2.error or a hang, and a
message that declares more than it holds is refused before anything of that size is allocated. The node turns
such a ValueError into a counted warning, so any other exception here is a way to kill it.

Fixed seed (derandomize) and bounded example counts: the same cases on every run, the file in seconds.
"""

from __future__ import annotations

import array
import math
import re
import resource
import sys
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from xkd_ros.geometry import DISTORTION_MODELS, CameraIntrinsics
from xkd_ros.geometry.camera import DISTORTION_LENGTHS
from xkd_ros.msgs import (
    CvBridge,
    camera_info_to_intrinsics,
    create_cloud,
    create_labeled_cloud,
    dtype_from_fields,
    intrinsics_to_camera_info,
    read_points,
    read_points_list,
    read_points_numpy,
    unpack_rgb,
)
from xkd_ros.msgs.image import _ENCODINGS

# derandomize: a fixed sequence of examples, so CI sees the same cases every run; no example database is
# written; too_slow is a timing check and would fail at random on a loaded machine.
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# A hang ends the session with every thread's stack: the default (signal) method fires once, and hypothesis
# would take that failure for a bug to shrink and run the hanging example again, with no timer left.
pytestmark = pytest.mark.timeout(120, method="thread")

HOST_BIGENDIAN = sys.byteorder == "big"
UINT32 = 2**32 - 1
ITEMSIZE = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 8: 8}  # PointField datatype -> bytes
NUMPY_TYPE = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
# Real-world names, and some that are not Python identifiers (read_points_list must still name its tuple).
NAMES = ["x", "y", "z", "intensity", "ring", "t", "rgb", "label", "class", "1st", "_pad", "a b"]
READERS = (read_points, read_points_numpy, read_points_list)
BRIDGE = CvBridge()
TYPESTORE = get_typestore(Stores.ROS2_KILTED)


# --------------------------------------------------------------------------------------------- clouds
@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[PointField], int]:
    """Fields (random names, datatypes, counts) listed in random order, laid out with gaps, and point_step."""
    n = draw(st.integers(1, 6))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=n, max_size=n, unique=True))
    names = [name if draw(st.integers(0, 5)) else "" for name in names]  # some unnamed
    datatypes = draw(st.lists(st.integers(1, 8), min_size=n, max_size=n))
    counts = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    offsets, cursor = [0] * n, 0
    for i in draw(st.permutations(range(n))):  # byte order of the fields differs from their list order
        cursor += draw(st.integers(0, 3))
        offsets[i] = cursor
        cursor += counts[i] * ITEMSIZE[datatypes[i]]
    fields = [
        PointField(name=name, offset=offset, datatype=datatype, count=count)
        for name, offset, datatype, count in zip(names, offsets, datatypes, counts, strict=True)
    ]
    return fields, cursor + draw(st.integers(0, 5))


def expected_dtype(fields: list[PointField], point_step: int, byteorder: str = "=") -> np.dtype:
    """The point dtype written out independently of dtype_from_fields: count > 1 is name_0, name_1, ..."""
    names, formats, offsets = [], [], []
    for i, f in enumerate(fields):
        name = f.name or f"unnamed_field_{i}"
        for k in range(f.count):
            names.append(f"{name}_{k}" if f.count > 1 else name)
            formats.append(byteorder + NUMPY_TYPE[f.datatype])
            offsets.append(f.offset + k * ITEMSIZE[f.datatype])
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


def random_points(dtype: np.dtype, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random bit patterns in every field (all integers, NaN of any payload), plus NaN, +-inf and -0."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    points = raw.view(dtype).reshape(shape).copy()
    for name in dtype.names:
        if dtype[name].kind == "f":
            special = rng.random(shape) < 0.2
            points[name][special] = rng.choice([np.nan, np.inf, -np.inf, -0.0], size=int(special.sum()))
    return points


def assert_same_points(got: np.ndarray, want: np.ndarray) -> None:
    """Same field names, shape and bit patterns (NaN payloads included), whatever the padding or order."""
    assert got.dtype.names == want.dtype.names
    assert got.shape == want.shape
    for name in want.dtype.names:
        assert got.dtype[name].isnative
        assert got[name].tobytes() == want[name].astype(got.dtype[name]).tobytes(), name


def same_value(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def hand_cloud(points: np.ndarray, fields: list, row_pad: int, bigendian: bool, rows: int) -> PointCloud2:
    """A cloud written without create_cloud: `rows` rows padded by `row_pad` bytes, in either byte order."""
    flat = points.reshape(-1)
    width = flat.size // rows if rows else 0
    dtype = flat.dtype.newbyteorder(">" if bigendian else "<")
    row_step = width * dtype.itemsize + row_pad
    data = np.zeros(rows * row_step, np.uint8)
    grid = np.ndarray((rows, width), dtype, buffer=data, strides=(row_step, dtype.itemsize))
    grid[...] = flat.reshape(rows, width)
    msg = PointCloud2(
        header=Header(frame_id="lidar"),
        height=rows,
        width=width,
        fields=fields,
        point_step=dtype.itemsize,
        row_step=row_step,
        is_bigendian=bigendian,
        is_dense=False,
    )
    msg.data = array.array("B", data.tobytes())
    return msg


@FUZZ
@given(
    layout=layouts(),
    width=st.integers(0, 6),
    height=st.integers(0, 4),
    organised=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_valid_clouds_round_trip_exactly(layout, width, height, organised, seed):
    fields, point_step = layout
    dtype = dtype_from_fields(fields, point_step)
    assert dtype == expected_dtype(fields, point_step)
    shape = (width, height) if organised else (width * height,)
    points = random_points(dtype, shape, seed)

    cloud = create_cloud(Header(frame_id="lidar"), fields, points, point_step)
    assert (cloud.width, cloud.height) == (shape[0], shape[1] if organised else 1)
    assert (cloud.point_step, cloud.row_step, len(cloud.data)) == (
        point_step,
        point_step * cloud.width,
        points.size * point_step,
    )
    flat = points.reshape(-1)
    assert_same_points(read_points(cloud, reshape_organized_cloud=True), points if height > 1 else flat)
    assert_same_points(read_points(cloud), flat)
    for again in (  # over the wire, read by rclpy and by rosbags
        deserialize_message(serialize_message(cloud), PointCloud2),
        TYPESTORE.deserialize_cdr(bytes(serialize_message(cloud)), "sensor_msgs/msg/PointCloud2"),
    ):
        assert_same_points(read_points(again), flat)

    listed = read_points_list(cloud)
    assert len(listed) == flat.size
    for point, want in zip(listed, flat.tolist(), strict=True):
        assert all(same_value(a, b) for a, b in zip(point, want, strict=True)), (point, want)

    if len({f.datatype for f in fields}) == 1:
        numeric = read_points_numpy(cloud)
        assert numeric.shape == (flat.size, len(dtype.names))
        for k, name in enumerate(dtype.names):
            assert numeric[:, k].tobytes() == flat[name].tobytes()

    subset = list(dtype.names[::2])
    assert_same_points(read_points(cloud, field_names=subset), flat[subset])
    uvs = np.random.default_rng(seed).integers(0, flat.size, 3) if flat.size else []
    assert_same_points(read_points(cloud, uvs=uvs), flat[uvs])
    nan = np.zeros(flat.size, bool)
    for name in dtype.names:
        if dtype[name].kind == "f":
            nan |= np.isnan(flat[name])
    assert_same_points(read_points(cloud, skip_nans=True), flat[~nan])


@FUZZ
@given(
    layout=layouts(),
    width=st.integers(0, 6),
    rows=st.integers(0, 4),
    row_pad=st.integers(0, 9),
    bigendian=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_hand_written_clouds_read_as_written(layout, width, rows, row_pad, bigendian, seed):
    """Padded rows and both byte orders, written with numpy alone; reading leaves msg.data as it was."""
    fields, point_step = layout
    points = random_points(expected_dtype(fields, point_step), (rows * width,), seed)
    cloud = hand_cloud(points, fields, row_pad, bigendian, rows)
    before = bytes(cloud.data)
    assert_same_points(read_points(cloud), points)
    listed = read_points_list(cloud)
    for point, want in zip(listed, points.tolist(), strict=True):
        assert all(same_value(a, b) for a, b in zip(point, want, strict=True)), (point, want)
    assert bytes(cloud.data) == before


def valid_cloud(layout: tuple[list[PointField], int], width: int, seed: int) -> PointCloud2:
    fields, point_step = layout
    points = random_points(dtype_from_fields(fields, point_step), (width,), seed)
    return create_cloud(Header(), fields, points, point_step)


def refused(cloud: Any, pattern: str) -> None:
    """Every reader refuses `cloud` with a ValueError matching `pattern`; any other exception fails."""
    for reader in READERS:
        with pytest.raises(ValueError, match=pattern):
            reader(cloud)


@contextmanager
def address_space_capped(headroom: int = 2**30) -> Iterator[None]:
    """The process's address space capped at what it maps now plus `headroom` (Linux), so that allocating
    what a message declares fails the test with MemoryError instead of taking the machine down: before the
    readers refused points of 0 bytes, 2**40 of them listed by read_points_list took 23 GB here.

    Only around the cloud readers: numpy starts no threads, whereas OpenCV's first parallel call starts a
    pool whose stacks and malloc arenas could exceed the headroom on a many-core machine."""
    statm = Path("/proc/self/statm")
    if not statm.exists():
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = int(statm.read_text().split()[0]) * resource.getpagesize() + headroom
    resource.setrlimit(
        resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard)
    )
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def outcome(function: Any, *args: Any) -> Any:
    """What `function` returns, or the ValueError it raises (checked: one line of text); any other
    exception propagates and fails the test."""
    try:
        return function(*args)
    except ValueError as error:
        caught = error
    assert str(caught), f"{type(caught).__name__} without a message"
    assert "\n" not in str(caught), str(caught)
    return caught


def sizes() -> st.SearchStrategy:
    """Sizes and offsets: small, anywhere in uint32, or what only a hand-filled message holds (rclpy
    messages take any int unless ROS_PYTHON_CHECK_FIELDS is set)."""
    return st.one_of(st.integers(0, 64), st.integers(0, UINT32), st.integers(-(2**40), 2**40))


def loosened(msg: Any, changes: dict[str, Any]) -> Any:
    """`msg` with `changes`: the real message where its setters take the values, else a look-alike holding
    them as a deserialised (rosbags) or hand-made message would."""
    try:
        for name, value in changes.items():
            setattr(msg, name, value)
        return msg
    except (TypeError, ValueError, OverflowError):
        names = msg.get_fields_and_field_types()
        return SimpleNamespace(**({name: getattr(msg, name) for name in names} | changes))


@FUZZ
@given(layout=layouts(), width=st.integers(1, 5), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_malformed_clouds_name_the_field(layout, width, seed, data):
    cloud = valid_cloud(layout, width, seed)
    fields = list(cloud.fields)
    i = data.draw(st.integers(0, len(fields) - 1))
    name = fields[i].name or f"unnamed_field_{i}"
    fault = data.draw(
        st.sampled_from(
            ["short", "long", "row_step", "point_step", "beyond", "overlap", "datatype", "count", "twice"]
        )
    )
    if fault == "short":
        cloud.data = cloud.data[: data.draw(st.integers(0, len(cloud.data) - 1))]
        pattern = r"^data has \d+ bytes, fewer than row_step \* height"
    elif fault == "long":
        cloud.data = cloud.data + array.array("B", bytes(data.draw(st.integers(1, 9))))
        pattern = r"^data has \d+ bytes, more than row_step \* height"
    elif fault == "row_step":
        cloud.row_step = data.draw(st.integers(0, cloud.width * cloud.point_step - 1))
        pattern = r"^row_step \d+ is smaller than width \* point_step"
    elif fault == "point_step":  # row_step and data stay: only the fields no longer fit
        end = fields[i].offset + fields[i].count * ITEMSIZE[fields[i].datatype]
        cloud.point_step = data.draw(st.integers(0, end - 1))
        pattern = r"^point_step (\d+ is smaller than the fields' extent: '.*' ends at byte \d+|is 0 but)"
    elif fault == "beyond":
        fields[i].offset = data.draw(st.integers(cloud.point_step - ITEMSIZE[fields[i].datatype] + 1, UINT32))
        pattern = (
            rf"point_step {cloud.point_step} is smaller than the fields' extent: {re.escape(repr(name))}"
        )
    elif fault == "overlap" and len(fields) > 1:
        j = data.draw(st.integers(0, len(fields) - 1).filter(lambda j: j != i))
        fields[j].offset = data.draw(
            st.integers(fields[i].offset, fields[i].offset + ITEMSIZE[fields[i].datatype] - 1)
        )
        other = re.escape(repr(fields[j].name or f"unnamed_field_{j}"))
        pattern = rf"overlap.*{other}|{other}.*overlap|point_step \d+ is smaller .*: {other}"
    elif fault == "datatype":
        fields[i].datatype = data.draw(st.sampled_from([0, *range(9, 256)]))
        pattern = rf"^PointField {re.escape(repr(name))} has unknown datatype {fields[i].datatype}"
    elif fault == "count":
        fields[i].count = 0
        pattern = rf"^PointField {re.escape(repr(name))} has count 0"
    else:  # twice (or overlap with a single field): a field named as field i (its first element if count > 1)
        twin = f"{name}_0" if fields[i].count > 1 else name
        fields.append(PointField(name=twin, offset=cloud.point_step, datatype=PointField.UINT8, count=1))
        cloud.point_step += 1
        cloud.row_step = cloud.point_step * cloud.width
        cloud.data = array.array("B", bytes(cloud.row_step))
        pattern = r"^PointField name '.*' appears twice"
    cloud.fields = fields
    refused(cloud, pattern)


@FUZZ
@given(
    height=sizes(),
    width=sizes(),
    point_step=sizes(),
    row_step=sizes(),
    fields=st.lists(
        st.builds(
            PointField,
            name=st.sampled_from(["x", "y", "", "x_0"]),
            offset=sizes(),
            datatype=st.one_of(st.integers(1, 8), st.integers(0, 255)),
            count=st.one_of(st.integers(0, 4), st.integers(0, UINT32)),
        ),
        max_size=5,
    ),
    data=st.binary(max_size=200),
    bigendian=st.booleans(),
)
def test_any_cloud_reads_or_raises_a_value_error(
    height, width, point_step, row_step, fields, data, bigendian
):
    """Whatever the header declares: a result or a ValueError, in bounded time and memory."""
    cloud = PointCloud2(
        height=height,
        width=width,
        point_step=point_step,
        row_step=row_step,
        fields=fields,
        is_bigendian=bigendian,
    )
    cloud.data = array.array("B", data)
    with address_space_capped():
        for reader in READERS:
            outcome(reader, cloud)


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"height": -1}, "^height is -1"),
        ({"width": -3}, "^width is -3"),
        ({"point_step": -12}, "^point_step is -12"),
        ({"row_step": None}, "^row_step is None"),
        ({"width": 1.5}, "^width is 1.5"),
        ({"width": "2"}, "^width is '2'"),
        ({"data": None}, "^data is a NoneType"),
        ({"data": [0, 256, 0]}, "^data is a list"),
        ({"data": ["a"]}, "^data is a list"),
        ({"fields": [PointField(name="x", offset=-4, datatype=7, count=1)]}, "^PointField 'x' offset is -4"),
        ({"fields": [PointField(name="x", offset=0, datatype=7, count=2.0)]}, "^PointField 'x' count is 2.0"),
    ],
)
def test_clouds_with_impossible_values_name_the_field(changes, pattern):
    """Nothing type-checks a message's values on the way in (rclpy only with ROS_PYTHON_CHECK_FIELDS=1,
    rosbags and hand-made messages never), so the readers do."""
    cloud = create_cloud(
        Header(), [PointField(name="x", offset=0, datatype=7, count=1)], np.zeros((2, 1), "f4")
    )
    refused(loosened(cloud, changes), pattern)


def peak_allocation(pattern: str, function: Any, *args: Any) -> int:
    """Peak bytes allocated (Python and numpy) while `function` runs and raises its ValueError."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=pattern):
            function(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"width": UINT32, "row_step": UINT32}, "^row_step 4294967295 is smaller"),
        ({"height": UINT32, "row_step": UINT32}, "^data has 36 bytes, fewer than row_step"),
        ({"point_step": UINT32, "width": 0, "row_step": 0, "data": []}, "^point_step 4294967295 is larger"),
        (
            {"fields": [PointField(name="x", offset=0, datatype=7, count=2**31)]},
            "^point_step 12 .*'x' ends at byte",
        ),
        (
            {"fields": [PointField(name="x", offset=UINT32, datatype=8, count=1)]},
            "^point_step 12 .*'x' ends at byte",
        ),
        (  # 2**40 points of no bytes: nothing to allocate for the view, 23 GB for read_points_list
            {"point_step": 0, "fields": [], "width": 2**40, "row_step": 36},
            r"^point_step is 0 but width \* height = 1099511627776 \* 1 points",
        ),
        (  # a count that fits in point_step is still expanded name by name: bounded by MAX_FIELDS
            {
                "point_step": 2**20,
                "width": 0,
                "row_step": 0,
                "data": [],
                "fields": [PointField(name="x", offset=0, datatype=2, count=2**20)],
            },
            "^PointField 'x' brings the fields to more than 65536",
        ),
    ],
)
def test_huge_declared_sizes_are_refused_without_allocating(changes, pattern):
    """Sizes are checked against len(data) before any view or dtype is built: refusing costs kilobytes."""
    cloud = create_cloud(
        Header(), [PointField(name="x", offset=0, datatype=7, count=1)], np.zeros((3, 1), "f4"), 12
    )
    for name, value in changes.items():
        setattr(cloud, name, value)
    with address_space_capped():
        refused(cloud, pattern)
    assert peak_allocation(pattern, read_points, cloud) < 1_000_000


# --------------------------------------------------------------------------------------------- images
ENCODINGS = sorted(_ENCODINGS)


@st.composite
def images(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    """An encoding and an array of its type: values over the whole range, NaN and infinities included."""
    encoding = draw(st.sampled_from(ENCODINGS))
    dtype, channels = BRIDGE.encoding_to_dtype_with_channels(encoding)
    height, width = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    shape = (height, width, channels) if channels > 1 else (height, width)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = rng.integers(0, 256, int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype=np.uint8)
    image = image.view(dtype).reshape(shape)
    if image.dtype.kind == "f" and image.size:
        image = image.copy()
        image.flat[rng.integers(0, image.size, 2)] = [np.nan, np.inf]
    return encoding, image


def image_message(encoding: str, image: np.ndarray, step_pad: int, bigendian: bool) -> Image:
    """An Image written without cv2_to_imgmsg: rows padded by step_pad bytes, in either byte order."""
    height, width = image.shape[:2]
    row_bytes = width * (image.shape[2] if image.ndim == 3 else 1) * image.itemsize
    swapped = image.astype(image.dtype.newbyteorder(">" if bigendian else "<")).tobytes()
    data = np.zeros((height, row_bytes + step_pad), np.uint8)
    data[:, :row_bytes] = np.frombuffer(swapped, np.uint8).reshape(height, row_bytes)
    msg = Image(
        height=height, width=width, encoding=encoding, is_bigendian=int(bigendian), step=data.shape[1]
    )
    msg.data = array.array("B", data.tobytes())
    return msg


@FUZZ
@given(image=images(), step_pad=st.integers(0, 7), bigendian=st.booleans())
def test_valid_images_round_trip_exactly(image, step_pad, bigendian):
    encoding, array_ = image
    msg = BRIDGE.cv2_to_imgmsg(array_, encoding)
    assert BRIDGE.imgmsg_to_cv2(msg).tobytes() == array_.tobytes()
    hand = image_message(encoding, array_, step_pad, bigendian)
    before = bytes(hand.data)
    decoded = BRIDGE.imgmsg_to_cv2(hand)
    assert (decoded.shape, decoded.dtype) == (array_.shape, array_.dtype)
    assert decoded.tobytes() == array_.tobytes()
    assert bytes(hand.data) == before


@FUZZ
@given(
    image=images(),
    fault=st.sampled_from(["short", "long", "step", "encoding"]),
    data=st.data(),
)
def test_malformed_images_name_the_field(image, fault, data):
    encoding, array_ = image
    msg = BRIDGE.cv2_to_imgmsg(array_, encoding)
    if fault == "short" and len(msg.data):
        msg.data = msg.data[: data.draw(st.integers(0, len(msg.data) - 1))]
        pattern = r"^Image field `data` holds \d+ bytes but step x height"
    elif fault == "long" or fault == "short":
        msg.data = msg.data + array.array("B", bytes(data.draw(st.integers(1, 9))))
        pattern = r"^Image field `data` holds \d+ bytes but step x height"
    elif fault == "step" and msg.step:
        msg.step = data.draw(st.integers(0, msg.step - 1))
        pattern = r"^Image field `step` is \d+ but a row of"
    else:
        msg.encoding = data.draw(st.text(max_size=8).filter(lambda e: e not in _ENCODINGS))
        pattern = r"^Unrecognized image encoding .* in Image field `encoding`"
    for desired in ("passthrough", data.draw(st.sampled_from(ENCODINGS))):
        with pytest.raises(ValueError, match=pattern):
            BRIDGE.imgmsg_to_cv2(msg, desired)


@FUZZ
@given(
    height=sizes(),
    width=sizes(),
    step=sizes(),
    encoding=st.one_of(st.sampled_from(ENCODINGS), st.text(max_size=6)),
    desired=st.one_of(st.sampled_from(["passthrough", *ENCODINGS]), st.text(max_size=6)),
    data=st.binary(max_size=120),
    bigendian=st.booleans(),
)
def test_any_image_decodes_or_raises_a_value_error(height, width, step, encoding, desired, data, bigendian):
    """Any header and any conversion, yuv422 of odd width or NaN to integer included."""
    msg = Image(height=height, width=width, step=step, encoding=encoding, is_bigendian=bigendian)
    msg.data = array.array("B", data)
    result = outcome(BRIDGE.imgmsg_to_cv2, msg, desired)
    if not isinstance(result, ValueError):
        assert result.shape[:2] == (height, width)


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"height": -1}, "^Image field `height` is -1"),
        ({"width": 2.5}, "^Image field `width` is 2.5"),
        ({"step": None}, "^Image field `step` is None"),
        ({"encoding": ["rgb8"]}, r"^Unrecognized image encoding \['rgb8'\] in Image field `encoding`"),
        ({"data": None}, "^Image field `data` is a NoneType"),
        ({"data": [1, 2, 300]}, "^Image field `data` is a list"),
    ],
)
def test_images_with_impossible_values_name_the_field(changes, pattern):
    msg = loosened(BRIDGE.cv2_to_imgmsg(np.zeros((1, 1, 3), np.uint8), "rgb8"), changes)
    with pytest.raises(ValueError, match=pattern):
        BRIDGE.imgmsg_to_cv2(msg, "bgr8")


def test_conversions_opencv_refuses_and_nan_to_integer_are_value_errors():
    """yuv422 pixels come in pairs (cvtColor asserts an even width); NaN and infinities convert to the
    target's minimum, as cv::Mat::convertTo on x86, without numpy's invalid-cast warning."""
    odd = Image(height=1, width=3, step=6, encoding="yuv422", data=bytes(6))
    with pytest.raises(ValueError, match=r"^Cannot convert a 3x1 \[yuv422\] image to \[bgr8\]: .*width"):
        BRIDGE.imgmsg_to_cv2(odd, "bgr8")
    floats = BRIDGE.cv2_to_imgmsg(np.array([[np.nan, np.inf, -np.inf, 300.0, -5.0]], np.float32))
    for encoding, expected in (("8UC1", [0, 0, 0, 255, 0]), ("16SC1", [-32768] * 3 + [300, -5])):
        converted = BRIDGE.imgmsg_to_cv2(floats, encoding)
        reference = cv2.add(BRIDGE.imgmsg_to_cv2(floats), 0.0, dtype=BRIDGE.encoding_to_cvtype2(encoding))
        assert converted.tolist() == reference.tolist() == [expected]


def encoded_images() -> st.SearchStrategy:
    """Small PNG and JPEG bytes, and where their headers end (mutations after it keep the declared size)."""

    def encode(kind: str, seed: int) -> tuple[bytes, int, str]:
        image = np.random.default_rng(seed).integers(0, 256, (6, 7, 3), dtype=np.uint8)
        data = BRIDGE.cv2_to_compressed_imgmsg(image, kind).data.tobytes()
        header = 33 if kind == "png" else data.index(b"\xff\xc0") + 9  # PNG: signature and IHDR; JPEG: SOF0
        return data, header, kind

    return st.builds(encode, st.sampled_from(["png", "jpg"]), st.integers(0, 3))


@FUZZ
@given(
    encoded=encoded_images(),
    garbage=st.binary(max_size=64),
    cut=st.integers(0, 400),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=6),
    desired=st.sampled_from(["passthrough", "rgb8", "mono8", "bgra16", "32FC1"]),
)
def test_corrupt_compressed_images_decode_or_raise_a_value_error(encoded, garbage, cut, flips, desired):
    """Cut, flipped or appended bytes past the header, or plain garbage: an image or a ValueError."""
    data, header, kind = encoded
    corrupt = bytearray(data[: header + cut] + garbage)
    for at, mask in flips:
        if header + at < len(corrupt):
            corrupt[header + at] ^= mask
    for payload, size in ((bytes(corrupt), (6, 7)), (garbage, None)):
        msg = CompressedImage(format=kind)
        msg.data = array.array("B", payload)
        result = outcome(BRIDGE.compressed_imgmsg_to_cv2, msg, desired)
        if size is not None and not isinstance(result, ValueError):
            assert result.shape[:2] == size  # the header, kept intact, says 7x6


# --------------------------------------------------------------------------------------------- cameras
FINITE = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


@st.composite
def intrinsics(draw: st.DrawFn) -> CameraIntrinsics:
    model = draw(st.sampled_from(sorted(DISTORTION_MODELS)))
    fx, fy = draw(st.floats(1e-3, 1e5)), draw(st.floats(1e-3, 1e5))
    K = [[fx, draw(FINITE), draw(FINITE)], [0, fy, draw(FINITE)], [0, 0, 1]]
    length = draw(st.sampled_from(DISTORTION_LENGTHS[model]))  # D keeps the length it was given
    D = draw(st.lists(FINITE, min_size=length, max_size=length))
    R = np.asarray(draw(st.lists(FINITE, min_size=9, max_size=9))).reshape(3, 3)
    P = np.asarray(draw(st.lists(FINITE, min_size=12, max_size=12))).reshape(3, 4)
    width, height = draw(st.integers(1, 10_000)), draw(st.integers(1, 10_000))
    return CameraIntrinsics(width, height, np.asarray(K), np.asarray(D), model, R, P)


@FUZZ
@given(camera=intrinsics())
def test_camera_info_round_trips_exactly(camera):
    msg = intrinsics_to_camera_info(camera, Header(frame_id="cam"))
    again = camera_info_to_intrinsics(deserialize_message(serialize_message(msg), CameraInfo))
    assert (again.width, again.height, again.distortion_model) == (
        camera.width,
        camera.height,
        camera.distortion_model,
    )
    for name in ("K", "D", "R", "P"):
        np.testing.assert_array_equal(getattr(again, name), getattr(camera, name), err_msg=name)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"k": [500.0] * 8}, r"^CameraInfo\.k: expected 3x3 numbers, got 8"),
        ({"k": None}, r"^CameraInfo\.k: expected 3x3 numbers"),
        ({"r": [1.0] * 10}, r"^CameraInfo\.r: expected 3x3 numbers, got 10"),
        ({"p": [1.0] * 9}, r"^CameraInfo\.p: expected 3x4 numbers, got 9"),
        ({"p": ["f"] * 12}, r"^CameraInfo\.p: expected numbers"),
        ({"d": [0.1] * 3}, r"^CameraInfo\.d: plumb_bob takes 4, 5 or 8 coefficients \(k1 k2 p1 p2 .*, got 3"),
        ({"d": ["x"]}, r"^CameraInfo\.d: expected numbers"),
        ({"d": [NAN] * 5}, r"^CameraInfo\.d: contains NaN"),
        ({"k": [NAN, 0, 320, 0, 500, 240, 0, 0, 1]}, r"^CameraInfo\.k: contains NaN"),
        ({"r": [INF] * 9}, r"^CameraInfo\.r: contains NaN or infinity"),
        ({"p": [NAN] * 12}, r"^CameraInfo\.p: contains NaN"),
        ({"k": [0.0, 0, 320, 0, 500, 240, 0, 0, 1]}, r"^CameraInfo\.k: focal lengths must be positive"),
        ({"k": [500.0, 0, 320, 0, -1, 240, 0, 0, 1]}, r"^CameraInfo\.k: focal lengths must be positive"),
        ({"distortion_model": "fisheye9", "d": [0.1] * 5}, r"^CameraInfo\.distortion_model: 'fisheye9'"),
        ({"width": 0}, r"^CameraInfo\.width, height: must be positive"),
        ({"height": -2}, r"^CameraInfo\.height: expected a non-negative integer, got -2"),
        ({"width": 64.5}, r"^CameraInfo\.width: expected a non-negative integer"),
        ({"binning_x": 1000}, r"^CameraInfo\.width, height: must be positive, got 0x480"),
        ({"binning_y": None}, r"^CameraInfo\.binning_y: expected a non-negative integer, got None"),
        (
            {"roi": SimpleNamespace(x_offset=-1, y_offset=0, width=10, height=10, do_rectify=False)},
            r"^CameraInfo\.roi\.x_offset: expected a non-negative integer",
        ),
    ],
)
def test_malformed_camera_infos_name_the_field(changes, pattern):
    msg = intrinsics_to_camera_info(CameraIntrinsics(640, 480, [[500, 0, 320], [0, 500, 240], [0, 0, 1]]))
    with pytest.raises(ValueError, match=pattern):
        camera_info_to_intrinsics(loosened(msg, changes))


NUMBERS = st.one_of(st.floats(), st.just(0.0), st.floats(-1e4, 1e4))  # NaN and infinities included


@FUZZ
@given(
    k=st.lists(NUMBERS, min_size=9, max_size=9),
    r=st.lists(NUMBERS, min_size=9, max_size=9),
    p=st.lists(NUMBERS, min_size=12, max_size=12),
    d=st.lists(NUMBERS, max_size=9),
    model=st.one_of(st.sampled_from([*DISTORTION_MODELS, "", "fisheye"]), st.text(max_size=6)),
    size=st.tuples(sizes(), sizes(), sizes(), sizes()),
    roi=st.tuples(sizes(), sizes(), sizes(), sizes()),
)
def test_any_camera_info_converts_or_raises_a_value_error(k, r, p, d, model, size, roi):
    width, height, binning_x, binning_y = size
    msg = CameraInfo(width=width, height=height, distortion_model=model, d=d, k=k, r=r, p=p)
    msg.binning_x, msg.binning_y = binning_x, binning_y
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = roi
    camera = outcome(camera_info_to_intrinsics, msg)
    if isinstance(camera, ValueError):
        assert str(camera).startswith("CameraInfo."), camera
    else:
        assert min(camera.width, camera.height) > 0
        assert np.isfinite(camera.K).all()


# --------------------------------------------------------------------------------------------- labelled
@FUZZ
@given(
    n=st.integers(0, 40),
    classes=st.integers(1, 254),
    with_intensity=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_labeled_cloud_holds_every_point_with_its_label_and_colour(n, classes, with_intensity, seed):
    rng = np.random.default_rng(seed)
    xyz = rng.integers(0, 256, (n, 12), dtype=np.uint8).view(np.float32)  # any bit pattern, NaN included
    intensity = rng.standard_normal(n).astype(np.float32) if with_intensity else None
    labels = rng.choice(np.array([*range(classes), 255], np.uint8), n)
    confidence = rng.random(n).astype(np.float32)
    colors = rng.integers(0, 256, (classes, 3), dtype=np.uint8)
    fused = rng.random(n) < 0.5
    cloud = create_labeled_cloud(Header(frame_id="lidar"), xyz, intensity, labels, confidence, colors, fused)
    points = read_points(cloud)
    assert points.shape == (n,)
    for k, axis in enumerate("xyz"):
        assert points[axis].tobytes() == xyz[:, k].tobytes()
    expected_intensity = intensity if intensity is not None else np.zeros(n, np.float32)
    assert points["intensity"].tobytes() == expected_intensity.tobytes()
    assert points["label"].tolist() == labels.tolist()
    assert points["fused"].tolist() == fused.astype(int).tolist()
    assert points["confidence"].tobytes() == confidence.tobytes()
    palette = np.vstack([colors, np.full((256 - classes, 3), -1)])  # -1: the grey of ignored points, below
    rgb = unpack_rgb(points["rgb"])
    known = labels != 255
    np.testing.assert_array_equal(rgb[known], palette[labels[known]])
    assert len({tuple(c) for c in rgb[~known]}) <= 1  # every ignored point one grey


@pytest.mark.parametrize(
    ("arguments", "pattern"),
    [
        ({"xyz": np.zeros((3, 2), np.float32)}, r"^xyz: expected \(N, 3\)"),
        ({"intensity": np.zeros(2, np.float32)}, r"^intensity: expected \(3,\)"),
        ({"labels": np.zeros(3, np.int64)}, r"^labels: expected uint8"),
        ({"labels": np.array([0, 5, 1], np.uint8)}, r"^labels: \[5\] not in the palette of 2 classes"),
        ({"confidence": np.zeros((3, 1), np.float32)}, r"^confidence: expected \(3,\)"),
        ({"fused": np.zeros(4, bool)}, r"^fused: expected \(3,\)"),
        ({"colors": np.array([[300, 0, 0], [0, 0, 0]])}, r"^colors: expected a \(K, 3\) uint8 class palette"),
        ({"colors": np.zeros((0, 3), np.uint8)}, r"^colors: expected a \(K, 3\) uint8"),
        (
            {"colors": np.zeros((255, 3), np.uint8)},
            r"^colors: expected a \(K, 3\) uint8 class palette with K < 255",
        ),
    ],
)
def test_labeled_cloud_refuses_inconsistent_inputs_naming_them(arguments, pattern):
    inputs = {
        "xyz": np.zeros((3, 3), np.float32),
        "intensity": None,
        "labels": np.array([0, 1, 255], np.uint8),
        "confidence": np.ones(3, np.float32),
        "colors": np.zeros((2, 3), np.uint8),
    }
    with pytest.raises(ValueError, match=pattern):
        create_labeled_cloud(Header(), **(inputs | arguments))


def test_png_chunk_longer_than_the_data_is_refused_before_decoding():
    """Found by the fuzz above: OpenCV sizes a PNG chunk's buffer from its declared length before reading
    it, so these 84 bytes cost 4 GB and 2.4 s (decoding failed only then)."""
    png = bytearray(BRIDGE.cv2_to_compressed_imgmsg(np.zeros((6, 7, 3), np.uint8), "png").data)
    png[33:37] = (0xF600008F).to_bytes(4, "big")  # the length of the chunk after IHDR
    msg = CompressedImage(format="png")
    msg.data = array.array("B", png)
    pattern = rf"^CompressedImage field `data` \({len(png)} bytes\) is a PNG whose b'IDAT' chunk at byte 33 "
    with pytest.raises(
        ValueError, match=pattern + r"declares 4127195279 bytes, more than the \d+ that follow"
    ):
        BRIDGE.compressed_imgmsg_to_cv2(msg)
