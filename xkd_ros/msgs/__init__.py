"""Sensor messages <-> numpy, with the APIs ROS users know (sensor_msgs_py.point_cloud2, cv_bridge).

Reading is a zero-copy view on the message buffer where the layout allows; creating is one bulk copy.
Messages are duck-typed, so rclpy messages and rosbags-deserialised ones read alike.
"""

from xkd_ros.msgs.camera_info import (
    camera_info_to_intrinsics,
    intrinsics_to_camera_info,
    rig_from_camera_infos,
)
from xkd_ros.msgs.image import CvBridge, CvBridgeError, compressed_image_size, cvtColorForDisplay, getCvType
from xkd_ros.msgs.labeled_cloud import (
    LABELED_CLOUD_FIELDS,
    class_legend_markers,
    create_labeled_cloud,
    pack_rgb,
    unpack_rgb,
)
from xkd_ros.msgs.point_cloud2 import (
    PointCloud2Error,
    create_cloud,
    create_cloud_xyz32,
    dtype_from_fields,
    read_points,
    read_points_list,
    read_points_numpy,
)

__all__ = [
    "LABELED_CLOUD_FIELDS",
    "CvBridge",
    "CvBridgeError",
    "PointCloud2Error",
    "camera_info_to_intrinsics",
    "class_legend_markers",
    "compressed_image_size",
    "create_cloud",
    "create_cloud_xyz32",
    "create_labeled_cloud",
    "cvtColorForDisplay",
    "dtype_from_fields",
    "getCvType",
    "intrinsics_to_camera_info",
    "pack_rgb",
    "read_points",
    "read_points_list",
    "read_points_numpy",
    "rig_from_camera_infos",
    "unpack_rgb",
]
