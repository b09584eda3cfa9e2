"""The on-disk form of a synthetic data set, and `SyntheticDataset`, its lazy reader.

Layout (docs/synthetic.md)::

    <root>/split.yaml                   format, version, class set, seed, config, frame stems per split
    <root>/rig.yaml                     the static camera calibration (Rig.save)
    <root>/<split>/<stem>.npz           points, channels, labels, stamps, poses, camera names, frame name, rig
    <root>/<split>/<stem>/<CAMERA>.png  RGB images, lossless

A stem is s<scene>_<step>, e.g. s002_013: step 13 of the drive through scene 2.

Images are PNG: lossless, so a frame reads back bit-exact, and JPEG's 8x8-block artefacts, which line up with
the class edges the network is asked to find, never enter the training data.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import overload

import cv2
import numpy as np
import yaml

from xkd_ros.data.frame import Frame
from xkd_ros.geometry import Rig

FORMAT = "xkd-synthetic"
FORMAT_VERSION = 2  # 2: each .npz carries its frame's rig (domain randomisation); 1: rig.yaml for all
READABLE_VERSIONS = (1, 2)
SPLIT_FILE, RIG_FILE = "split.yaml", "rig.yaml"
NPZ_KEYS = (
    "points",
    "channels",
    "labels",
    "classes",
    "stamp",
    "pose",
    "cameras",
    "image_stamps",
    "image_poses",
    "name",
)


def frame_path(root: Path, split: str, stem: str) -> Path:
    return root / split / f"{stem}.npz"


def image_path(root: Path, split: str, stem: str, camera: str) -> Path:
    return root / split / stem / f"{camera}.png"


def write_rig(root: Path, rig: Rig) -> None:
    rig.save(root / RIG_FILE, comment="Static calibration of the synthetic rig (xkd_ros.data.synthetic).")


def write_frame(root: Path, split: str, stem: str, frame: Frame) -> None:
    """The frame's arrays as one .npz and each image as a PNG."""
    path = frame_path(root, split, stem)
    (path.parent / stem).mkdir(parents=True, exist_ok=True)
    cameras = list(frame.images)
    np.savez_compressed(
        path,
        points=frame.points,
        channels=np.array(frame.channels),
        labels=frame.labels,
        classes=np.array(frame.classes),
        stamp=np.float64(frame.stamp),
        pose=frame.pose,
        cameras=np.array(cameras),
        image_stamps=np.array([frame.image_stamps[camera] for camera in cameras], dtype=np.float64),
        image_poses=np.array([frame.image_poses[camera] for camera in cameras], dtype=np.float64),
        name=np.array(frame.name),
        rig=np.array(yaml.safe_dump(frame.rig.to_dict(), sort_keys=False)),
    )
    for camera, rgb in frame.images.items():
        target = image_path(root, split, stem, camera)
        if not cv2.imwrite(
            str(target), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3]
        ):
            raise OSError(f"{target}: could not write the image")


def write_split(
    root: Path,
    config: object,
    seed: int,
    frames: dict[str, list[str]],
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> None:
    """split.yaml: what a reader needs to trust the folder; `config` is the SyntheticConfig used, loaded
    from `config_file` (xkd-synth --config; None: config/synthetic.yaml alone) and `overrides` (--set)."""
    content = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "classes": "synthetic",
        "seed": int(seed),
        "rig": RIG_FILE,
        "splits": {split: list(stems) for split, stems in frames.items()},
        "config": config.as_dict(),
    }
    if config_file is not None:
        content["config_file"] = str(config_file)
    if overrides:
        content["overrides"] = [str(item) for item in overrides]
    header = "# Synthetic camera-LiDAR data set written by xkd-synth (docs/synthetic.md).\n"
    (root / SPLIT_FILE).write_text(header + yaml.safe_dump(content, sort_keys=False, default_flow_style=None))


def read_split(root: Path) -> dict:
    """split.yaml, checked; errors name the file."""
    path = root / SPLIT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (xkd-synth writes it last: is the data set complete?)")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} split file")
    if content.get("version") not in READABLE_VERSIONS:
        raise ValueError(
            f"{path}: version {content.get('version')!r}, this reader reads {list(READABLE_VERSIONS)}"
        )
    splits = content.get("splits")
    if not isinstance(splits, dict) or not all(isinstance(stems, list) for stems in splits.values()):
        raise ValueError(f"{path}: splits: expected a mapping of split name to a list of frame stems")
    return content


class SyntheticDataset(Sequence[Frame]):
    """The frames of one split, read from disk when indexed (nothing but split.yaml and rig.yaml up front)."""

    def __init__(self, root: str | Path, split: str = "train") -> None:
        self.root, self.split = Path(root), split
        content = read_split(self.root)
        if split not in content["splits"]:
            raise ValueError(
                f"{self.root / SPLIT_FILE}: no split {split!r} (has {sorted(content['splits'])})"
            )
        self.stems: list[str] = [str(stem) for stem in content["splits"][split]]
        self.classes: str = str(content["classes"])
        self.seed: int = int(content["seed"])
        self.config: dict = content.get("config", {})
        rig_file = self.root / str(content.get("rig", RIG_FILE))
        if not rig_file.is_file():
            raise FileNotFoundError(f"{rig_file}: missing")
        self.rig = Rig.load(rig_file)

    def __len__(self) -> int:
        return len(self.stems)

    @overload
    def __getitem__(self, index: int) -> Frame: ...

    @overload
    def __getitem__(self, index: slice) -> list[Frame]: ...

    def __getitem__(self, index: int | slice) -> Frame | list[Frame]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.load(self.stems[index])

    def load(self, stem: str) -> Frame:
        """One frame by its stem; a missing or malformed file raises an error that names it."""
        path = frame_path(self.root, self.split, stem)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing")
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = [key for key in NPZ_KEYS if key not in npz.files]
                if missing:
                    raise ValueError(f"missing arrays {missing}")
                arrays = {key: npz[key] for key in NPZ_KEYS}
                rig_text = str(npz["rig"]) if "rig" in npz.files else None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
            raise ValueError(f"{path}: not a readable frame: {error}") from None
        cameras = [str(camera) for camera in arrays["cameras"]]
        if len(arrays["image_stamps"]) != len(cameras) or arrays["image_poses"].shape != (len(cameras), 4, 4):
            raise ValueError(f"{path}: image_stamps / image_poses do not match cameras {cameras}")
        images = {
            camera: self.read_image(image_path(self.root, self.split, stem, camera)) for camera in cameras
        }
        try:
            rig = self.rig if rig_text is None else Rig.from_dict(yaml.safe_load(rig_text), "rig")
            return Frame(
                points=arrays["points"],
                channels=tuple(str(channel) for channel in arrays["channels"]),
                rig=rig,
                images=images,
                labels=arrays["labels"],
                classes=str(arrays["classes"]),
                stamp=float(arrays["stamp"]),
                image_stamps=dict(zip(cameras, arrays["image_stamps"].tolist(), strict=True)),
                pose=arrays["pose"],
                image_poses=dict(zip(cameras, arrays["image_poses"], strict=True)),
                name=str(arrays["name"]),
            )
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    @staticmethod
    def read_image(path: Path) -> np.ndarray:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing")
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{path}: not a readable image")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
