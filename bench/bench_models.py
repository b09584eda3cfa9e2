"""Exported models side by side on the same inputs, in one process: ONNX Runtime inference (graph fed with
`NetworkInputs.feed`, compact or dense as each graph asks) on the nuScenes keyframe (34,688 points, six
1600x900 cameras) and on the 128-beam-size scan of bench_node_path (262,144 points), the models interleaved
run after run so a shared machine's load falls on all alike; median and p90, the ratio to the first model and
the share of labels that agree with it.

Run: .venv/bin/python bench/bench_models.py BEFORE.onnx AFTER.onnx [...] [--repeat 20] [--json FILE]
e.g. the graph before issue 13 (`git show 8aa9d85:models/xkd_synthetic.onnx > out/bench/before.onnx`)
against models/xkd_synthetic.onnx and its int8 model.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import onnxruntime
from bench_node_path import scan_of_size
from timing import write_json

from xkd_ros.data import load_keyframe
from xkd_ros.memory import keep_freed_memory
from xkd_ros.pipeline import Segmenter
from xkd_ros.preprocess import prepare

REPO = Path(__file__).resolve().parent.parent


def session(path: Path, threads: int, spinning: bool) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+", help="exported .onnx; the first is the reference")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-spinning", action="store_true", help="ONNX Runtime's threads do not spin")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    keep_freed_memory()
    missing = [str(path) for path in args.models if not path.is_file()]
    if missing:
        parser.error(f"no such model: {', '.join(missing)}")
    frame = load_keyframe(REPO / "test/data/nuscenes_demo")
    configs = {path: Segmenter.from_model(path).preprocess for path in args.models}
    preprocess = configs[args.models[0]]
    different = [str(path) for path, config in configs.items() if config != preprocess]
    if different:
        parser.error(f"{', '.join(different)}: another pre-processing than {args.models[0]}'s")
    rig = frame.compensated_rig()
    scans = {
        "nuscenes_34688": (frame.points, frame.channels),
        "beams128_262144": scan_of_size(frame, 262_144),
    }
    sessions = {str(path): session(path, args.threads, not args.no_spinning) for path in args.models}
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.node()}",
        "onnxruntime": onnxruntime.__version__,
        "threads": args.threads,
        "spinning": not args.no_spinning,
    }
    for scan, (points, channels) in scans.items():
        inputs = prepare(points, channels, frame.images, rig, preprocess)
        feeds = {name: inputs.feed([i.name for i in s.get_inputs()]) for name, s in sessions.items()}
        labels = {name: s.run(["label"], feeds[name])[0] for name, s in sessions.items()}  # warm-up too
        times: dict[str, list[float]] = {name: [] for name in sessions}
        repeat = max(3, args.repeat // 4) if len(points) > 100_000 else args.repeat
        for _ in range(repeat):
            for name, s in sessions.items():
                start = time.perf_counter()
                s.run(None, feeds[name])
                times[name].append(1e3 * (time.perf_counter() - start))
        reference = next(iter(sessions))
        rows = {}
        for name in sessions:
            median = float(np.median(times[name]))
            rows[name] = {
                "median_ms": median,
                "p90_ms": float(np.percentile(times[name], 90)),
                "ratio": median / float(np.median(times[reference])),
                "labels_agree": float((labels[name] == labels[reference]).mean()),
            }
        results[scan] = rows
        print(f"## {scan} ({len(points)} points, {len(inputs.cameras)} cameras), median of {repeat}")
        for name, row in rows.items():
            print(
                f"{row['median_ms']:8.1f} ms  p90 {row['p90_ms']:8.1f}  ratio {row['ratio']:.2f}  "
                f"labels agree {100 * row['labels_agree']:.1f} %  {name}"
            )
    write_json(args.json, results)


if __name__ == "__main__":
    main()
