"""Ours side by side with the peers, in one process on the same inputs (the nuScenes keyframe: 34,688 points,
six 1600x900 cameras): PointCloud2 read/create vs sensor_msgs_py's, our CvBridge vs OpenCV's own decode,
ONNX Runtime vs PyTorch eager on the same network, int8 vs fp32, and the node's per-scan path vs its
inference alone (the overhead ratio).

The two sides of a row are timed alternately (ours, peer, peer, ours, ...) after a warm-up, so a machine busy
with other work slows both alike: the ratio (ours / peer, of the medians) is the figure that carries from one
machine to another, the milliseconds are this machine's. Rows of microseconds repeat each call until a
sample lasts about a millisecond. Each row says what both sides do and checks that they give the same
result (or how many labels agree). sensor_msgs_py is the upstream copy in ../shared/peers, imported here
only; without ../shared its rows are skipped, saying so.

Run: .venv/bin/python bench/bench_peers.py [--repeat 20] [--int8 models/xkd_synthetic.int8.onnx]
     [--json out/bench/peers.json]
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import onnxruntime
from sensor_msgs.msg import PointCloud2
from timing import write_json

from xkd_ros.classes import load_class_set
from xkd_ros.data import load_keyframe
from xkd_ros.data.messages import FrameMessages, frame_to_messages, points_from_cloud, rgb_from_image
from xkd_ros.geometry import Rig
from xkd_ros.inference.backend import BackendError
from xkd_ros.labeller import POINT_FIELDS
from xkd_ros.msgs import CvBridge, compressed_image_size, create_labeled_cloud
from xkd_ros.msgs import point_cloud2 as ours
from xkd_ros.pipeline import Segmenter
from xkd_ros.preprocess import NetworkInputs, check_image, decode_reduction, image_reduction

REPO = Path(__file__).resolve().parent.parent
PEERS = REPO.parent / "shared" / "peers"
MODEL = REPO / "models" / "xkd_synthetic.onnx"
CHECKPOINT = REPO / "out" / "train" / "fusion_any_rig" / "best.pt"  # the default model's (its model card)
XYZI = ["x", "y", "z", "intensity"]
SAMPLE_S = 1e-3  # calls of a fast row are repeated until one sample lasts about this long
BRIDGE = CvBridge()


@dataclass
class Pair:
    """One thing done two ways on the same input: `ours` and the `peer` it is measured against."""

    group: str
    name: str
    what: str  # what both sides do, for the table
    ours: Callable[[], Any]
    peer: Callable[[], Any]
    ours_label: str
    peer_label: str
    check: Callable[[Any, Any], str] = field(default=lambda a, b: "")  # same result? (text for the table)
    slow: bool = False  # a tenth of a second a call or more: a quarter of the repeats (at least 5)


def load_peer_point_cloud2(peers: Path = PEERS) -> ModuleType | None:
    """sensor_msgs_py.point_cloud2 from ../shared/peers (no wheel exists), or None where that is absent.
    Appended to sys.path: it shadows nothing installed."""
    if not (peers / "sensor_msgs_py" / "point_cloud2.py").is_file():
        return None
    if str(peers) not in sys.path:
        sys.path.append(str(peers))
    return importlib.import_module("sensor_msgs_py.point_cloud2")


def _buffer(msg: Any) -> np.ndarray:
    return np.frombuffer(msg.data, dtype=np.uint8)


def _view(result: Any, msg: Any) -> str:
    """'view' where `result` shares msg.data's memory (nothing copied), else 'copy'."""
    return "view" if isinstance(result, np.ndarray) and np.shares_memory(result, _buffer(msg)) else "copy"


def same_values(a: Any, b: Any) -> bool:
    """Equal arrays (structured too, NaN equal to NaN), lists of them, clouds (layout and bytes), or lists
    of namedtuples of equal values (sensor_msgs_py gives numpy scalars, we Python ones)."""
    if isinstance(a, PointCloud2):
        layout = ("height", "width", "point_step", "row_step", "is_bigendian", "is_dense")
        return (
            all(getattr(a, key) == getattr(b, key) for key in layout)
            and [(f.name, f.offset, f.datatype, f.count) for f in a.fields]
            == [(f.name, f.offset, f.datatype, f.count) for f in b.fields]
            and bytes(a.data) == bytes(b.data)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(same_values(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, tuple):  # a namedtuple point
        return a._fields == b._fields and list(a) == [value.item() for value in b]
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.names is None:
        return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    return all(same_values(a[name], b[name]) for name in a.dtype.names)


def _identical(a: Any, b: Any) -> str:
    return "identical" if same_values(a, b) else "DIFFER"


def not_dense(cloud: PointCloud2) -> PointCloud2:
    """`cloud` declared not dense (same points), so that skip_nans has to look at every point."""
    return PointCloud2(
        header=cloud.header,
        height=cloud.height,
        width=cloud.width,
        fields=cloud.fields,
        is_bigendian=cloud.is_bigendian,
        point_step=cloud.point_step,
        row_step=cloud.row_step,
        data=cloud.data,
        is_dense=False,
    )


def cloud_pairs(theirs: ModuleType, cloud: PointCloud2) -> list[Pair]:
    """Every read and create of both modules with the same arguments, on the keyframe's 5-field cloud
    (x, y, z, intensity float32, ring uint16: 18 bytes a point, no padding)."""
    sparse = not_dense(cloud)
    structured = np.array(ours.read_points(cloud))  # a contiguous copy, as a driver would hold it
    xyzi = np.ascontiguousarray(ours.read_points_numpy(cloud, XYZI))
    fields, xyzi_fields = list(cloud.fields), [f for f in cloud.fields if f.name in XYZI]
    view = f"ours {_view(ours.read_points(cloud), cloud)}, peer {_view(theirs.read_points(cloud), cloud)}"
    numpy_view = (
        f"ours {_view(ours.read_points_numpy(cloud, XYZI), cloud)}, "
        f"peer {_view(theirs.read_points_numpy(cloud, XYZI), cloud)}"
    )

    def pair(name: str, what: str, call: str, run: Callable[[ModuleType], Any], **kw: Any) -> Pair:
        return Pair(
            "PointCloud2",
            name,
            what,
            lambda: run(ours),
            lambda: run(theirs),
            f"xkd_ros.msgs.{call}",
            f"sensor_msgs_py.{call}",
            _identical,
            **kw,
        )

    return [
        pair(
            "read_points",
            f"all 5 fields -> structured (N,) array ({view})",
            "read_points(cloud)",
            lambda m: m.read_points(cloud),
        ),
        pair(
            "read_points xyzi",
            f"x, y, z, intensity -> structured (N,) array ({view})",
            "read_points(cloud, xyzi)",
            lambda m: m.read_points(cloud, XYZI),
        ),
        pair(
            "read_points skip_nans",
            "x, y, z, intensity of the cloud declared not dense, NaN points dropped (both copy)",
            "read_points(cloud, xyzi, skip_nans=True)",
            lambda m: m.read_points(sparse, XYZI, skip_nans=True),
        ),
        pair(
            "read_points_numpy xyzi",
            f"x, y, z, intensity -> (N, 4) float32 ({numpy_view})",
            "read_points_numpy(cloud, xyzi)",
            lambda m: m.read_points_numpy(cloud, XYZI),
        ),
        pair(
            "read_points_list",
            "all 5 fields -> list of N namedtuples (ours: Python scalars, peer: numpy scalars)",
            "read_points_list(cloud)",
            lambda m: m.read_points_list(cloud),
            slow=True,
        ),
        pair(
            "create_cloud structured",
            "5 fields, a contiguous structured (N,) array -> PointCloud2",
            "create_cloud(header, fields, structured)",
            lambda m: m.create_cloud(cloud.header, fields, structured),
        ),
        pair(
            "create_cloud unstructured",
            "x, y, z, intensity fields, an (N, 4) float32 array -> PointCloud2",
            "create_cloud(header, xyzi_fields, xyzi)",
            lambda m: m.create_cloud(cloud.header, xyzi_fields, xyzi),
        ),
    ]


def _opencv_rgb(msg: Any) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(_buffer(msg), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _pixels(msg: Any) -> np.ndarray:
    return _buffer(msg).reshape(msg.height, msg.width, 3)


def image_pairs(raw: FrameMessages, jpeg: FrameMessages, rig: Rig, segmenter: Segmenter) -> list[Pair]:
    """Our CvBridge (and the node's reduced decode) vs OpenCV called directly, six images one after the
    other in one thread."""
    raws, jpegs = list(raw.images.values()), list(jpeg.images.items())
    reduction = {
        camera: decode_reduction(rig[camera].intrinsics, segmenter.preprocess) for camera, _ in jpegs
    }
    reductions = "/".join(str(r) for r in sorted(set(reduction.values())))
    return [
        Pair(
            "image",
            "rgb8 Image -> rgb8",
            "six rgb8 Images -> (900, 1600, 3) arrays, both views on msg.data (ours checks encoding, sizes)",
            lambda: [BRIDGE.imgmsg_to_cv2(m, "rgb8") for m in raws],
            lambda: [_pixels(m) for m in raws],
            "CvBridge.imgmsg_to_cv2(msg, 'rgb8')",
            "np.frombuffer(msg.data).reshape(h, w, 3)",
            _identical,
        ),
        Pair(
            "image",
            "rgb8 Image -> bgr8",
            "six rgb8 Images -> bgr8 arrays (a colour conversion, a copy)",
            lambda: [BRIDGE.imgmsg_to_cv2(m, "bgr8") for m in raws],
            lambda: [cv2.cvtColor(_pixels(m), cv2.COLOR_RGB2BGR) for m in raws],
            "CvBridge.imgmsg_to_cv2(msg, 'bgr8')",
            "cvtColor(frombuffer+reshape, RGB2BGR)",
            _identical,
        ),
        Pair(
            "image",
            "JPEG -> bgr8",
            "six JPEG CompressedImages (quality 95) decoded as stored (bgr8)",
            lambda: [BRIDGE.compressed_imgmsg_to_cv2(m) for _, m in jpegs],
            lambda: [cv2.imdecode(_buffer(m), cv2.IMREAD_UNCHANGED) for _, m in jpegs],
            "CvBridge.compressed_imgmsg_to_cv2(msg)",
            "cv2.imdecode(msg.data, IMREAD_UNCHANGED)",
            _identical,
        ),
        Pair(
            "image",
            "JPEG -> rgb8",
            "six JPEG CompressedImages -> rgb8 arrays",
            lambda: [BRIDGE.compressed_imgmsg_to_cv2(m, "rgb8") for _, m in jpegs],
            lambda: [_opencv_rgb(m) for _, m in jpegs],
            "CvBridge.compressed_imgmsg_to_cv2(msg, 'rgb8')",
            "cvtColor(cv2.imdecode(msg.data), BGR2RGB)",
            _identical,
        ),
        Pair(
            "image",
            "JPEG -> rgb8, node's scale",
            f"six JPEGs -> rgb8: the node's decode at 1/{reductions} (all the network's input size needs) "
            "vs OpenCV's whole decode",
            lambda: [rgb_from_image(m, reduction[camera]) for camera, m in jpegs],
            lambda: [_opencv_rgb(m) for _, m in jpegs],
            "data.messages.rgb_from_image(msg, reduction)",
            "cvtColor(cv2.imdecode(msg.data), BGR2RGB)",
        ),
    ]


def _labels_agree(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> str:
    return f"{100 * float(np.mean(a['label'] == b['label'])):.2f} % labels agree"


def inference_pairs(
    inputs: NetworkInputs, segmenter: Segmenter, checkpoint: Path, int8: Path | None, threads: int
) -> tuple[list[Pair], list[str]]:
    """ONNX Runtime vs PyTorch eager, int8 vs fp32, each fed exactly its graph's inputs; and the lines
    saying which rows were skipped and why."""
    backend = segmenter.backend
    fp32 = inputs.feed(backend.input_names)
    pairs, skipped = [], []
    if checkpoint.is_file():
        import torch  # only for this row

        torch.set_num_threads(threads)
        eager = Segmenter.from_model(checkpoint, backend="torch", threads=threads).backend
        eager_feed = inputs.feed(eager.input_names)
        pairs.append(
            Pair(
                "inference",
                "ONNX Runtime vs PyTorch eager",
                f"the default network on the keyframe's inputs, {threads} threads each, fp32",
                lambda: backend.infer(fp32),
                lambda: eager.infer(eager_feed),
                f"onnxruntime {MODEL.name}",
                f"torch eager {checkpoint}",
                _labels_agree,
            )
        )
    else:
        skipped.append(f"ONNX Runtime vs PyTorch eager: skipped, no checkpoint {checkpoint} (--checkpoint)")
    if int8 is not None:
        try:
            quantized = Segmenter.from_model(int8, threads=threads).backend
        except (ValueError, BackendError) as error:
            raise SystemExit(f"--int8 {int8}: {error}") from None
        int8_feed = inputs.feed(quantized.input_names)
        pairs.append(
            Pair(
                "inference",
                "int8 vs fp32",
                f"ONNX Runtime, {threads} threads, the same inputs",
                lambda: quantized.infer(int8_feed),
                lambda: backend.infer(fp32),
                f"onnxruntime {int8.name}",
                f"onnxruntime {MODEL.name}",
                _labels_agree,
            )
        )
    else:
        skipped.append(
            "int8 vs fp32: skipped, no --int8 model given (e.g. --int8 models/xkd_synthetic.int8.onnx)"
        )
    return pairs, skipped


def node_decode(camera: str, msg: Any, rig: Rig, segmenter: Segmenter) -> np.ndarray:
    """segment_node's decode of one image: a compressed one at the reduced scale the network allows, its
    size read from its header first, then checked against the calibration."""
    intrinsics = rig[camera].intrinsics
    reduction = 1
    if hasattr(msg, "format"):
        _, width, height = compressed_image_size(msg.data)
        binned = image_reduction((height, width), intrinsics)
        if binned is None:
            raise ValueError(
                f"{camera}: a {width}x{height} JPEG is not the calibrated size (or 1/2, 1/4, 1/8)"
            )
        reduction = max(1, decode_reduction(intrinsics, segmenter.preprocess) // binned)
    rgb = rgb_from_image(msg, reduction)
    check_image(camera, rgb, intrinsics)
    return rgb


def node_path(
    messages: FrameMessages,
    rig: Rig,
    segmenter: Segmenter,
    colors: np.ndarray,
    pool: ThreadPoolExecutor | None,
) -> PointCloud2:
    """segment_node's per-scan work, without DDS: PointCloud2 -> points, images -> RGB (compressed ones on
    a thread per camera, as the node), segment, the labelled cloud it publishes."""
    cloud = messages.cloud
    points, channels = points_from_cloud(cloud, "cloud", POINT_FIELDS)
    items = list(messages.images.items())
    decode = lambda item: node_decode(*item, rig, segmenter)  # noqa: E731
    compressed = any(hasattr(msg, "format") for _, msg in items)
    rgb = list(pool.map(decode, items)) if pool is not None and compressed else [decode(i) for i in items]
    images = {camera: image for (camera, _), image in zip(items, rgb, strict=True)}
    result = segmenter.segment(points, channels, images, rig)
    return create_labeled_cloud(
        cloud.header,
        points[:, :3],
        points[:, channels.index("intensity")],
        result.labels,
        result.confidence,
        colors,
        fused=result.seen,
    )


def path_pairs(
    raw: FrameMessages, jpeg: FrameMessages, rig: Rig, segmenter: Segmenter, inputs: NetworkInputs
) -> list[Pair]:
    colors = load_class_set(segmenter.classes.name).colors
    workers = min(len(rig.cameras), os.cpu_count() or 1)
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    feed = inputs.feed(segmenter.backend.input_names)
    infer = lambda: segmenter.backend.infer(feed)  # noqa: E731
    return [
        Pair(
            "node path",
            f"per scan, {kind}",
            f"PointCloud2 + six {kind} -> points_from_cloud, {decode} -> Segmenter.segment -> "
            "create_labeled_cloud, vs backend.infer alone on the same scan",
            lambda messages=messages: node_path(messages, rig, segmenter, colors, pool),
            infer,
            "the node's per-scan path",
            "backend.infer alone",
        )
        for kind, messages, decode in (
            ("rgb8 Images", raw, "rgb_from_image"),
            ("JPEG CompressedImages", jpeg, f"rgb_from_image at the reduced scale on {workers} threads"),
        )
    ]


def _number(run: Callable[[], Any]) -> int:
    """Calls per sample: enough that one sample lasts about SAMPLE_S (timer resolution, loop overhead)."""
    start = time.perf_counter()
    run()
    once = time.perf_counter() - start
    return max(1, min(10_000, int(SAMPLE_S / max(once, 1e-9))))


def alternate(runs: Sequence[Callable[[], Any]], repeat: int) -> list[list[float]]:
    """ms per call of each of `runs`, `repeat` samples each, taken in turns (reversed every round) after
    one warm-up call each."""
    numbers = [_number(run) for run in runs]
    times: list[list[float]] = [[] for _ in runs]
    for round_ in range(repeat):
        order = range(len(runs)) if round_ % 2 == 0 else reversed(range(len(runs)))
        for k in order:
            run, number = runs[k], numbers[k]
            start = time.perf_counter()
            for _ in range(number):
                run()
            times[k].append(1e3 * (time.perf_counter() - start) / number)
    return times


def _stats(times: list[float]) -> dict[str, float]:
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90))}


def measure(pair: Pair, repeat: int) -> dict[str, Any]:
    check = pair.check(
        pair.ours(), pair.peer()
    )  # results not kept: no garbage collector walks them while timed
    ours_times, peer_times = alternate([pair.ours, pair.peer], max(5, repeat // 4) if pair.slow else repeat)
    ours_stats, peer_stats = _stats(ours_times), _stats(peer_times)
    return {
        "group": pair.group,
        "row": pair.name,
        "what": pair.what,
        "ours": pair.ours_label,
        "peer": pair.peer_label,
        "ours_ms": ours_stats,
        "peer_ms": peer_stats,
        "ratio": ours_stats["median_ms"] / peer_stats["median_ms"],
        "difference_ms": ours_stats["median_ms"] - peer_stats["median_ms"],
        "check": check,
        "ours_samples_ms": ours_times,
        "peer_samples_ms": peer_times,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine(threads: int) -> dict[str, Any]:
    import torch

    return {
        "cpu": _cpu_model(),
        "processor": platform.processor(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0],
        "threads": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "cv2": cv2.__version__,
    }


def _fmt(ms: float) -> str:
    return f"{ms:9.3f}" if ms < 10 else f"{ms:9.1f}"


def print_table(results: dict[str, Any]) -> None:
    info, settings = results["machine"], results["settings"]
    print(
        f"# ours side by side with the peers: one process, the same inputs (nuScenes keyframe, 34,688 points,"
        f" six 1600x900 cameras); {settings['repeat']} alternating samples a row (slow rows: a quarter, >= 5)"
    )
    load = f"load {info['load_average_at_start']:.1f} at start, {info['load_average_at_end']:.1f} at end"
    print(
        f"# {info['cpu'] or info['processor']}, {info['cpus_usable']} CPUs, {load}; "
        f"onnxruntime {info['onnxruntime']}, torch {info['torch']}, cv2 {info['cv2']}, "
        f"{info['threads']} threads"
    )
    print(
        "# ms per call: median and p90; ratio = ours / peer of the medians (node path: path / inference); "
        "check: same results, or the difference of the medians"
    )
    print(f"{'row':<30} {'ours p50':>9} {'p90':>9} {'peer p50':>9} {'p90':>9} {'ratio':>7}  check")
    group = None
    for row in results["rows"]:
        if row["group"] != group:
            group = row["group"]
            print(f"## {group}")
        ours_ms, peer_ms = row["ours_ms"], row["peer_ms"]
        check = row["check"] or f"{row['difference_ms']:+.1f} ms"
        print(
            f"{row['row']:<30} {_fmt(ours_ms['median_ms'])} {_fmt(ours_ms['p90_ms'])} "
            f"{_fmt(peer_ms['median_ms'])} {_fmt(peer_ms['p90_ms'])} {row['ratio']:7.2f}  {check}"
        )
        print(f"    {row['what']}\n    ours: {row['ours']}; peer: {row['peer']}")
    for line in results["skipped"]:
        print(f"# {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="for the PyTorch eager row")
    parser.add_argument("--int8", type=Path, help="an int8 model (xkd-quantize) for the int8 vs fp32 row")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    frame = load_keyframe(REPO / "test" / "data" / "nuscenes_demo")
    raw, jpeg = frame_to_messages(frame, "raw"), frame_to_messages(frame, "jpeg")
    rig = frame.rig
    segmenter = Segmenter.from_model(MODEL, threads=args.threads)
    points, channels = points_from_cloud(raw.cloud, "cloud", POINT_FIELDS)
    images = {camera: rgb_from_image(msg) for camera, msg in raw.images.items()}
    inputs = segmenter.prepare(points, channels, images, rig).inputs

    pairs, skipped = [], []
    theirs = load_peer_point_cloud2()
    if theirs is None:
        skipped.append(
            f"PointCloud2 vs sensor_msgs_py: skipped, {PEERS} is absent (the peers' copy, ../shared)"
        )
    else:
        pairs += cloud_pairs(theirs, raw.cloud)
    pairs += image_pairs(raw, jpeg, rig, segmenter)
    inference, lines = inference_pairs(inputs, segmenter, args.checkpoint, args.int8, args.threads)
    pairs += inference + path_pairs(raw, jpeg, rig, segmenter, inputs)
    skipped += lines

    results: dict[str, Any] = {
        "machine": machine(args.threads),
        "settings": {"repeat": args.repeat, "threads": args.threads, "model": str(MODEL.relative_to(REPO))},
        "rows": [measure(pair, args.repeat) for pair in pairs],
        "skipped": skipped,
    }
    results["machine"]["load_average_at_end"] = os.getloadavg()[0]
    print_table(results)
    write_json(args.json, results)


if __name__ == "__main__":
    main()
