"""open_frames: one call reads every layout, and says which layouts exist when a path holds none."""

import numpy as np
import pytest
from conftest import DATA

from xkd_ros.data import open_frames
from xkd_ros.data.rosbag import write_bag


def test_samples_open_by_layout(rellis_frame, nuscenes_keyframe):
    (keyframe,) = open_frames(DATA / "nuscenes_demo")
    np.testing.assert_array_equal(keyframe.points, nuscenes_keyframe.points)
    (rellis,) = open_frames(DATA / "rellis3d_000104")
    np.testing.assert_array_equal(rellis.labels, rellis_frame.labels)
    kitti = open_frames(DATA / "semantickitti_tiny")
    assert len(kitti) == 1
    assert kitti[0].classes == "semantickitti"
    assert len(kitti[0].points) == 50


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_opens_as_frames(tmp_path, rellis_frame, storage):
    bag = write_bag([rellis_frame], tmp_path / "bag", storage=storage, image_format="png")
    (frame,) = open_frames(bag)
    np.testing.assert_array_equal(frame.points, rellis_frame.points)
    np.testing.assert_array_equal(frame.images["pylon_camera"], rellis_frame.images["pylon_camera"])


def test_unknown_layout_lists_what_is_readable(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"holds no data set xkd_ros reads(.|\n)*rosbag2"):
        open_frames(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_frames(tmp_path / "missing")
