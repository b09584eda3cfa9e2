"""How far the LiDAR alone separates the synthetic classes: a per-point Bayes classifier on two features.

Features per point: height above the road (z + the rig's mount height) and log intensity (over the
intensity scale). The classifier is the joint histogram of the two (24 x 64 bins) per class, fitted on
`--train` frames of split "train" and scored on `--test` frames of split "test" (other scenes): the best any
per-point rule on these two features can do, up to binning. Neighbourhoods and shapes, which a network also
sees, are left out, so this is a lower bound of what the LiDAR tells; it is meant to compare regimes
(config/synthetic.yaml, where cameras are needed by design, against config/synthetic_neutral.yaml).

    .venv/bin/python bench/synthetic_separability.py [--config config/synthetic_neutral.yaml]
        [--set lidar.azimuth_steps=540 ...] [--train 4] [--test 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from xkd_ros.classes import load_class_set
from xkd_ros.data.synthetic import SyntheticGenerator, load_config
from xkd_ros.data.synthetic.config import parse_overrides

BINS = (24, 64)  # height (0.5 m), log intensity (0.07: a third of the neutral bands' step)
HEIGHT_M = (-0.5, 12.0)
LOG_INTENSITY = (np.log(0.01), 0.0)
CHEAP = ["camera.width=32", "camera.height=18", "camera.shadows=false", "sequence.frames_per_scene=1"]


def features(frame) -> np.ndarray:
    """(N, 2) bin indices of height above the road and log intensity."""
    height = frame.channel("z") + frame.rig.lidar.mount_height
    intensity = np.log(np.maximum(frame.channel("intensity") / frame.rig.lidar.intensity_scale, 0.01))
    binned = []
    for value, (low, high), bins in zip((height, intensity), (HEIGHT_M, LOG_INTENSITY), BINS, strict=True):
        binned.append(np.clip(((value - low) / (high - low) * bins).astype(np.int64), 0, bins - 1))
    return np.stack(binned, axis=1)


def separability(config, seed: int, train: int, test: int) -> dict:
    """Per-point accuracy, mIoU and per-class IoU of the histogram classifier on the test frames."""
    classes = load_class_set("synthetic").names
    generator = SyntheticGenerator(config, seed)
    counts = np.ones((len(classes), *BINS))  # add-one smoothing
    for index in range(train):
        frame = generator.sample("train", index).frame
        cells = features(frame)
        np.add.at(counts, (frame.labels, cells[:, 0], cells[:, 1]), 1)
    likelihood = counts / counts.sum(axis=(1, 2), keepdims=True)
    prior = counts.sum(axis=(1, 2)) / counts.sum()
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for index in range(test):
        frame = generator.sample("test", index).frame
        cells = features(frame)
        scores = np.log(likelihood[:, cells[:, 0], cells[:, 1]]) + np.log(prior)[:, None]
        np.add.at(confusion, (frame.labels, scores.argmax(axis=0)), 1)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - np.diag(confusion)
    iou = np.diag(confusion) / np.maximum(union, 1)
    present = confusion.sum(axis=1) > 0
    return {
        "accuracy": float(np.trace(confusion) / confusion.sum()),
        "miou": float(iou[present].mean()),
        "iou": {
            name: round(float(value), 3) for name, value, p in zip(classes, iou, present, strict=True) if p
        },
        "points": int(confusion.sum()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=4, help="frames of split train to fit on")
    parser.add_argument("--test", type=int, default=4, help="frames of split test to score")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    config = load_config(args.config, parse_overrides([*CHEAP, *args.overrides]))
    result = separability(config, args.seed, args.train, args.test)
    result.update(
        config=str(args.config or "config/synthetic.yaml"), overrides=args.overrides, seed=args.seed
    )
    print(f"{result['config']}: accuracy {result['accuracy']:.3f}, mIoU {result['miou']:.3f}")
    print("  " + ", ".join(f"{name} {value:.2f}" for name, value in result["iou"].items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
