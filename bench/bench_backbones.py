"""Cost of the image backbones and of the frozen 2D teacher on this machine: each image encoder on six
240x136 images (PyTorch eager, the training cost, and ONNX Runtime, the deployed one), the whole default
model on the real nuScenes keyframe through ONNX Runtime for each backbone, and ESPNet Cityscapes per image.

Run: .venv/bin/python bench/bench_backbones.py [--threads 2] [--repeat 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import torch
from timing import median_ms, write_json

from xkd_ros.data import load_keyframe
from xkd_ros.model import IMAGE_BACKBONES, ModelConfig, build_model, export_onnx, load_backbone_weights
from xkd_ros.model.image_branch import ImageBranch
from xkd_ros.model.teachers import EspnetTeacher, default_espnet_path
from xkd_ros.preprocess import GRAPH_INPUT_NAMES, PreprocessConfig, prepare_frame

DATA = Path(__file__).resolve().parent.parent / "test/data/nuscenes_demo"


def session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def interleaved_ms(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median ms of each run, the runs taking turns (one warm-up each first), so a machine whose load
    changes during the benchmark slows them alike and their ratios hold."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frame = load_keyframe(DATA)
    prepared = prepare_frame(frame, PreprocessConfig())
    inputs = prepared.as_dict() | prepared.feed(GRAPH_INPUT_NAMES)
    images = torch.from_numpy(inputs["images"])
    results: dict[str, float] = {}
    runs: dict[str, Callable[[], object]] = {}
    folder = Path(tempfile.mkdtemp(prefix="bench_backbones"))
    for backbone in IMAGE_BACKBONES:
        model = build_model(ModelConfig(image_backbone=backbone)).eval()
        load_backbone_weights(model)
        branch: ImageBranch = model.image_branch
        results[f"{backbone}_encoder_parameters"] = sum(p.numel() for p in branch.encoder.parameters())
        path = folder / f"encoder_{backbone}.onnx"
        torch.onnx.export(branch.encoder, (images,), path, dynamo=True, verbose=False, opset_version=18)
        encoder = session(path, args.threads)
        path = export_onnx(
            model, {k: torch.from_numpy(v) for k, v in inputs.items()}, folder / f"{backbone}.onnx"
        )
        whole = session(path, args.threads)
        runs[f"{backbone}_encoder_torch_ms"] = torch.inference_mode()(lambda b=branch: b.encoder(images))
        runs[f"{backbone}_branch_torch_ms"] = torch.inference_mode()(lambda b=branch: b(images))
        feed = {encoder.get_inputs()[0].name: inputs["images"]}
        runs[f"{backbone}_encoder_onnxruntime_ms"] = lambda s=encoder, f=feed: s.run(None, f)
        feed = {i.name: inputs[i.name] for i in whole.get_inputs()}
        runs[f"{backbone}_model_onnxruntime_ms"] = lambda s=whole, f=feed: s.run(None, f)
    if default_espnet_path().is_file():
        image = cv2.cvtColor(cv2.imread(str(next(DATA.glob("*__CAM_FRONT__*.jpg")))), cv2.COLOR_BGR2RGB)
        for width, height in ((512, 256), (1024, 512)):
            teacher = EspnetTeacher(width=width, height=height, threads=args.threads)
            runs[f"espnet_{width}x{height}_ms"] = lambda t=teacher: t.probabilities(image)
    results |= interleaved_ms(runs, args.repeat)
    if default_espnet_path().is_file():
        originals = [frame.images[camera] for camera in frame.rig.names if camera in frame.images]
        teacher = EspnetTeacher(threads=args.threads)
        results["espnet_point_targets_keyframe_ms"] = median_ms(
            lambda: teacher.point_targets(originals, inputs["point_uv"], inputs["point_visible"]), 3
        )
    versions = f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
    print(
        f"# six 240x136 images, nuScenes keyframe ({len(frame.points)} points); {args.threads} threads; "
        f"{versions}; medians of {args.repeat}, taking turns"
    )
    for name, value in results.items():
        print(f"{name:<40} {value:10.1f}" if isinstance(value, float) else f"{name:<40} {value:10d}")
    write_json(args.json, {key: float(np.round(value, 2)) for key, value in results.items()})


if __name__ == "__main__":
    main()
