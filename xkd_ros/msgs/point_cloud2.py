"""sensor_msgs/PointCloud2 <-> numpy, with the API of `sensor_msgs_py.point_cloud2` (ROS 2 Kilted).

sensor_msgs_py ships no wheel, so this module stands in for it: same names, arguments and results, so code
and tests written against it run unchanged. Where it goes further:

- Reading is a zero-copy view on `msg.data` whenever the layout allows. rclpy messages hold an
  `array.array('B')`, rosbags messages a numpy uint8 array; `bytes` work too (read-only views).
- Messages are duck-typed: anything with the PointCloud2 attributes reads (rosbags messages included).
- Big-endian clouds are read through a '>' dtype and returned in native order, without byte-swapping
  `msg.data` in place as upstream does (that mutates the message); only this case copies.
- Rows padded past width * point_step (row_step) are read through strides, and copied to flat only then;
  upstream ignores row_step and misreads such clouds silently.
- Malformed clouds raise `PointCloud2Error` naming the field at fault, where upstream asserts or lets numpy
  raise a KeyError or TypeError that names nothing. It is a ValueError and also an AssertionError, so code
  and tests that expect upstream's assertions keep working. Data longer than declared and overlapping fields
  are refused too (upstream reads them without a word), and sizes are checked against len(data) before
  anything is built, so a cloud declaring more than it holds costs nothing to refuse.
- read_points_list names its fields like read_points (upstream fails on unnamed and count > 1 fields) and
  gives Python scalars (upstream: equal numpy scalars).
- `create_cloud` fills `msg.data` with one bulk copy and zeroes the padding bytes between and after fields
  (numpy leaves them uninitialised, so upstream's messages leak memory contents and differ run to run).
"""

from __future__ import annotations

import functools
import itertools
import operator
import sys
from collections import namedtuple
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.recfunctions import structured_to_unstructured, unstructured_to_structured
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from xkd_ros.msgs.fields import whole_number

__all__ = [
    "DUMMY_FIELD_PREFIX",
    "MAX_FIELDS",
    "PointCloud2Error",
    "create_cloud",
    "create_cloud_xyz32",
    "dtype_from_fields",
    "read_points",
    "read_points_list",
    "read_points_numpy",
]

DUMMY_FIELD_PREFIX = "unnamed_field"
# Fields of one point, count > 1 expanded: far more than any point type has (PCL's largest, ShapeContext1980,
# has under 2,000), few enough that building the dtype stays in milliseconds whatever a message declares.
MAX_FIELDS = 65536
_MAX_POINT_STEP = 2**31 - 1  # numpy's limit on the size of a dtype (a C int)

_DATATYPES: dict[int, np.dtype] = {
    PointField.INT8: np.dtype(np.int8),
    PointField.UINT8: np.dtype(np.uint8),
    PointField.INT16: np.dtype(np.int16),
    PointField.UINT16: np.dtype(np.uint16),
    PointField.INT32: np.dtype(np.int32),
    PointField.UINT32: np.dtype(np.uint32),
    PointField.FLOAT32: np.dtype(np.float32),
    PointField.FLOAT64: np.dtype(np.float64),
}
_HOST_BIGENDIAN = sys.byteorder == "big"


class PointCloud2Error(ValueError, AssertionError):
    """A PointCloud2, or points for one, is malformed; the message names the field at fault.

    Also an AssertionError because sensor_msgs_py signals these cases with `assert`.
    """


def dtype_from_fields(
    fields: Iterable[Any], point_step: int | None = None, *, is_bigendian: bool = _HOST_BIGENDIAN
) -> np.dtype:
    """Structured dtype of one point, as upstream: unnamed fields become f"unnamed_field_{i}", a field
    with count > 1 becomes f"{name}_{k}" at offset + k * itemsize, and point_step (if given) the itemsize.

    `is_bigendian` (keyword-only, ours) sets the byte order; by default it is the host's, as upstream.
    Every field is checked before any is expanded, so a count of 2**31 is refused at once rather than
    expanded name by name; overlapping fields are refused (upstream reads them, each byte twice).

    A layout seen before is not checked and built again: a sensor publishes one layout, and building the
    dtype was most of a read's time (16 of 20 us for a 5-field cloud), twice upstream's whole read.
    """
    fields = list(fields)
    layout = _layout(fields, point_step)
    if layout is None:
        return _build_dtype(fields, point_step, is_bigendian)
    return _cached_dtype(layout, point_step, bool(is_bigendian))


_FIELD_VALUES = operator.attrgetter("name", "offset", "datatype", "count")
_FIELD_COUNT = operator.itemgetter(3)
_CACHED_FIELDS = 256  # layouts of more fields (count included) are built each time, not kept


def _layout(fields: list[Any], point_step: Any) -> tuple[tuple[Any, Any, Any, Any], ...] | None:
    """(name, offset, datatype, count) of each field as a hashable key, or None where a value is not
    exactly a str or an int (a float 2.0 or a numpy integer hashes like 2 but may be refused, so only
    these exact types share a cached dtype) or where the layout is too large to keep."""
    if point_step is not None and type(point_step) is not int:
        return None
    try:
        layout = tuple(map(_FIELD_VALUES, fields))
    except AttributeError:
        return None  # _build_dtype raises as before
    if not set(map(type, itertools.chain.from_iterable(layout))) <= {int, str}:
        return None
    try:
        total = sum(map(_FIELD_COUNT, layout))
    except TypeError:  # a str count: _build_dtype names it
        return None
    return layout if total <= _CACHED_FIELDS else None


@functools.lru_cache(maxsize=64)
def _cached_dtype(
    layout: tuple[tuple[Any, Any, Any, Any], ...], point_step: int | None, is_bigendian: bool
) -> np.dtype:
    """_build_dtype, once per layout; errors are raised again each time (lru_cache keeps results only)."""
    return _build_dtype([_Field(*values) for values in layout], point_step, is_bigendian)


class _Field(NamedTuple):
    """A PointField's four values, as the cache keys them."""

    name: str
    offset: int
    datatype: int
    count: int


def _build_dtype(fields: Iterable[Any], point_step: int | None, is_bigendian: bool) -> np.dtype:
    """dtype_from_fields without the cache: every field checked, then expanded."""
    limit = _MAX_POINT_STEP if point_step is None else point_step
    extents: list[tuple[int, int, str]] = []  # (offset, end, name) of each field, before expansion
    names: list[str] = []
    formats: list[np.dtype] = []
    offsets: list[int] = []
    for i, field in enumerate(fields):
        name = field.name or f"{DUMMY_FIELD_PREFIX}_{i}"
        if field.datatype not in _DATATYPES:
            raise PointCloud2Error(
                f"PointField {name!r} has unknown datatype {field.datatype}; "
                "known: 1 (INT8) .. 8 (FLOAT64) as in sensor_msgs/PointField"
            )
        offset = _size(field.offset, f"PointField {name!r} offset")
        count = _size(field.count, f"PointField {name!r} count")
        if count < 1:
            raise PointCloud2Error(f"PointField {name!r} has count {count}; it must be at least 1")
        datatype = _DATATYPES[field.datatype].newbyteorder(">" if is_bigendian else "<")
        end = offset + count * datatype.itemsize
        if end > limit:
            raise PointCloud2Error(
                f"point_step {limit} is smaller than the fields' extent: {name!r} ends at byte {end}"
                if point_step is not None
                else f"PointField {name!r} ends at byte {end}, beyond the largest point ({limit} bytes)"
            )
        if len(names) + count > MAX_FIELDS:
            raise PointCloud2Error(
                f"PointField {name!r} brings the fields to more than {MAX_FIELDS} (count included)"
            )
        extents.append((offset, end, name))
        names.extend(f"{name}_{k}" if count > 1 else name for k in range(count))
        formats.extend([datatype] * count)
        offsets.extend(range(offset, end, datatype.itemsize))
    seen: set[str] = set()
    for subname in names:
        if subname in seen:
            raise PointCloud2Error(f"PointField name {subname!r} appears twice")
        seen.add(subname)
    _refuse_overlaps(extents)
    spec: dict[str, Any] = {"names": names, "formats": formats, "offsets": offsets}
    if point_step is not None:
        spec["itemsize"] = point_step
    return np.dtype(spec)


def _size(value: Any, what: str) -> int:
    """`value` as a non-negative int: hand-made and deserialised messages are not type-checked as rclpy's."""
    size = whole_number(value)
    if size is None:
        raise PointCloud2Error(f"{what} is {value!r}; it must be a non-negative integer")
    return size


def _refuse_overlaps(extents: list[tuple[int, int, str]]) -> None:
    """PointCloud2Error naming two fields that share bytes, if any: such a layout has no meaning."""
    ordered = sorted(extents)
    for (_, end, name), (offset, _, following) in itertools.pairwise(ordered):
        if offset < end:
            raise PointCloud2Error(
                f"PointFields {name!r} and {following!r} overlap: {following!r} starts at byte {offset}, "
                f"before {name!r} ends at byte {end}"
            )


def _as_bytes(data: Any) -> np.ndarray:
    """msg.data as a flat uint8 array sharing its memory (array.array, numpy arrays and bytes are buffers)."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:  # no buffer protocol, e.g. a list of ints in a hand-made message: one copy
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            raise PointCloud2Error(
                f"data is a {type(data).__name__}, not bytes (a buffer or a sequence of 0..255)"
            ) from None


def _cloud_view(cloud: Any) -> np.ndarray:
    """(height, width) structured view of msg.data, in the message's byte order.

    Checks the layout first, sizes before fields, so that a message declaring more than it holds is refused
    in constant time and without allocating, and numpy never sees a shape it would fail on without naming
    the field (or read a short buffer as fewer points).
    """
    height, width = _size(cloud.height, "height"), _size(cloud.width, "width")
    point_step, row_step = _size(cloud.point_step, "point_step"), _size(cloud.row_step, "row_step")
    if row_step < width * point_step:
        raise PointCloud2Error(
            f"row_step {row_step} is smaller than width * point_step = {width} * {point_step}"
        )
    data = _as_bytes(cloud.data)
    if data.size != row_step * height:
        raise PointCloud2Error(
            f"data has {data.size} bytes, {'fewer' if data.size < row_step * height else 'more'} than "
            f"row_step * height = {row_step} * {height} = {row_step * height}"
        )
    if point_step > _MAX_POINT_STEP:  # reached by an empty cloud, whose data size bounds nothing
        raise PointCloud2Error(f"point_step {point_step} is larger than any point ({_MAX_POINT_STEP} bytes)")
    if point_step == 0 and width * height:  # points of no bytes: len(data) would bound nothing
        raise PointCloud2Error(f"point_step is 0 but width * height = {width} * {height} points are declared")
    dtype = dtype_from_fields(cloud.fields, point_step, is_bigendian=bool(cloud.is_bigendian))
    return np.ndarray((height, width), dtype=dtype, buffer=data, strides=(row_step, point_step))


def read_points(
    cloud: Any,
    field_names: Iterable[str] | None = None,
    skip_nans: bool = False,
    uvs: Iterable[int] | np.ndarray | None = None,
    reshape_organized_cloud: bool = False,
) -> np.ndarray:
    """Points of a PointCloud2 as a structured array, a view on msg.data where the layout allows.

    `skip_nans` drops points with a NaN in any selected field, only if the cloud is not dense; `uvs` are flat
    point indices. With `reshape_organized_cloud` and height > 1 the result is reshaped to (width, height),
    exactly as upstream does (not (height, width)); `create_cloud` reads a 2-D array the same way, so the two
    round-trip and code written for sensor_msgs_py keeps working.
    """
    points = _cloud_view(cloud)
    if field_names is not None:
        field_names = list(field_names)
        missing = [name for name in field_names if name not in points.dtype.names]
        if missing:
            raise PointCloud2Error(
                f"field_names {missing} are not in the cloud, whose fields are {list(points.dtype.names)}"
            )
        points = points[field_names]
    if bool(cloud.is_bigendian) != _HOST_BIGENDIAN:
        points = points.astype(points.dtype.newbyteorder("="))
    points = points.reshape(-1)  # a copy only when rows are padded
    if skip_nans and not cloud.is_dense:
        nan = np.zeros(points.shape, dtype=bool)
        for name in points.dtype.names:
            if points.dtype[name].kind == "f":
                nan |= np.isnan(points[name])
        points = points[~nan]
    if uvs is not None:
        points = points[uvs if isinstance(uvs, np.ndarray) else np.fromiter(uvs, int)]
    if reshape_organized_cloud and cloud.height > 1:
        points = points.reshape(cloud.width, cloud.height)
    return points


def read_points_numpy(
    cloud: Any,
    field_names: Iterable[str] | None = None,
    skip_nans: bool = False,
    uvs: Iterable[int] | np.ndarray | None = None,
    reshape_organized_cloud: bool = False,
) -> np.ndarray:
    """Points as an unstructured (N, K) array, for maths on e.g. x, y, z; all selected fields must share a
    datatype. A view on msg.data when the fields are evenly spaced (structured_to_unstructured allows it)."""
    points = read_points(cloud, field_names, skip_nans, uvs, reshape_organized_cloud)
    types = {name: points.dtype[name] for name in points.dtype.names}
    if not types:
        raise PointCloud2Error(
            "read_points_numpy needs at least one field; the cloud or field_names has none"
        )
    if len(set(types.values())) > 1:
        raise PointCloud2Error(
            f"read_points_numpy needs the selected fields to share a datatype, got {types}; "
            "use read_points() for mixed types"
        )
    return structured_to_unstructured(points)


def read_points_list(
    cloud: Any,
    field_names: Iterable[str] | None = None,
    skip_nans: bool = False,
    uvs: Iterable[int] | np.ndarray | None = None,
) -> list[NamedTuple]:
    """Points as a list of namedtuples `Point`, one per point; for small clouds, use read_points otherwise.

    Field names are those of read_points (expanded count > 1 and unnamed fields, where upstream fails) and the
    values are Python scalars (upstream: equal numpy scalars), converted by one vectorised `tolist` per field.
    A field name that cannot be an attribute ("class", "1st", "_t") is reached by position, its attribute
    renamed `_<index>` (upstream fails on such a cloud).

    Column by column, so that the namedtuples are the only objects made per point (a row-wise `tolist`
    makes a tuple per point too): in a process with a large heap (torch loaded) every object the garbage
    collector tracks makes its full passes come sooner, and those passes were most of the time.
    """
    points = read_points(cloud, field_names, skip_nans, uvs)
    names = points.dtype.names
    Point = namedtuple("Point", names, rename=True)
    if not names:  # points of no fields: map() needs a column
        return [Point() for _ in range(len(points))]
    return list(map(Point, *(points[name].tolist() for name in names)))


def _padding(dtype: np.dtype) -> np.ndarray:
    """Mask of the bytes of one point that no field covers (kept per dtype where points are small)."""
    return _cached_padding(dtype) if dtype.itemsize <= _CACHED_POINT_STEP else _padding_mask(dtype)


_CACHED_POINT_STEP = 4096


@functools.lru_cache(maxsize=64)
def _cached_padding(dtype: np.dtype) -> np.ndarray:
    mask = _padding_mask(dtype)
    mask.flags.writeable = False  # shared by every call
    return mask


def _padding_mask(dtype: np.dtype) -> np.ndarray:
    covered = np.zeros(dtype.itemsize, dtype=bool)
    for field_dtype, offset, *_ in dtype.fields.values():
        covered[offset : offset + field_dtype.itemsize] = True
    return ~covered


def create_cloud(
    header: Header, fields: Iterable[Any], points: Iterable | np.ndarray, point_step: int | None = None
) -> PointCloud2:
    """A sensor_msgs PointCloud2 holding `points`.

    `points`: an unstructured array (all fields of one datatype), a structured array of exactly
    dtype_from_fields(fields, point_step), or an iterable of per-point tuples (slow, as upstream). A 2-D array
    of points gives width = shape[0], height = shape[1] (upstream's convention, kept so that read_points with
    reshape_organized_cloud round-trips). Data are in host byte order, filled with one bulk copy.
    """
    fields = [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in fields]
    dtype = dtype_from_fields(fields, point_step)
    if isinstance(points, np.ndarray) and points.dtype.names is None:
        datatypes = {field.datatype for field in fields}
        if len(datatypes) > 1:
            raise PointCloud2Error(
                f"an unstructured array needs fields of one datatype, got datatypes {sorted(datatypes)}; "
                "pass a structured array"
            )
        if points.ndim < 2 or points.shape[-1] != len(dtype.names):
            raise PointCloud2Error(
                f"points of shape {points.shape} do not hold the {len(dtype.names)} values of a point "
                f"{dtype.names} along their last axis"
            )
        points = unstructured_to_structured(points, dtype=dtype)
    elif isinstance(points, np.ndarray):
        if points.dtype != dtype:
            raise PointCloud2Error(
                f"points dtype {points.dtype} differs from dtype_from_fields(fields, point_step) {dtype}; "
                "check field names, order, types, offsets and point_step"
            )
    else:
        points = np.array([tuple(point) for point in points], dtype=dtype)
    if points.ndim > 2:
        raise PointCloud2Error(f"points have {points.ndim} dimensions; an organised cloud has at most 2")
    width = points.shape[0]
    height = points.shape[1] if points.ndim == 2 else 1
    if dtype.itemsize == 0 and points.size:
        raise PointCloud2Error(f"{points.size} points of no bytes: the fields are empty and point_step 0")

    cloud = PointCloud2(
        header=header,
        height=height,
        width=width,
        is_dense=False,
        is_bigendian=_HOST_BIGENDIAN,
        fields=fields,
        point_step=dtype.itemsize,
        row_step=dtype.itemsize * width,
    )
    # The message's own (empty) array.array is filled in place: one copy in all. Assigning msg.data, by
    # the constructor or the property, copies an array once more (rclpy takes it as is only when
    # ROS_PYTHON_CHECK_FIELDS=1), a third of create_cloud's time for a nuScenes scan.
    cloud.data.frombytes(np.ascontiguousarray(points).reshape(-1).view(np.uint8))
    padding = _padding(dtype)
    if padding.any():
        np.frombuffer(cloud.data, dtype=np.uint8).reshape(-1, dtype.itemsize)[:, padding] = 0
    return cloud


def create_cloud_xyz32(header: Header, points: Iterable | np.ndarray) -> PointCloud2:
    """A PointCloud2 with float32 x, y, z fields."""
    fields = [
        PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, name in enumerate("xyz")
    ]
    return create_cloud(header, fields, points)
