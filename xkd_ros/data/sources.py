"""`open_frames`: any supported data set, recording or sample as a sequence of Frames, by what the path holds.

Training, evaluation and the demo read frames through this one call; each reader stays usable on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xkd_ros.data.frame import Frame

FORMATS = """\
  synthetic split      <dir>/split.yaml                      (xkd-synth)
  nuScenes             <dir>/v1.0-*/sample.json               (+ lidarseg)
  SemanticKITTI/KITTI  <dir>/sequences/<seq>/velodyne/*.bin   (odometry layout)
  KITTI 3D object      <dir>/{training,testing}/velodyne/*.bin + calib/ (+ image_2/, label_2/)
  PCD                  a .pcd file, or a folder of them         (rig=<rig file>, or rig.yaml beside)
  rosbag2              <dir>/metadata.yaml, or a .mcap / .db3 file
  nuScenes keyframe    <dir>/info.json                        (mmdetection3d export)
  RELLIS-3D frame      <dir>/transforms.yaml + camera_info.txt
  SemanticKITTI scans  <dir>/*.bin + *.label                  (a bare folder of scans)"""


def open_frames(path: str | Path, **options: Any) -> Sequence[Frame]:
    """The frames at `path`; `options` go to the reader (e.g. split="val", version="v1.0-trainval",
    sequences=["08"], lidar_topic="/points", rig="config/my.rig.yaml" for PCD files)."""
    path = Path(path)
    if (path / "split.yaml").is_file():
        from xkd_ros.data.synthetic import SyntheticDataset  # needs the `data` extra (trimesh, embreex)

        return SyntheticDataset(path, **options)
    if any(path.glob("v1.0-*/sample.json")):
        from xkd_ros.data.nuscenes import NuScenesDataset

        if "version" not in options:
            options["version"] = sorted(p.parent.name for p in path.glob("v1.0-*/sample.json"))[0]
        return NuScenesDataset(path, **options)
    if (path / "sequences").is_dir():
        from xkd_ros.data.semantickitti import SemanticKittiDataset

        return SemanticKittiDataset(path, **options)
    if any((path / folder / "velodyne").is_dir() for folder in ("training", "testing")) or (
        (path / "velodyne").is_dir() and (path / "calib").is_dir()
    ):
        from xkd_ros.data.kitti import KittiObjectDataset

        return KittiObjectDataset(path, **options)
    if (path / "metadata.yaml").is_file() or path.suffix in (".mcap", ".db3"):
        from xkd_ros.data.rosbag import RosbagDataset

        return RosbagDataset(path, **options)
    if (path / "info.json").is_file():
        from xkd_ros.data.nuscenes import load_keyframe

        return [load_keyframe(path, **options)]
    if (path / "transforms.yaml").is_file() and (path / "camera_info.txt").is_file():
        from xkd_ros.data.rellis3d import load_rellis3d_frame

        return [load_rellis3d_frame(path, **options)]
    if path.is_dir() and any(path.glob("*.bin")) and any(path.glob("*.label")):
        from xkd_ros.data.semantickitti import SemanticKittiDataset

        return SemanticKittiDataset(path, **options)
    if (path.suffix == ".pcd" and path.is_file()) or (path.is_dir() and any(path.glob("*.pcd"))):
        from xkd_ros.data.pcd import PcdDataset

        return PcdDataset(path, **options)
    what = "does not exist" if not path.exists() else "holds no data set xkd_ros reads"
    raise FileNotFoundError(f"{path}: {what}. Readable layouts:\n{FORMATS}")
