"""int8 vs fp32 inference in one process, on the same inputs: the real nuScenes keyframe (34,688 points, six
1600x900 cameras) or the first frame of --data (e.g. a 128-beam synthetic split), pre-processed once as the
float model says. Median of N runs, the runs of the models
interleaved (a busy machine slows both alike), the int8/fp32 ratio, and the share of points whose label the
int8 model gives as the float one does. --profile adds ONNX Runtime's profiler: kernel time per op type,
per run, warm-up run left out. --fp16-probe: whether ONNX Runtime's CPU provider has float16 kernels for
Conv, Gemm and MatMul (one-op graphs of this network's sizes): which kernels ran, and their time vs float32.

Run: .venv/bin/python bench/bench_quantize.py --model models/xkd_synthetic.onnx \
         --int8 out/quantize/xkd_synthetic.int8.onnx [--int8 other.onnx] [--profile] [--json out.json]
     [--data out/test/synth_roof128 --split test]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
from timing import write_json

from xkd_ros.data import load_keyframe, open_frames
from xkd_ros.pipeline import Segmenter
from xkd_ros.preprocess import prepare_frame

DATA = Path(__file__).resolve().parent.parent / "test/data/nuscenes_demo"


def session(path: Path, threads: int, profile_prefix: str | None = None) -> onnxruntime.InferenceSession:
    """A CPU session as the node's backend makes it (all graph optimisations), optionally profiling."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def op_times(path: Path, feed: dict[str, np.ndarray], threads: int, runs: int) -> dict[str, float]:
    """Kernel ms per op type per run (ONNX Runtime's profiler, after graph fusion: FusedConv, QLinearConv,
    QGemm... are what ran), the first (warm-up) run left out; sorted, largest first."""
    with tempfile.TemporaryDirectory() as folder:
        profiled = session(path, threads, os.path.join(folder, "profile"))
        for _ in range(runs + 1):
            profiled.run(None, feed)
        events = json.loads(Path(profiled.end_profiling()).read_text())
    first_run = min((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    warm_up_end = first_run["ts"] + first_run["dur"]
    totals: collections.Counter[str] = collections.Counter()
    for event in events:
        if (
            event.get("cat") == "Node"
            and event["name"].endswith("_kernel_time")
            and event["ts"] > warm_up_end
        ):
            totals[event["args"]["op_name"]] += event["dur"] / 1e3 / runs
    return {op: round(ms, 2) for op, ms in totals.most_common()}


def fp16_probe(threads: int, repeat: int) -> dict[str, dict]:
    """Per op: the kernels ONNX Runtime ran for a float16 one-op graph (a Cast either side means no float16
    kernel: it computes in float32) and the median ms of the float32 and float16 graphs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    shapes = {  # the image branch's 3x3 convolutions and the point MLPs at nuScenes size
        "Conv": ((1, 64, 68, 120), (64, 64, 3, 3), {"pads": [1, 1, 1, 1]}),
        "Gemm": ((35000, 64), (64, 64), {}),
        "MatMul": ((35000, 64), (64, 64), {}),
    }
    results = {}
    for op, (x_shape, w_shape, attributes) in shapes.items():
        entry = {}
        for dtype, onnx_type in ((np.float32, TensorProto.FLOAT), (np.float16, TensorProto.FLOAT16)):
            weight = numpy_helper.from_array(rng.normal(size=w_shape).astype(dtype), "w")
            graph = helper.make_graph(
                [helper.make_node(op, ["x", "w"], ["y"], **attributes)],
                op,
                [helper.make_tensor_value_info("x", onnx_type, list(x_shape))],
                [helper.make_tensor_value_info("y", onnx_type, None)],
                [weight],
            )
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"{op}.onnx"
                path.write_bytes(model.SerializeToString())
                feed = {"x": rng.normal(size=x_shape).astype(dtype)}
                ms = statistics.median(_times(session(path, threads), feed, repeat))
                entry[f"{np.dtype(dtype).name}_ms"] = round(ms, 2)
                if dtype == np.float16:
                    entry["float16_kernels"] = sorted(op_times(path, feed, threads, 1))
        results[op] = entry
    return results


def _times(runner: onnxruntime.InferenceSession, feed: dict[str, np.ndarray], repeat: int) -> list[float]:
    """ms of `repeat` runs after a warm-up one."""
    runner.run(None, feed)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        runner.run(None, feed)
        times.append(1e3 * (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the float .onnx (xkd-export)")
    parser.add_argument("--int8", type=Path, action="append", required=True, help="an xkd-quantize output")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="also kernel time per op type (profiler)")
    parser.add_argument("--profile-runs", type=int, default=5)
    parser.add_argument(
        "--data",
        type=Path,
        help="anything open_frames reads; its first frame (default: the nuScenes keyframe)",
    )
    parser.add_argument("--split", default="test", help="split of a synthetic --data (default test)")
    parser.add_argument("--fp16-probe", action="store_true", help="also: float16 kernels on this CPU?")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.data is None:
        frame, where = load_keyframe(DATA), "nuScenes keyframe"
    else:
        options = {"split": args.split} if (args.data / "split.yaml").is_file() else {}
        frame = open_frames(args.data, **options)[0]
        where = f"{args.data} {frame.name}"
    segmenter = Segmenter.from_model(args.model)
    feed = prepare_frame(frame, segmenter.preprocess).feed(segmenter.backend.input_names)
    paths = {"fp32": args.model} | {str(path): path for path in args.int8}
    sessions = {name: session(path, args.threads) for name, path in paths.items()}
    labels = {name: s.run(["label"], feed)[0] for name, s in sessions.items()}  # and the warm-up run
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.repeat):
        for name, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feed)
            times[name].append(1e3 * (time.perf_counter() - start))
    fp32 = statistics.median(times["fp32"])
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "onnxruntime": onnxruntime.__version__,
        "threads": args.threads,
        "repeat": args.repeat,
        "frame": where,
        "points": len(frame.points),
        "cameras": len(frame.images),
        "models": {},
    }
    print(
        f"# {where}: {len(frame.points)} points, {len(frame.images)} cameras; {args.threads} threads; "
        f"onnxruntime {onnxruntime.__version__}; median of {args.repeat}, interleaved"
    )
    for name in sessions:
        median = statistics.median(times[name])
        entry = {
            "path": str(paths[name]),
            "median_ms": round(median, 2),
            "p90_ms": round(float(np.percentile(times[name], 90)), 2),
            "ratio_to_fp32": round(median / fp32, 3),
            "label_agreement": round(float((labels[name] == labels["fp32"]).mean()), 4),
        }
        if args.profile:
            entry["op_ms"] = op_times(paths[name], feed, args.threads, args.profile_runs)
        results["models"][name] = entry
        print(
            f"{name:<48} {median:7.1f} ms  x{entry['ratio_to_fp32']:.2f} of fp32  labels as fp32 on "
            f"{100 * entry['label_agreement']:.1f} % of points"
        )
        if args.profile:
            top = list(entry["op_ms"].items())[:10]
            total = sum(entry["op_ms"].values())
            print(f"    kernels {total:.1f} ms: " + ", ".join(f"{op} {ms:.1f}" for op, ms in top))
    if args.fp16_probe:
        results["fp16_probe"] = fp16_probe(args.threads, args.repeat)
        for op, entry in results["fp16_probe"].items():
            print(
                f"fp16 probe {op:<7} float32 {entry['float32_ms']:6.2f} ms, float16 "
                f"{entry['float16_ms']:6.2f} ms; the float16 graph ran {entry['float16_kernels']}"
            )
    write_json(args.json, results)


if __name__ == "__main__":
    main()
