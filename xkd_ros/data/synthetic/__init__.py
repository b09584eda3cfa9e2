"""Synthetic camera-LiDAR street scenes: a ray-cast urban benchmark where camera-LiDAR fusion matters.

`SyntheticGenerator(load_config(), seed).sample(split, index)` makes one frame (a `Frame` plus each camera's
per-pixel class ids); `xkd-synth` (`generator.main`) writes a data set and `SyntheticDataset(root, split)`
reads it back. See docs/synthetic.md.
"""

from xkd_ros.data.synthetic.config import SyntheticConfig, load_config
from xkd_ros.data.synthetic.dataset import FORMAT_VERSION, SyntheticDataset
from xkd_ros.data.synthetic.generator import SyntheticGenerator, SyntheticSample, generate, main
from xkd_ros.data.synthetic.scene import CLASS_SET, Scene, build_scene

__all__ = [
    "CLASS_SET",
    "FORMAT_VERSION",
    "Scene",
    "SyntheticConfig",
    "SyntheticDataset",
    "SyntheticGenerator",
    "SyntheticSample",
    "build_scene",
    "generate",
    "load_config",
    "main",
]
