"""`xkd-demo` end to end on the real nuScenes keyframe: messages out and back in, points in six cameras."""

import json

import cv2
import numpy as np
from conftest import DATA, NUSCENES_COUNTS

from xkd_ros.demo import frame_to_messages, main
from xkd_ros.msgs import CvBridge, read_points


def test_frame_to_messages_round_trips_the_keyframe(nuscenes_keyframe):
    cloud, images, infos = frame_to_messages(nuscenes_keyframe, DATA / "nuscenes_demo")
    points = read_points(cloud)
    assert cloud.header.frame_id == "LIDAR_TOP"
    assert points.dtype.names == ("x", "y", "z", "intensity", "ring")
    for column, name in enumerate(points.dtype.names):
        np.testing.assert_array_equal(
            points[name], nuscenes_keyframe.points[:, column].astype(points[name].dtype)
        )
    assert list(images) == list(infos) == nuscenes_keyframe.rig.names
    front = CvBridge().compressed_imgmsg_to_cv2(images["CAM_FRONT"], "rgb8")
    np.testing.assert_array_equal(front, nuscenes_keyframe.images["CAM_FRONT"])
    stamp = images["CAM_FRONT"].header.stamp
    assert stamp.sec + stamp.nanosec * 1e-9 == nuscenes_keyframe.image_stamps["CAM_FRONT"]


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
