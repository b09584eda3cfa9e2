"""Frame: the checks that keep every reader honest, motion compensation from poses, and its picture."""

import dataclasses

import numpy as np
import pytest

from xkd_ros.classes import IGNORE_INDEX, load_class_set
from xkd_ros.data.render import render_frame
from xkd_ros.geometry import transform_from_quaternion


def small_frame(rellis_frame, **changes):
    return dataclasses.replace(rellis_frame, **changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"points": np.zeros((5, 3), np.float32)}, "points: shape"),
        ({"points": np.zeros((5, 5), np.float64)}, "points: expected float32"),
        ({"channels": ("y", "x", "z", "intensity", "ring")}, "channels: must start with x, y, z"),
        ({"labels": np.zeros(3, np.uint8)}, "labels: expected"),
        ({"labels": None, "classes": None}, None),
        ({"classes": None}, "without the name of their class set"),
        (
            {"images": {"pylon_camera": np.zeros((10, 10, 3), np.uint8)}},
            "images.pylon_camera: expected (1200, 1920, 3)",
        ),
        ({"images": {"other": np.zeros((1200, 1920, 3), np.uint8)}}, "camera 'other' is not in the rig"),
    ],
)
def test_frame_rejects_inconsistent_content_naming_the_field(rellis_frame, changes, message):
    if message is None:
        small_frame(rellis_frame, **changes)  # labels are optional
        return
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        small_frame(rellis_frame, **changes)
    assert str(error.value).startswith("rellis3d/000104: ")


def test_channels_by_name(rellis_frame):
    np.testing.assert_array_equal(rellis_frame.channel("intensity"), rellis_frame.points[:, 3])
    np.testing.assert_array_equal(rellis_frame.channel("ring"), rellis_frame.points[:, 4])
    with pytest.raises(KeyError, match="no channel 'time'"):
        rellis_frame.channel("time")


def test_compensated_rig_moves_cameras_to_their_image_stamps(rellis_frame):
    assert rellis_frame.compensated_rig() is rellis_frame.rig  # no poses: the calibration is used as is
    pose = transform_from_quaternion([1, 0, 0, 0], [100.0, 50.0, 0.0])
    moved = transform_from_quaternion([1, 0, 0, 0], [100.2, 50.0, 0.0])  # 0.2 m further along x at the image
    frame = small_frame(rellis_frame, pose=pose, image_poses={"pylon_camera": moved})
    T_static = rellis_frame.rig["pylon_camera"].T_cam_lidar
    T = frame.compensated_rig()["pylon_camera"].T_cam_lidar
    point = np.array([10.0, 0.0, 0.0, 1.0])  # a static point, 10 m ahead of the LiDAR at scan time
    np.testing.assert_allclose(T @ point, T_static @ (point - [0.2, 0, 0, 0]), atol=1e-12)


def test_class_sets_map_and_colour(rellis_frame):
    classes = load_class_set("rellis3d")
    assert classes.map_raw(np.array([0, 3, 34])).tolist() == [IGNORE_INDEX, classes.index("grass"), 18]
    with pytest.raises(
        ValueError, match=r"scan.label: raw class id\(s\) \[2, 99\] are not in class set 'rellis3d'"
    ):
        classes.map_raw(np.array([3, 2, 99]), source="scan.label")
    colours = classes.colorize(np.array([classes.index("person"), IGNORE_INDEX]))
    assert colours.tolist() == [[204, 153, 255], [128, 128, 128]]
    assert np.bincount(rellis_frame.labels, minlength=256)[classes.index("person")] == 1310  # SOURCE.md


def test_render_frame_paints_class_colours_where_points_land(rellis_frame):
    picture = render_frame(rellis_frame, tile_width=480)
    assert picture.shape == (300, 480 + 300, 3)  # one 480x300 camera tile, then a square bird's-eye view
    bev = picture[:, 480:]
    grass_bgr = load_class_set("rellis3d").colors[load_class_set("rellis3d").index("grass")][::-1]
    assert np.all(bev == grass_bgr, axis=2).sum() > 100  # class colours, not depth colours, in the BEV
