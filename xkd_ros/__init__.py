"""xkd_ros: camera-LiDAR semantic segmentation for ROS 2.

The live flow is msgs -> sync -> pipeline (geometry + inference) -> node; everything but `node` is plain
Python and numpy, testable without a ROS graph.
"""

__version__ = "0.1.0"
