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


def test_synthetic_split_and_a_bag_of_it_open_alike(tmp_path):
    """`xkd-synth` writes a split; the same frames recorded as a bag read back through the same call."""
    from xkd_ros.data.synthetic.generator import main

    small = tmp_path / "small.yaml"
    small.write_text(
        "camera: {width: 160, height: 90}\nlidar: {azimuth_steps: 360}\nsequence: {frames_per_scene: 2}\n"
    )
    assert (
        main(
            [
                "--out",
                str(tmp_path / "synth"),
                "--train",
                "2",
                "--val",
                "1",
                "--seed",
                "1",
                "--config",
                str(small),
            ]
        )
        == 0
    )
    train = open_frames(tmp_path / "synth")
    assert len(train) == 2
    assert len(open_frames(tmp_path / "synth", split="val")) == 1
    bag = write_bag(train, tmp_path / "bag", image_format="png")
    replayed = open_frames(bag)
    assert len(replayed) == 2
    for original, again in zip(train, replayed, strict=True):
        np.testing.assert_array_equal(again.points, original.points)
        np.testing.assert_array_equal(again.labels, original.labels)
        assert again.classes == "synthetic"
        assert again.image_stamps == pytest.approx(original.image_stamps, abs=1e-9)  # bags keep nanoseconds
        for camera, rgb in original.images.items():
            np.testing.assert_array_equal(again.images[camera], rgb)
