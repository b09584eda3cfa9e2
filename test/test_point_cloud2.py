"""xkd_ros.msgs.point_cloud2: the sensor_msgs_py API, zero-copy reads and strict layout checks."""

from __future__ import annotations

import array
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from xkd_ros.msgs.point_cloud2 import (
    DUMMY_FIELD_PREFIX,
    PointCloud2Error,
    create_cloud,
    create_cloud_xyz32,
    dtype_from_fields,
    read_points,
    read_points_list,
    read_points_numpy,
)

SCAN = Path(__file__).parent / "data" / "rellis3d_000104" / "000104.bin"
F32, F64, U8, U16 = PointField.FLOAT32, PointField.FLOAT64, PointField.UINT8, PointField.UINT16
HOST_BIGENDIAN = sys.byteorder == "big"


def field(name: str, offset: int, datatype: int, count: int = 1) -> PointField:
    return PointField(name=name, offset=offset, datatype=datatype, count=count)


XYZ = [field("x", 0, F32), field("y", 4, F32), field("z", 8, F32)]
MIXED = [*XYZ, field("intensity", 12, U8), field("ring", 14, U16), field("time", 16, F64)]


def hand_cloud(fields, data: bytes, width: int, height: int = 1, point_step: int = 12, **kw) -> PointCloud2:
    """A PointCloud2 built field by field, independent of create_cloud."""
    msg = PointCloud2(
        header=Header(frame_id="lidar"),
        height=height,
        width=width,
        fields=fields,
        point_step=point_step,
        row_step=kw.pop("row_step", point_step * width),
        is_bigendian=kw.pop("is_bigendian", HOST_BIGENDIAN),
        is_dense=kw.pop("is_dense", False),
    )
    msg.data = array.array("B", data)
    return msg


def mixed_points(n: int = 50) -> np.ndarray:
    rng = np.random.default_rng(0)
    points = np.zeros(n, dtype=dtype_from_fields(MIXED))
    for name in "xyz":
        points[name] = rng.normal(0, 20, n)
    points["intensity"] = rng.integers(0, 256, n)
    points["ring"] = rng.integers(0, 65536, n)
    points["time"] = 1.7e9 + rng.random(n)
    return points


def test_round_trip_mixed_types():
    points = mixed_points()
    msg = create_cloud(Header(frame_id="lidar"), MIXED, points)
    assert isinstance(msg, PointCloud2)
    assert all(isinstance(f, PointField) for f in msg.fields)
    assert isinstance(msg.data, array.array)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 50, 24, 24 * 50)
    assert msg.is_dense is False
    assert msg.is_bigendian == HOST_BIGENDIAN
    assert bytes(msg.data) == points.tobytes()
    back = read_points(msg)
    assert back.dtype == points.dtype
    np.testing.assert_array_equal(back, points)
    subset = read_points(msg, field_names=["ring", "x"])
    assert subset.dtype.names == ("ring", "x")
    np.testing.assert_array_equal(subset["ring"], points["ring"])
    np.testing.assert_array_equal(subset["x"], points["x"])


def test_round_trip_xyz32_from_array_and_list():
    xyz = np.arange(30, dtype=np.float32).reshape(10, 3) / 7
    for source in (xyz, xyz.tolist()):
        msg = create_cloud_xyz32(Header(frame_id="f"), source)
        assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
            ("x", 0, F32, 1),
            ("y", 4, F32, 1),
            ("z", 8, F32, 1),
        ]
        np.testing.assert_array_equal(read_points_numpy(msg), xyz)


def test_read_points_numpy_is_a_writable_view_on_the_message():
    msg = create_cloud(Header(), MIXED, mixed_points())
    xyz = read_points_numpy(msg, field_names=["x", "y", "z"])
    assert xyz.shape == (50, 3)
    assert xyz.dtype == np.float32
    assert np.shares_memory(xyz, msg.data)
    assert np.shares_memory(read_points(msg), msg.data)
    xyz[3, 1] = 123.5
    assert struct.unpack_from("=f", msg.data, 3 * 24 + 4)[0] == 123.5
    assert read_points(msg)["y"][3] == 123.5


def test_read_points_numpy_rejects_mixed_datatypes():
    msg = create_cloud(Header(), MIXED, mixed_points())
    with pytest.raises(PointCloud2Error, match="share a datatype"):
        read_points_numpy(msg)
    with pytest.raises(AssertionError):  # what sensor_msgs_py raises, so its users' tests keep passing
        read_points_numpy(msg, field_names=["x", "ring"])


def test_fields_out_of_order_with_gaps_and_point_step_padding():
    # z at 12, x at 0, y at 20: gaps at 4..12 and 16..20, and 8 bytes of padding after y (point_step 32)
    fields = [field("z", 12, F32), field("x", 0, F32), field("y", 20, F32)]
    layout = np.dtype(
        {"names": ["x", "z", "y"], "formats": ["=f4"] * 3, "offsets": [0, 12, 20], "itemsize": 32}
    )
    raw = np.zeros(4, dtype=layout)
    raw["x"], raw["y"], raw["z"] = [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]
    msg = hand_cloud(fields, raw.tobytes(), width=4, point_step=32)

    points = read_points(msg)
    assert points.dtype.names == ("z", "x", "y")
    assert points.dtype.itemsize == 32
    np.testing.assert_array_equal(read_points_numpy(msg), np.stack([raw["z"], raw["x"], raw["y"]], axis=1))
    xz = read_points_numpy(msg, field_names=["x", "z"])
    np.testing.assert_array_equal(xz, np.stack([raw["x"], raw["z"]], axis=1))
    assert np.shares_memory(xz, msg.data)  # 0 and 12: evenly spaced, a strided view

    unstructured = np.stack([raw["z"], raw["x"], raw["y"]], axis=1)
    made = create_cloud(Header(), fields, unstructured, point_step=32)
    assert made.point_step == 32
    assert bytes(made.data) == raw.tobytes()  # the gaps and the padding are zero, not leftover memory


def test_create_cloud_zeroes_padding_bytes():
    points = np.random.default_rng(1).random((1000, 3)).astype(np.float32)
    msgs = [create_cloud(Header(), XYZ, points, point_step=32) for _ in range(3)]
    rows = np.frombuffer(msgs[0].data, np.uint8).reshape(1000, 32)
    assert not rows[:, 12:].any()
    assert msgs[0] == msgs[1] == msgs[2]
    np.testing.assert_array_equal(read_points_numpy(msgs[2]), points)


def test_count_greater_than_one_is_expanded():
    fields = [field("x", 0, F32), field("rgb", 4, U8, count=3), field("n", 8, F32, count=2)]
    dtype = dtype_from_fields(fields)
    assert dtype.names == ("x", "rgb_0", "rgb_1", "rgb_2", "n_0", "n_1")
    assert [dtype.fields[name][1] for name in dtype.names] == [0, 4, 5, 6, 8, 12]
    data = b"".join(struct.pack("=f3Bx2f", i, i, 2 * i, 3 * i, -i, i / 2) for i in range(5))
    msg = hand_cloud(fields, data, width=5, point_step=16)
    points = read_points(msg)
    np.testing.assert_array_equal(points["rgb_2"], [0, 3, 6, 9, 12])
    np.testing.assert_array_equal(read_points_numpy(msg, field_names=["n_0", "n_1"])[:, 1], np.arange(5) / 2)
    made = create_cloud(Header(), fields, points)
    assert bytes(made.data) == data


def test_unnamed_fields_get_dummy_names():
    assert DUMMY_FIELD_PREFIX == "unnamed_field"
    fields = [field("x", 0, F32), field("", 4, F32), field("", 8, U16)]
    assert dtype_from_fields(fields).names == ("x", "unnamed_field_1", "unnamed_field_2")
    msg = hand_cloud(fields, struct.pack("=ffH2x", 1.5, 2.5, 7), width=1, point_step=12)
    assert read_points_list(msg) == [(1.5, 2.5, 7)]
    assert read_points_list(msg)[0].unnamed_field_2 == 7


def test_organised_cloud_reshapes_to_width_by_height_as_upstream():
    grid = np.arange(2 * 3 * 3, dtype=np.float32).reshape(
        3, 2, 3
    )  # (width, height, xyz), upstream's convention
    msg = create_cloud_xyz32(Header(), grid)
    assert (msg.width, msg.height, msg.row_step) == (3, 2, 36)
    assert bytes(msg.data) == grid.tobytes()
    np.testing.assert_array_equal(read_points_numpy(msg), grid.reshape(-1, 3))
    organised = read_points_numpy(msg, reshape_organized_cloud=True)
    assert organised.shape == (3, 2, 3)  # (width, height), not (height, width): sensor_msgs_py's quirk
    np.testing.assert_array_equal(organised, grid)
    flat = create_cloud_xyz32(Header(), grid.reshape(-1, 3))
    assert read_points(flat, reshape_organized_cloud=True).shape == (6,)  # height 1: never reshaped


def test_padded_rows_read_through_row_step():
    width, height, row_step = 4, 3, 64  # 48 bytes of points, then 16 bytes of junk per row
    xyz = np.arange(width * height * 3, dtype=np.float32).reshape(height, width, 3)
    rows = np.full((height, row_step), 0xFF, np.uint8)
    rows[:, :48] = xyz.view(np.uint8).reshape(height, 48)
    msg = hand_cloud(XYZ, rows.tobytes(), width=width, height=height, row_step=row_step)
    np.testing.assert_array_equal(read_points_numpy(msg), xyz.reshape(-1, 3))
    np.testing.assert_array_equal(read_points(msg, field_names=["z"])["z"], xyz[..., 2].ravel())
    np.testing.assert_array_equal(
        read_points_numpy(msg, reshape_organized_cloud=True), xyz.reshape(width, height, 3)
    )
    np.testing.assert_array_equal(read_points_numpy(msg, uvs=[11, 4]), xyz.reshape(-1, 3)[[11, 4]])
    assert bytes(msg.data) == rows.tobytes()


@pytest.mark.parametrize(("width", "height"), [(0, 1), (5, 0), (0, 0)])
def test_empty_cloud(width, height):
    msg = hand_cloud(MIXED, b"", width=width, height=height, point_step=24)
    points = read_points(msg)
    assert points.shape == (0,)
    assert points.dtype == dtype_from_fields(MIXED, 24)
    assert read_points_numpy(msg, field_names=["x", "y", "z"]).shape == (0, 3)
    assert read_points_list(msg) == []


def test_empty_cloud_creation():
    msg = create_cloud_xyz32(Header(), np.empty((0, 3), np.float32))
    assert (msg.width, msg.height, len(msg.data), msg.point_step) == (0, 1, 0, 12)
    assert read_points_numpy(msg).shape == (0, 3)
    assert read_points(PointCloud2()).shape == (0,)


def test_skip_nans_only_when_not_dense():
    xyz = np.array([[1, 2, 3], [np.nan, 0, 0], [4, 5, 6], [7, 8, np.nan]], np.float32)
    msg = hand_cloud(XYZ, xyz.tobytes(), width=4)
    np.testing.assert_array_equal(read_points_numpy(msg, skip_nans=True), xyz[[0, 2]])
    np.testing.assert_array_equal(
        read_points_numpy(msg, field_names=["y", "z"], skip_nans=True), xyz[[0, 1, 2], 1:]
    )
    msg.is_dense = True
    np.testing.assert_array_equal(read_points_numpy(msg, skip_nans=True), xyz)


def test_skip_nans_with_integer_fields():
    points = mixed_points(4)
    points["z"][1] = np.nan
    msg = create_cloud(Header(), MIXED, points)
    np.testing.assert_array_equal(read_points(msg, skip_nans=True), points[[0, 2, 3]])


def test_uvs_select_flat_indices():
    points = mixed_points(20)
    msg = create_cloud(Header(), MIXED, points)
    for uvs in ([3, 0, 17], np.array([3, 0, 17]), iter([3, 0, 17])):
        np.testing.assert_array_equal(read_points(msg, uvs=uvs), points[[3, 0, 17]])
    np.testing.assert_array_equal(
        read_points_list(msg, field_names=["ring"], uvs=[5]), [(points["ring"][5],)]
    )


def test_big_endian_cloud_reads_native_values_and_leaves_data_alone():
    fields = [*XYZ, field("ring", 12, U16)]
    xyz = np.array([[1.25, -2.5, 3.75], [1e6, -0.0, 7.5]])
    raw = b"".join(struct.pack(">fffH2x", *p, ring) for p, ring in zip(xyz, (513, 2), strict=True))
    msg = hand_cloud(fields, raw, width=2, point_step=16, is_bigendian=True)
    points = read_points(msg)
    assert all(points.dtype[name].isnative for name in points.dtype.names)
    np.testing.assert_array_equal(points["ring"], [513, 2])
    np.testing.assert_array_equal(read_points_numpy(msg, field_names=["x", "y", "z"]), xyz.astype(np.float32))
    assert read_points_list(msg, field_names=["z", "ring"]) == [(3.75, 513), (7.5, 2)]
    assert bytes(msg.data) == raw
    assert dtype_from_fields(fields, is_bigendian=True)["x"].str == ">f4"


def test_rosbags_deserialised_cloud():
    points = mixed_points(30)
    raw = serialize_message(create_cloud(Header(frame_id="lidar"), MIXED, points))
    msg = get_typestore(Stores.ROS2_KILTED).deserialize_cdr(raw, "sensor_msgs/msg/PointCloud2")
    assert isinstance(msg.data, np.ndarray)
    np.testing.assert_array_equal(read_points(msg), points)
    xyz = read_points_numpy(msg, field_names=["x", "y", "z"])
    np.testing.assert_array_equal(xyz, np.stack([points["x"], points["y"], points["z"]], axis=1))
    assert np.shares_memory(xyz, msg.data)
    assert read_points_list(msg, uvs=[7])[0].ring == points["ring"][7]
    again = create_cloud(Header(), msg.fields, read_points(msg))  # rosbags PointFields in, sensor_msgs out
    assert all(isinstance(f, PointField) for f in again.fields)
    assert bytes(again.data) == points.tobytes()


def test_real_organised_scan_round_trip():
    scan = np.fromfile(SCAN, dtype=np.float32).reshape(-1, 4)
    assert scan.shape == (131072, 4)
    fields = [*XYZ, field("intensity", 12, F32)]
    msg = create_cloud(Header(frame_id="os1_lidar"), fields, scan.reshape(2048, 64, 4))  # (width, height)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (64, 2048, 16, 16 * 2048)
    assert bytes(msg.data) == SCAN.read_bytes()
    back = read_points_numpy(msg)
    np.testing.assert_array_equal(back.view(np.uint32), scan.view(np.uint32))  # bit-exact
    assert np.shares_memory(back, msg.data)
    np.testing.assert_array_equal(
        read_points_numpy(msg, field_names=["intensity"], reshape_organized_cloud=True)[..., 0],
        scan[:, 3].reshape(2048, 64),
    )


def test_read_points_list_matches_struct_unpack():
    fields = [field("ring", 0, U16), field("x", 4, F32), field("t", 8, F64), field("i", 16, U8)]
    rng = np.random.default_rng(2)
    data = rng.integers(0, 256, 5 * 24, dtype=np.uint8).tobytes()  # any bytes: includes odd floats
    data = bytearray(data)
    for k in range(5):  # keep NaN out of the floats so that == compares them
        struct.pack_into("=f", data, 24 * k + 4, k * 0.3)
        struct.pack_into("=d", data, 24 * k + 8, k * 1e-3)
    msg = hand_cloud(fields, bytes(data), width=5, point_step=24)
    expected = [struct.unpack_from("=H2xfdB", data, 24 * k) for k in range(5)]
    got = read_points_list(msg)
    assert got == expected
    assert type(got[0]).__name__ == "Point"
    assert got[2]._fields == ("ring", "x", "t", "i")
    assert got[2].i == expected[2][3]


def test_bytes_and_list_data_are_accepted():
    xyz = np.arange(6, dtype=np.float32).reshape(2, 3)
    layout = {"height": 1, "width": 2, "fields": XYZ, "point_step": 12, "row_step": 24}
    flags = {"is_bigendian": HOST_BIGENDIAN, "is_dense": True}
    for data in (xyz.tobytes(), list(xyz.tobytes())):
        msg = SimpleNamespace(**layout, **flags, data=data)
        np.testing.assert_array_equal(read_points_numpy(msg), xyz)


def bad(**changes) -> PointCloud2:
    msg = create_cloud(Header(), MIXED, mixed_points(4))
    for name, value in changes.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (bad(data=array.array("B", bytes(95))), r"data has 95 bytes.*row_step \* height = 96 \* 1 = 96"),
        (bad(point_step=20), r"point_step 20 .* 'time' ends at byte 24"),
        (bad(row_step=95), r"row_step 95 .* width \* point_step = 4 \* 24"),
        (bad(fields=[*XYZ, field("intensity", 12, 9)]), r"'intensity' has unknown datatype 9"),
        (bad(fields=[*XYZ, field("ring", 14, U16, count=0)]), r"'ring' has count 0"),
        (bad(fields=[*XYZ, field("x", 12, U8)]), r"'x' appears twice"),
    ],
)
def test_malformed_clouds_name_the_field(msg, message):
    with pytest.raises(ValueError, match=message):
        read_points(msg)


def test_unknown_field_names_are_listed():
    msg = create_cloud(Header(), MIXED, mixed_points(4))
    with pytest.raises(ValueError, match=r"\['rgb', 'label'\] are not in the cloud.*'intensity', 'ring'"):
        read_points(msg, field_names=["x", "rgb", "label"])


def test_create_cloud_rejects_mismatched_input():
    points = mixed_points(3)
    with pytest.raises(PointCloud2Error, match="differs from dtype_from_fields"):
        create_cloud(Header(), MIXED[::-1], points)
    with pytest.raises(AssertionError):  # as upstream, for its users' tests
        create_cloud(Header(), XYZ, np.zeros(3, dtype=dtype_from_fields(XYZ, 16)))
    with pytest.raises(PointCloud2Error, match="one datatype"):
        create_cloud(Header(), MIXED, np.zeros((3, 6), np.float32))
    with pytest.raises(PointCloud2Error, match="3 dimensions"):
        create_cloud_xyz32(Header(), np.zeros((2, 2, 2, 3), np.float32))


def test_a_layout_seen_before_is_served_only_for_exactly_the_same_values():
    """dtype_from_fields keeps the dtype of each layout it has built (a sensor publishes one layout): values
    that compare equal to valid ones but are refused (an offset of 4.0) must still be refused after the int
    layout was cached, numpy integers still read, failures are never kept, and a fields list changed in
    place is read as changed."""

    def fields(y_offset=4, y_name="y"):
        return [field("x", 0, F32), SimpleNamespace(name=y_name, offset=y_offset, datatype=F32, count=1)]

    assert dtype_from_fields(fields()) is dtype_from_fields(fields())  # built once, by value
    for offset in (4.0, np.float32(4)):
        with pytest.raises(PointCloud2Error, match=r"'y' offset is .*4\.0"):
            dtype_from_fields(fields(offset))
    assert dtype_from_fields(fields(np.uint32(4))) == dtype_from_fields(fields())
    for _ in range(2):  # refused each time: an error is not a cached result
        with pytest.raises(PointCloud2Error, match="'x' and 'y' overlap"):
            dtype_from_fields(fields(2))
    msg = hand_cloud(
        [field("x", 0, F32), field("y", 4, F32)], struct.pack("=2f", 1.0, 2.0), width=1, point_step=8
    )
    assert read_points(msg)["y"].tolist() == [2.0]
    msg.fields[1].name = "z"  # the same list and PointField objects, changed in place
    assert read_points(msg).dtype.names == ("x", "z")


def test_create_cloud_copies_the_points_once_into_its_own_data():
    """create_cloud fills the message's own array (one copy, no second one by the data setter): the message
    holds an array('B') that later changes to the points do not reach, padding zeroed."""
    points = mixed_points(5)
    msg = create_cloud(Header(), MIXED, points)
    before = bytes(msg.data)
    points["x"] = 99.0
    assert isinstance(msg.data, array.array)
    assert msg.data.typecode == "B"
    assert bytes(msg.data) == before
    assert read_points(msg)["x"].tolist() != [99.0] * 5
    padding = np.frombuffer(msg.data, np.uint8).reshape(5, -1)[:, 13]  # between intensity (12) and ring (14)
    assert not padding.any()


def test_read_points_list_of_points_without_fields():
    msg = hand_cloud([], bytes(12), width=3, point_step=4)
    listed = read_points_list(msg)
    assert len(listed) == 3
    assert all(point == () and point._fields == () for point in listed)
