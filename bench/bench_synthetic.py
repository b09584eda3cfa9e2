"""Benchmark of the synthetic generator (xkd_ros.data.synthetic) with the default config/synthetic.yaml.

Run: `.venv/bin/python bench/bench_synthetic.py [--frames N] [--workers K] [--seed S] [--speed MPS]
[--json out.json] [--picture PNG]`.
Times one scene's frames in one process, split into scene build (mesh + Embree BVH, once per scene), LiDAR
sweep, camera rendering, the whole frame and writing its files; then `generate` (what xkd-synth runs) with
K worker processes. It also reports how well the points' labels match the rendered classes when projected
with the motion-compensated and with the static rig. With --picture it saves the first frame's picture
(xkd_ros.data.render.render_frame).
Figures go in docs/synthetic.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from timing import write_json

from xkd_ros.data.render import render_frame
from xkd_ros.data.synthetic import SyntheticGenerator, camera, lidar, load_config
from xkd_ros.data.synthetic.dataset import write_frame
from xkd_ros.data.synthetic.generator import generate


def timed(run) -> tuple[object, float]:
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="frames of one scene, timed in one process")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed", type=float, help="fixed ego speed (m/s) instead of the config's range")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--picture", type=Path, help="save a picture of the first frame here")
    args = parser.parse_args()

    config = load_config(overrides={"ego": {"speed_mps": [args.speed] * 2}} if args.speed else None)
    generator = SyntheticGenerator(config, args.seed)
    scene, build_s = timed(lambda: generator.scene("bench", 0))
    _, bvh_s = timed(lambda: scene.cast(np.zeros((1, 3)), np.array([[1.0, 0.0, 0.0]])))

    steps = {"lidar": [], "cameras": [], "frame": [], "write": []}
    points, agreement = [], {"compensated": [], "static": []}
    with tempfile.TemporaryDirectory() as folder:
        for index in range(min(args.frames, config.sequence.frames_per_scene)):
            stamp = index * config.sequence.frame_interval_s
            rng = np.random.default_rng(index)
            start = time.perf_counter()
            lidar.scan(scene, config.lidar, stamp, rng)
            steps["lidar"].append(time.perf_counter() - start)
            poses = scene.trajectory.poses([stamp + generator.trigger_s[c.name] for c in config.cameras])
            start = time.perf_counter()
            camera.render(scene, config.cameras, generator.calibrations, list(poses), rng)
            steps["cameras"].append(time.perf_counter() - start)
            start = time.perf_counter()
            sample = generator.sample("bench", index)
            steps["frame"].append(time.perf_counter() - start)
            frame = sample.frame
            agreement["compensated"].append(sample.label_agreement(frame.compensated_rig()))
            agreement["static"].append(sample.label_agreement(frame.rig))
            start = time.perf_counter()
            write_frame(Path(folder), "bench", f"{index:03d}", frame)
            steps["write"].append(time.perf_counter() - start)
            points.append(len(frame.points))
            if index == 0 and args.picture:
                args.picture.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(args.picture), render_frame(frame), [cv2.IMWRITE_PNG_COMPRESSION, 9])

        count = config.sequence.frames_per_scene  # one scene: each worker builds it once
        _, total_s = timed(
            lambda: generate(Path(folder) / "set", config, args.seed, {"train": count}, args.workers)
        )

    cameras = config.cameras
    results = {
        "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
        "config": f"{len(cameras)} cameras {cameras[0].width}x{cameras[0].height}, "
        f"{config.lidar.beams}x{config.lidar.azimuth_steps} LiDAR",
        "scene_faces": scene.num_faces,
        "scene_build_ms": round(build_s * 1e3, 1),
        "bvh_build_ms": round(bvh_s * 1e3, 1),
        "points_per_frame": int(statistics.median(points)),
        **{f"{name}_ms": round(statistics.median(values) * 1e3, 1) for name, values in steps.items()},
        **{f"label_agreement_{rig}_rig": round(statistics.median(v), 4) for rig, v in agreement.items()},
        "frames_per_s_one_process": round(1 / statistics.median(np.add(steps["frame"], steps["write"])), 2),
        f"frames_per_s_generate_{args.workers}_workers": round(count / total_s, 2),
    }
    for key, value in results.items():
        print(f"{key:32s} {value}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
