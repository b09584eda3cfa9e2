"""Benchmark of the occlusion tests of project_points: precision and recall of "visible", road dropped, time.

Run: `.venv/bin/python bench/bench_visibility.py [--frames N] [--seed S] [--repeat R] [--json out.json]`.

- Synthetic rigs (config/synthetic_kitti.yaml, config/synthetic.yaml, config/synthetic_roof128.yaml): N frames
  of N scenes each (default 4), projected with the motion-compensated rig. Precision and recall of "visible"
  over the points inside the images, against `SyntheticSample.true_visibility()`, for no test, the cell test
  (8 px, 0.5 m: the pre-processing defaults before issue 11) and the footprint test (0.5 m), pooled over the
  frames, and the footprint test's precision per frame. Also the share of the road, marking, sidewalk and
  grass points 10-40 m away (inside an image) that each test drops, and that are really hidden.
- Real frames (test/data): the nuScenes keyframe (no labels: ground is what lies within 0.2 m of one plane
  fitted to the scan, `plane_ground`), RELLIS-3D 000104 (ground by label) and the SemanticKITTI HDL-64E scan
  in image_2 of KITTI odometry sequence 00's calibration (ground by label): share of the ground points
  10-40 m away inside an image that each test drops.
- Time of project_points on the nuScenes keyframe (34,688 points, six 1600x900 cameras), each test, median
  of R runs in the same process.
Figures go in docs/geometry.md.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
from timing import median_ms, write_json

from xkd_ros.classes import load_class_set
from xkd_ros.data import load_keyframe, load_rellis3d_frame
from xkd_ros.data.synthetic import SyntheticGenerator, load_config
from xkd_ros.data.visibility import (
    RELLIS3D_GROUND,
    SEMANTICKITTI_GROUND,
    SYNTHETIC_GROUND,
    Scores,
    compare,
    ground_dropped,
    kitti_odometry_scan,
    plane_ground,
)
from xkd_ros.geometry import project_points

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "test" / "data"
RIGS = {
    "KITTI-like (64 beams, image_2)": "synthetic_kitti.yaml",
    "nuScenes-like (32 beams, 6 cameras)": "synthetic.yaml",
    "roof 128 beams, 4 bumper cameras": "synthetic_roof128.yaml",
}
TESTS = ("none", "cell", "footprint")


def synthetic(frames: int, seed: int) -> dict:
    results = {}
    for name, config_file in RIGS.items():
        config = load_config(REPO / "config" / config_file)
        generator = SyntheticGenerator(config, seed)
        kept_total, hit_total, ground_drop = (dict.fromkeys(TESTS, 0) for _ in range(3))
        truth_total = ground_total = ground_hidden = 0
        per_frame = []
        ground_ids = [load_class_set("synthetic").index(c) for c in SYNTHETIC_GROUND]
        for k in range(frames):
            sample = generator.sample("val", k * config.sequence.frames_per_scene)
            frame = sample.frame
            truth = sample.true_visibility()
            kept = compare(frame.xyz, frame.compensated_rig())
            inside = kept["none"]
            truth_total += int(np.count_nonzero(truth & inside))
            distance = np.hypot(frame.xyz[:, 0], frame.xyz[:, 1])
            ground = inside & (np.isin(frame.labels, ground_ids) & (distance >= 10) & (distance <= 40))[None]
            ground_total += int(np.count_nonzero(ground))
            ground_hidden += int(np.count_nonzero(ground & ~truth))
            for test in TESTS:
                mask = kept[test] & inside
                kept_total[test] += int(np.count_nonzero(mask))
                hit_total[test] += int(np.count_nonzero(mask & truth))
                ground_drop[test] += int(np.count_nonzero(ground & ~kept[test]))
            per_frame.append(round(Scores.of(kept["footprint"], truth, inside).precision, 4))
        rig = {
            test: {
                "precision": round(hit_total[test] / max(kept_total[test], 1), 4),
                "recall": round(hit_total[test] / max(truth_total, 1), 4),
                "ground_dropped": round(ground_drop[test] / max(ground_total, 1), 4),
            }
            for test in TESTS
        }
        rig["ground_truly_hidden"] = round(ground_hidden / max(ground_total, 1), 4)
        rig["footprint_precision_per_frame"] = per_frame
        results[name] = rig
    return results


def real() -> dict:
    frames = {}
    nuscenes = load_keyframe(DATA / "nuscenes_demo")
    frames["nuScenes keyframe (plane)"] = (
        nuscenes.xyz,
        nuscenes.compensated_rig(),
        plane_ground(nuscenes.xyz),
    )
    rellis = load_rellis3d_frame(DATA / "rellis3d_000104")
    names = load_class_set("rellis3d").names
    valid = np.any(rellis.xyz != 0, axis=1)  # all-zero points are the Ouster's "no return"
    ground = np.isin(rellis.labels, [names.index(c) for c in RELLIS3D_GROUND])
    frames["RELLIS-3D 000104 (labels)"] = (rellis.xyz[valid], rellis.rig, ground[valid])
    points, raw, rig = kitti_odometry_scan(
        DATA / "semantickitti_spvnas_000000" / "000000.bin",
        DATA / "semantickitti_spvnas_000000" / "000000.label",
        DATA / "kitti_odometry_00" / "calib.txt",
        (1241, 376),
    )
    frames["SemanticKITTI in KITTI 00 image_2 (labels)"] = (
        points[:, :3],
        rig,
        np.isin(raw, SEMANTICKITTI_GROUND),
    )
    results = {}
    for name, (xyz, rig, ground) in frames.items():
        kept = compare(xyz, rig)
        distance = np.hypot(xyz[:, 0], xyz[:, 1])
        scored = kept["none"] & (ground & (distance >= 10) & (distance <= 40))[None]
        results[name] = {"ground_points": int(np.count_nonzero(scored))} | {
            test: round(ground_dropped(xyz, ground, kept["none"], kept[test]), 4) for test in TESTS[1:]
        }
    return results


def timing(repeat: int) -> dict:
    frame = load_keyframe(DATA / "nuscenes_demo")
    points, rig = frame.points, frame.compensated_rig()
    runs = {
        "none": lambda: project_points(points, rig),
        "cell": lambda: project_points(points, rig, occlusion_cell=8),
        "footprint": lambda: project_points(points, rig, occlusion="footprint"),
    }
    return {test: round(median_ms(run, repeat), 2) for test, run in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4, help="frames per synthetic rig, one per scene")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    results = {"synthetic": synthetic(args.frames, args.seed), "real": real(), "ms": timing(args.repeat)}
    print(f"Synthetic rigs, {args.frames} frames each (seed {args.seed}): precision / recall of 'visible'")
    print(
        "| rig | no test | cell 8 px, 0.5 m | footprint | road dropped: cell, footprint (truly hidden) | "
        "footprint precision per frame |"
    )
    print("|---|---|---|---|---|---|")
    for name, rig in results["synthetic"].items():
        cells = [f"{rig[t]['precision']:.3f} / {rig[t]['recall']:.3f}" for t in TESTS]
        print(
            f"| {name} | {' | '.join(cells)} | {rig['cell']['ground_dropped']:.1%}, "
            f"{rig['footprint']['ground_dropped']:.1%} ({rig['ground_truly_hidden']:.1%}) | "
            f"{', '.join(f'{p:.3f}' for p in rig['footprint_precision_per_frame'])} |"
        )
    print("\nReal frames: ground points 10-40 m inside an image that each test drops")
    print("| frame | ground points | cell 8 px, 0.5 m | footprint |")
    print("|---|---:|---:|---:|")
    for name, row in results["real"].items():
        print(f"| {name} | {row['ground_points']} | {row['cell']:.1%} | {row['footprint']:.1%} |")
    ms = results["ms"]
    print(
        f"\nproject_points on the nuScenes keyframe (ms, median of {args.repeat}): no test {ms['none']}, "
        f"cell {ms['cell']}, footprint {ms['footprint']}"
    )
    environment = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
    }
    print(environment)
    write_json(args.json, {"results": results, "environment": environment, "frames": args.frames})


if __name__ == "__main__":
    main()
