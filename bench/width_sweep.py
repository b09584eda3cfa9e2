"""The network's own cost (issue 13): per row of a width sweep, ONNX Runtime latency on the nuScenes keyframe
against test mIoU from the sweep's protocol, and the Pareto plot of the two.

Each row of the protocol file (config/protocol/width_sweep.yaml) is exported as xkd-export traces it and
run by the node's backend on the real nuScenes keyframe (34,688 points, six 1600x900 cameras), pre-processed
with the row's own config and fed with `NetworkInputs.feed` (the exported graph's inputs). Latency does not
depend on the weights, so a row is exported from the first seed's best.pt where the protocol has trained one
and from random weights of the row's config otherwise (latency is known before training ends). The rows'
sessions are timed in turns, one inference of each per round, so a machine whose load drifts (a shared one)
slows every row alike: read the ratios to the reference row first, the milliseconds name this machine only.
mIoU is the deployed output on the test split, mean +- std over the seeds finished so far, and the paired
difference to the reference row with its 95 % interval (bench/protocol.py's summary).

Run: .venv/bin/python bench/width_sweep.py [config/protocol/width_sweep.yaml] [--json out/width_sweep.json]
     [--plot docs/images/pareto_width.png]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime
from protocol import Protocol, Row, run_dir, summarise
from timing import write_json

from xkd_ros.data import load_keyframe
from xkd_ros.export import example_inputs
from xkd_ros.inference import create_backend
from xkd_ros.model import ModelConfig, build_model
from xkd_ros.model.checkpoint import model_from_checkpoint
from xkd_ros.model.export import export_onnx
from xkd_ros.preprocess import PreprocessConfig, prepare_frame
from xkd_ros.train.experiment import ExperimentConfig

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "test/data/nuscenes_demo"


def export_row(protocol: Protocol, row: Row, out: Path) -> dict[str, Any]:
    """`row`'s network as an ONNX file in `out`: its preprocess config, parameter count and which weights."""
    checkpoint = next(
        (path for seed in protocol.seeds if (path := run_dir(protocol, row, seed) / "best.pt").is_file()),
        None,
    )
    if checkpoint is not None:
        model, meta = model_from_checkpoint(checkpoint)
        preprocess, weights = PreprocessConfig.from_dict(meta["preprocess"]), str(checkpoint)
    else:  # the class count of ModelConfig's default: a head a few classes wider costs nothing measurable
        overrides = [item.format(root=protocol.data_root, seed=protocol.seeds[0]) for item in row.overrides]
        experiment = ExperimentConfig.load(ROOT / row.config, [*protocol.common, *overrides])
        model = build_model(ModelConfig.from_dict(experiment.model)).eval()
        preprocess, weights = PreprocessConfig.from_dict(experiment.preprocess), "random"
    path = export_onnx(model, example_inputs(preprocess), out / f"{row.name}.onnx")
    return {
        "path": path,
        "preprocess": preprocess,
        "weights": weights,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def time_rows(exports: dict[str, dict], threads: int, repeat: int) -> dict[str, dict[str, float]]:
    """Median and p90 ms per row of `repeat` rounds (each row once per round, after two warm-up rounds)."""
    frame = load_keyframe(DATA)
    runs = {}
    for name, export in exports.items():
        backend = create_backend("onnxruntime", export["path"], threads=threads)
        inputs = prepare_frame(frame, export["preprocess"]).feed(backend.input_names)
        runs[name] = (backend, inputs)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(repeat + 2):
        for name, (backend, inputs) in runs.items():
            start = time.perf_counter()
            backend.infer(inputs)
            if round_ >= 2:
                times[name].append((time.perf_counter() - start) * 1e3)
    points = len(frame.points)
    return {
        name: {
            "ms": statistics.median(values),
            "p90_ms": float(np.percentile(values, 90)),
            "us_per_point": 1e3 * statistics.median(values) / points,
            "points": points,
        }
        for name, values in times.items()
    }


def pareto(rows: dict[str, dict]) -> list[str]:
    """Rows whose seed-matched mIoU (`miou_matched`) no other row beats at no more latency (on the means:
    the noise is not resolved)."""
    scored = {name: row for name, row in rows.items() if row.get("miou_matched") is not None}
    front = []
    for name, row in scored.items():
        dominated = any(
            other["ms"] <= row["ms"]
            and other["miou_matched"] >= row["miou_matched"]
            and (other["ms"] < row["ms"] or other["miou_matched"] > row["miou_matched"])
            for key, other in scored.items()
            if key != name
        )
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda name: scored[name]["ms"])


def plot(rows: dict[str, dict], front: list[str], reference: str, title: str, path: Path) -> None:
    """Inference ms (x) against seed-matched test mIoU (y, the row's std over seeds as bars), the front
    joined; a row without a finished run as a triangle on the x axis. Drawn with OpenCV (matplotlib is not
    a dependency)."""
    scored = {name: row for name, row in rows.items() if row.get("miou_matched") is not None}
    width, height, left, right, top, bottom = 1000, 640, 90, 40, 60, 70
    image = np.full((height, width, 3), 255, np.uint8)
    font, black, grey = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0), (200, 200, 200)
    cv2.putText(image, title, (left, 35), font, 0.6, black, 1, cv2.LINE_AA)
    if not scored:
        cv2.putText(image, "no finished runs yet", (left, height // 2), font, 0.8, black, 2, cv2.LINE_AA)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
        return
    xs = [row["ms"] for row in rows.values()]
    lows = [100 * (row["miou_matched"] - (row["std"] or 0)) for row in scored.values()]
    highs = [100 * (row["miou_matched"] + (row["std"] or 0)) for row in scored.values()]
    x0, x1 = _nice_range(min(xs), max(xs), 0.15)
    y0, y1 = _nice_range(min(lows), max(highs), 0.1)

    def at(ms: float, miou: float) -> tuple[int, int]:
        x = left + (ms - x0) / (x1 - x0) * (width - left - right)
        y = height - bottom - (100 * miou - y0) / (y1 - y0) * (height - top - bottom)
        return round(x), round(y)

    for tick in _ticks(x0, x1):
        x, _ = at(tick, 0)
        cv2.line(image, (x, top), (x, height - bottom), grey, 1)
        cv2.putText(image, f"{tick:g}", (x - 12, height - bottom + 22), font, 0.5, black, 1, cv2.LINE_AA)
    for tick in _ticks(y0, y1):
        _, y = at(x0, tick / 100)
        cv2.line(image, (left, y), (width - right, y), grey, 1)
        cv2.putText(image, f"{tick:g}", (left - 45, y + 5), font, 0.5, black, 1, cv2.LINE_AA)
    cv2.rectangle(image, (left, top), (width - right, height - bottom), black, 1)
    cv2.putText(
        image,
        "ONNX Runtime inference, nuScenes keyframe (ms, this machine)",
        (left + 150, height - 20),
        font,
        0.55,
        black,
        1,
        cv2.LINE_AA,
    )
    label = np.full((30, 300, 3), 255, np.uint8)
    cv2.putText(label, "test mIoU (%), default's seeds", (5, 20), font, 0.55, black, 1, cv2.LINE_AA)
    image[top + 100 : top + 400, 15:45] = cv2.rotate(label, cv2.ROTATE_90_COUNTERCLOCKWISE)
    front_points = [at(scored[name]["ms"], scored[name]["miou_matched"]) for name in front]
    if len(front_points) > 1:
        cv2.polylines(image, [np.array(front_points, np.int32)], False, (60, 160, 60), 2, cv2.LINE_AA)
    for name, row in scored.items():
        x, y = at(row["ms"], row["miou_matched"])
        if row["std"] is not None:
            spread = row["std"]
            _, y_low = at(row["ms"], row["miou_matched"] - spread)
            _, y_high = at(row["ms"], row["miou_matched"] + spread)
            cv2.line(image, (x, y_low), (x, y_high), black, 1, cv2.LINE_AA)
            for end in (y_low, y_high):
                cv2.line(image, (x - 5, end), (x + 5, end), black, 1, cv2.LINE_AA)
        colour = (40, 40, 220) if name == reference else (60, 160, 60) if name in front else (150, 150, 150)
        cv2.circle(image, (x, y), 7, colour, -1, cv2.LINE_AA)
        text = f"{name} (n={row['seeds']})"
        cv2.putText(image, text, (x + 10, y - 10), font, 0.5, black, 1, cv2.LINE_AA)
    for i, (name, row) in enumerate(item for item in rows.items() if item[0] not in scored):
        x, y = at(row["ms"], y0 / 100)
        triangle = np.array([(x, y - 12), (x - 7, y), (x + 7, y)], np.int32)
        cv2.fillPoly(image, [triangle], (150, 150, 150), cv2.LINE_AA)
        text = f"{name}: no mIoU yet"
        cv2.putText(image, text, (x + 10, y - 16 - 18 * i), font, 0.45, black, 1, cv2.LINE_AA)
    legend = [((40, 40, 220), f"{reference} (reference)"), ((60, 160, 60), "Pareto front (on the means)")]
    for i, (colour, text) in enumerate(legend):
        y = top + 25 + 25 * i
        cv2.circle(image, (width - right - 290, y - 5), 7, colour, -1, cv2.LINE_AA)
        cv2.putText(image, text, (width - right - 275, y), font, 0.5, black, 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def _matched(deployed: dict, reference: dict, is_reference: bool) -> float | None:
    """The row's mIoU on the reference's seeds: the reference's mean plus the paired difference (the row's
    own mean when it has every seed the reference has). Rows with fewer seeds are not flattered or penalised
    by which seeds they happen to have."""
    if is_reference:
        return deployed.get("mean")
    paired = deployed.get("vs_reference")
    if not paired:
        return None
    return reference["heads"]["deployed"]["mean"] + paired["mean"]


def _delta(paired: dict | None) -> str:
    """A paired difference in mIoU points with its 95 % half-width (none from one seed)."""
    if not paired:
        return "-"
    interval = "" if paired["ci95"] is None else f" +- {100 * paired['ci95']:.1f}"
    return f"{100 * paired['mean']:+.1f}{interval} n={paired['n']}"


def _finite(values: dict | None) -> dict | None:
    """`values` with NaN (a std or interval of one seed) as None: JSON has no NaN."""
    if values is None:
        return None
    return {
        key: None if isinstance(value, float) and math.isnan(value) else value
        for key, value in values.items()
    }


def _cpu() -> str:
    """The processor's model name (Linux), else what Python knows of it."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def _nice_range(low: float, high: float, margin: float) -> tuple[float, float]:
    pad = max(high - low, abs(high) * 0.05, 1e-6) * margin
    return low - pad, high + pad


def _ticks(low: float, high: float) -> list[float]:
    step = 10 ** math.floor(math.log10((high - low) / 4))
    step *= next(factor for factor in (1, 2, 5, 10) if (high - low) / (step * factor) <= 8)
    return [step * k for k in range(math.ceil(low / step), math.floor(high / step) + 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("protocol", type=Path, nargs="?", default=ROOT / "config/protocol/width_sweep.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs/images/pareto_width.png")
    args = parser.parse_args(argv)
    try:
        protocol = Protocol.load(args.protocol)
    except (OSError, ValueError) as error:
        print(f"width_sweep: {error}", file=sys.stderr)
        return 2
    reference = protocol.reference or protocol.rows[0].name
    scores = summarise(protocol)["rows"]
    with tempfile.TemporaryDirectory() as folder:
        exports = {row.name: export_row(protocol, row, Path(folder)) for row in protocol.rows}
        timings = time_rows(exports, args.threads, args.repeat)
    rows: dict[str, dict] = {}
    for row in protocol.rows:
        heads = scores.get(row.name, {}).get("heads", {})
        deployed, lidar = heads.get("deployed", {}), heads.get("lidar", {})
        rows[row.name] = {
            "title": row.title,
            "set": list(row.overrides),
            "parameters": exports[row.name]["parameters"],
            "weights": exports[row.name]["weights"],
            **timings[row.name],
            "ms_ratio": timings[row.name]["ms"] / timings[reference]["ms"],
            "miou": deployed.get("mean"),
            "std": _finite(deployed).get("std"),
            "seeds": len(deployed.get("per_seed", {})),
            "vs_reference": _finite(deployed.get("vs_reference")),
            "miou_matched": _matched(deployed, scores.get(reference, {}), row.name == reference),
            "lidar_head_miou": lidar.get("mean"),  # the points no camera sees take this head
            "lidar_head_std": _finite(lidar).get("std"),
        }
    front = pareto(rows)
    results = {
        "machine": f"{_cpu()}, {os.cpu_count()} cores, {args.threads} threads, "
        f"onnxruntime {onnxruntime.__version__}",
        "protocol": str(args.protocol),
        "reference": reference,
        "repeat": args.repeat,
        "rows": rows,
        "pareto_front": front,
    }
    print(f"# {protocol.title}\n# {results['machine']}; nuScenes keyframe, median of {args.repeat} rounds")
    print(
        f"{'row':<12} {'params':>8} {'ms':>7} {'x ref':>6} {'us/pt':>6} {'mIoU':>12} {'vs ref (95 % CI)':>18}"
    )
    for name, row in rows.items():
        miou = "-" if row["miou"] is None else f"{100 * row['miou']:.1f}"
        miou += "" if row["std"] is None else f" +- {100 * row['std']:.1f}"
        delta = _delta(row["vs_reference"])
        mark = " *" if name in front else ""
        print(
            f"{name:<12} {row['parameters'] / 1e6:7.2f}M {row['ms']:7.1f} {row['ms_ratio']:6.2f} "
            f"{row['us_per_point']:6.2f} {miou:>12} {delta:>18}{mark}"
        )
    print("* on the Pareto front (means; differences inside their interval are not resolved)")
    plot(rows, front, reference, f"{protocol.name}: test mIoU against inference time", args.plot)
    print(f"plot: {args.plot}")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
