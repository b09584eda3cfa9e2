"""Inference latency of one rig-agnostic model over the cameras it is given, on the real nuScenes keyframe
(34,688 points, 32 beams, six 1600x900 cameras): M = 0 (LiDAR-only), 1 (CAM_FRONT) and 6 cameras, in one run,
ONNX Runtime on the CPU; the three interleaved run after run (a shared machine's load falls on all three
alike), median of N runs each after a warm-up.

Run: .venv/bin/python bench/bench_rig_latency.py [--model MODEL.onnx]
Without --model it exports the default network (ModelConfig()) with untrained weights: the latency of the
architecture the shipped model has, whatever its weights.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime
from timing import write_json

from xkd_ros.data import load_keyframe
from xkd_ros.inference import create_backend
from xkd_ros.inference.metadata import read_metadata
from xkd_ros.preprocess import PreprocessConfig, prepare

DATA = Path(__file__).resolve().parent.parent / "test/data/nuscenes_demo"
CAMERA_SETS = {0: (), 1: ("CAM_FRONT",), 6: None}  # None: every camera of the rig


def default_model(folder: Path) -> Path:
    """The default network and pre-processing, untrained, exported as xkd-export does."""
    from xkd_ros.export import export_checkpoint
    from xkd_ros.model import ModelConfig, build_model
    from xkd_ros.model.checkpoint import save_checkpoint

    config = ModelConfig(num_classes=14)
    state = {
        "model_config": config.to_dict(),
        "preprocess": PreprocessConfig().to_dict(),
        "classes": "synthetic",
        "model": build_model(config).state_dict(),
    }
    return export_checkpoint(save_checkpoint(state, folder / "default.pt"), folder / "default.onnx")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an .onnx file written by xkd-export (default: see above)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model = args.model or default_model(Path(folder))
        frame = load_keyframe(DATA)
        rig = frame.compensated_rig()
        preprocess = PreprocessConfig.from_dict(read_metadata(model)["preprocess"])
        backend = create_backend("onnxruntime", model, threads=args.threads)
        feeds = {}
        for cameras, names in CAMERA_SETS.items():
            images = frame.images if names is None else {name: frame.images[name] for name in names}
            inputs = prepare(frame.points, frame.channels, images, rig, preprocess)
            assert len(inputs.cameras) == cameras, inputs.cameras
            feeds[f"inference_m{cameras}_ms"] = inputs.feed(backend.input_names)
            backend.infer(feeds[f"inference_m{cameras}_ms"])  # warm-up
        times: dict[str, list[float]] = {name: [] for name in feeds}
        for _ in range(args.repeat):
            for name, feed in feeds.items():
                start = time.perf_counter()
                backend.infer(feed)
                times[name].append((time.perf_counter() - start) * 1e3)
        results = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"# nuScenes keyframe: {len(frame.points)} points, {rig.lidar.beams} beams; {model.name}; "
        f"{args.threads} threads; onnxruntime {onnxruntime.__version__}; median of {args.repeat}"
    )
    for name, value in results.items():
        print(f"{name:<24} {value:8.1f} ms")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
