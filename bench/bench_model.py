"""Latency of the network on the real nuScenes keyframe (34,688 points, 32 beams, six 1600x900 cameras):
pre-processing (the shared path) and inference per backend, median of N runs after a warm-up.

Run: .venv/bin/python bench/bench_model.py --model models/xkd_synthetic.onnx [--checkpoint best.pt]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnxruntime
from timing import median_ms, write_json

from xkd_ros.data import load_keyframe
from xkd_ros.inference import create_backend
from xkd_ros.inference.metadata import read_metadata
from xkd_ros.preprocess import PreprocessConfig, prepare_frame

DATA = Path(__file__).resolve().parent.parent / "test/data/nuscenes_demo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an .onnx file written by xkd-export")
    parser.add_argument("--checkpoint", type=Path, help="also time the torch backend on this checkpoint")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    frame = load_keyframe(DATA)
    preprocess = PreprocessConfig.from_dict(read_metadata(args.model)["preprocess"])
    prepared = prepare_frame(frame, preprocess)
    results = {"preprocess_ms": median_ms(lambda: prepare_frame(frame, preprocess), args.repeat)}
    backends = {"onnxruntime": args.model} | ({"torch": args.checkpoint} if args.checkpoint else {})
    for kind, path in backends.items():
        backend = create_backend(kind, path, threads=args.threads)
        inputs = prepared.feed(backend.input_names)
        results[f"{kind}_ms"] = median_ms(lambda b=backend, i=inputs: b.infer(i), args.repeat)
    results["total_onnxruntime_ms"] = results["preprocess_ms"] + results["onnxruntime_ms"]
    print(f"# nuScenes keyframe: {len(frame.points)} points, 6 cameras; {args.threads} threads; "
          f"onnxruntime {onnxruntime.__version__}; median of {args.repeat}")  # fmt: skip
    for name, value in results.items():
        print(f"{name:<24} {value:8.1f} ms")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
