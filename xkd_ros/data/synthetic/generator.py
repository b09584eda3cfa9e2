"""Frames from the synthetic street: the LiDAR sweep, the camera images and their timing; and `xkd-synth`.

Frame `index` of a split is step `index % frames_per_scene` of scene `index // frames_per_scene`: each scene
is one drive, its frames `frame_interval_s` apart. Every random draw comes from a numpy Generator seeded by
(seed, split, scene) for the scene and (seed, split, scene, step) for a frame, so a frame does not depend on
which frames were generated before it, nor in which process: same seed and config, identical arrays.
"""

from __future__ import annotations

import argparse
import multiprocessing
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from xkd_ros.data.frame import Frame
from xkd_ros.data.synthetic import camera, lidar
from xkd_ros.data.synthetic.config import SyntheticConfig, load_config, parse_overrides
from xkd_ros.data.synthetic.dataset import write_frame, write_rig, write_split
from xkd_ros.data.synthetic.scene import CLASS_SET, Scene, build_scene
from xkd_ros.geometry import CameraCalibration, Rig, invert_transform, project_points


@dataclass(frozen=True, eq=False)
class SyntheticSample:
    """A generated frame and what only the simulator knows: each camera's per-pixel class id (255: sky),
    where each beam really hit (`surface`, world coordinates, (N, 3): the points without range noise) and
    the scene, for the true visibility of each point from each camera."""

    frame: Frame
    class_images: dict[str, np.ndarray]
    surface: np.ndarray
    scene: Scene

    def true_visibility(self, min_depth: float = 0.1) -> np.ndarray:
        """(M, N) bool, cameras in rig order: the point lands in the camera's image (projected with the
        motion-compensated rig, as `project_points` does, `min_depth` likewise) and the camera has a clear
        line of sight to the surface the beam hit. The ground truth an occlusion test is measured against
        (docs/geometry.md); it assumes deskewed points, the default."""
        frame = self.frame
        rig = frame.compensated_rig()
        visible = project_points(frame.xyz, rig, min_depth).mask
        for row, calibration in zip(visible, rig, strict=True):
            centre = (frame.pose @ invert_transform(calibration.T_cam_lidar))[:3, 3]
            index = np.flatnonzero(row)
            row[index] = camera.line_of_sight(self.scene, centre, self.surface[index])
        return visible

    def label_agreement(self, rig: Rig, occlusion_cell: int = 4, occlusion_tolerance: float = 0.3) -> float:
        """Share of the points the cameras see (occlusion-tested) whose label is the class of their pixel.

        The check of the LiDAR-camera geometry: near 1 with the rig that matches the images' timing
        (`frame.compensated_rig()`), lower with a rig that is off.
        """
        frame = self.frame
        projection = project_points(
            frame.xyz, rig, occlusion_cell=occlusion_cell, occlusion_tolerance=occlusion_tolerance
        )
        agree = total = 0
        for name in rig.names:
            index, uv, _ = projection.visible(name)
            classes = self.class_images[name]
            u = np.clip(np.rint(uv[:, 0]).astype(np.int64), 0, classes.shape[1] - 1)
            v = np.clip(np.rint(uv[:, 1]).astype(np.int64), 0, classes.shape[0] - 1)
            agree += int(np.count_nonzero(frame.labels[index] == classes[v, u]))
            total += len(index)
        return agree / max(total, 1)


def split_key(split: str) -> int:
    """A stable number per split name, so that train, val and test never share a scene."""
    return zlib.crc32(split.encode())


@dataclass(frozen=True, eq=False)
class SceneSensors:
    """One scene's sensors after domain randomisation: the drawn config (every range one value), its rig
    (what the scene's frames carry: the drawn mount height, the drawn intrinsics) and the dead beams."""

    config: SyntheticConfig
    rig: Rig
    calibrations: list[CameraCalibration]
    dead_beams: np.ndarray  # (beams,) bool


# The draws of domain randomisation get their own stream per scene, apart from the scene's and the frames'
# (whose fourth number is the step + 1 < 2**31): configs without randomisation make the same frames as before.
SENSOR_STREAM = 0x7FFFFFFF


class SyntheticGenerator:
    """Generates the frames of any split on demand; keeps the last scene, as frames come scene by scene."""

    def __init__(self, config: SyntheticConfig, seed: int) -> None:
        self.config, self.seed = config, int(seed)
        self.rig = config.rig()  # nominal: the middle of every range (rig.yaml); frames carry their scene's
        self.calibrations = [self.rig[camera.name] for camera in config.cameras]
        # Each camera fires when the spinning beam passes the middle of its view, as on nuScenes.
        self.trigger_s = {camera.name: config.lidar.time_at(camera.yaw_deg) for camera in config.cameras}
        self._scene_key: tuple[str, int] | None = None
        self._scene: Scene | None = None
        self._sensors: SceneSensors | None = None

    def locate(self, index: int) -> tuple[int, int]:
        """(scene, step) of frame `index`."""
        return divmod(int(index), self.config.sequence.frames_per_scene)

    def stem(self, index: int) -> str:
        """File name stem of frame `index`: s<scene>_<step>; the letter keeps YAML from reading a number."""
        scene_index, step = self.locate(index)
        return f"s{scene_index:03d}_{step:03d}"

    def _build(self, split: str, scene_index: int) -> None:
        key = (split, scene_index)
        if self._scene_key != key:
            draws = np.random.default_rng([self.seed, split_key(split), scene_index, SENSOR_STREAM])
            drawn = self.config.draw(draws)
            dead_beams = draws.random(drawn.lidar.beams) < drawn.lidar.beam_dropout
            rig = drawn.rig()
            sensors = SceneSensors(drawn, rig, [rig[c.name] for c in drawn.cameras], dead_beams)
            rng = np.random.default_rng([self.seed, split_key(split), scene_index])
            self._scene, self._sensors, self._scene_key = build_scene(drawn, rng), sensors, key

    def scene(self, split: str, scene_index: int) -> Scene:
        self._build(split, scene_index)
        return self._scene

    def sensors(self, split: str, scene_index: int) -> SceneSensors:
        """The scene's drawn sensors (domain randomisation; without it, the config's)."""
        self._build(split, scene_index)
        return self._sensors

    def sample(self, split: str, index: int) -> SyntheticSample:
        """Frame `index` of `split` with its class images."""
        scene_index, step = self.locate(index)
        scene, sensors = self.scene(split, scene_index), self.sensors(split, scene_index)
        config, rig = sensors.config, sensors.rig
        rng = np.random.default_rng([self.seed, split_key(split), scene_index, step + 1])
        stamp = step * config.sequence.frame_interval_s
        sweep = lidar.scan(scene, config.lidar, stamp, rng, sensors.dead_beams)
        image_stamps = {name: stamp + offset for name, offset in self.trigger_s.items()}
        image_poses = dict(
            zip(image_stamps, scene.trajectory.poses(list(image_stamps.values())), strict=True)
        )
        images, class_images = camera.render(
            scene, config.cameras, sensors.calibrations, list(image_poses.values()), rng
        )
        frame = Frame(
            points=sweep.points,
            channels=lidar.CHANNELS,
            rig=rig,
            images=dict(zip(rig.names, images, strict=True)),
            labels=sweep.labels,
            classes=CLASS_SET,
            stamp=stamp,
            image_stamps=image_stamps,
            pose=scene.trajectory.pose(stamp),
            image_poses=image_poses,
            name=f"{split}/{self.stem(index)}",
        )
        class_images = dict(zip(rig.names, class_images, strict=True))
        return SyntheticSample(frame, class_images, sweep.surface, scene)


# --- the command line: one process generates whole frames; workers each keep their own generator -------

_worker: tuple[SyntheticGenerator, Path] | None = None


def _start_worker(config: dict, seed: int, root: str) -> None:
    global _worker
    from xkd_ros.data.synthetic.config import from_dict

    _worker = (SyntheticGenerator(from_dict(config), seed), Path(root))


def _write_one(task: tuple[str, int]) -> str:
    generator, root = _worker
    split, index = task
    write_frame(root, split, generator.stem(index), generator.sample(split, index).frame)
    return generator.stem(index)


def generate(
    root: str | Path,
    config: SyntheticConfig,
    seed: int,
    counts: dict[str, int],
    workers: int = 1,
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, list[str]]:
    """Write `counts[split]` frames of each split under `root`, then split.yaml; returns the frame stems.
    `config_file` and `overrides`, the --config and --set the config was made from, are recorded so the
    command can be retold (the full config is recorded as well).

    split.yaml comes last, so that an interrupted run leaves no data set that looks complete.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_rig(root, config.rig())
    tasks = [(split, index) for split, count in counts.items() for index in range(count)]
    initargs = (config.as_dict(), int(seed), str(root))
    frames: dict[str, list[str]] = {split: [] for split in counts}
    with tqdm(total=len(tasks), desc="xkd-synth", unit="frame") as progress:
        if workers > 1:
            context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked Embree state
            with context.Pool(workers, _start_worker, initargs) as pool:
                stems = pool.imap(_write_one, tasks)
                for (split, _), stem in zip(tasks, stems, strict=True):
                    frames[split].append(stem)
                    progress.update()
        else:
            _start_worker(*initargs)
            for task in tasks:
                frames[task[0]].append(_write_one(task))
                progress.update()
    write_split(root, config, seed, frames, config_file, overrides)
    return frames


SPLITS = ("train", "val", "test")


def main(argv: list[str] | None = None) -> int:
    """xkd-synth: generate a synthetic camera-LiDAR data set (see docs/synthetic.md)."""
    parser = argparse.ArgumentParser(prog="xkd-synth", description=main.__doc__)
    parser.add_argument("--out", required=True, type=Path, help="folder of the data set")
    parser.add_argument("--train", type=int, default=0, help="number of training frames")
    parser.add_argument("--val", type=int, default=0, help="number of validation frames")
    parser.add_argument(
        "--test", type=int, default=0, help="number of test frames (scenes of their own, never for selection)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=None, help="YAML overlaid on config/synthetic.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one value after --config, e.g. lidar.azimuth_steps=540 (repeatable; values are YAML)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes (each builds its own scenes)")
    args = parser.parse_args(argv)
    counts = {split: getattr(args, split) for split in SPLITS}
    if any(count < 0 for count in counts.values()) or not any(counts.values()):
        parser.error("ask for at least one frame: --train N, --val M and/or --test K")
    try:
        config = load_config(args.config, parse_overrides(args.overrides))
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    counts = {split: count for split, count in counts.items() if count}
    frames = generate(args.out, config, args.seed, counts, max(1, args.workers), args.config, args.overrides)
    summary = ", ".join(f"{len(stems)} {split}" for split, stems in frames.items())
    print(f"{args.out}: {summary} frames (seed {args.seed})")
    return 0
