"""TensorRT backend (TensorRT 10 Python API, torch.cuda for device memory and the stream).

The engine is built from the exported ONNX model with one optimization profile over its dynamic axes, each
(min, opt, max): the point count N, the camera count M and the range-image rows H (`profile_shapes` maps
them onto the inputs by the graph's axis names). It is cached by `engine_cache` (ONNX hash, TensorRT version,
GPU, precision, the three ranges) and rebuilt when the cache does not match or cannot be deserialized. Input
and output device buffers are allocated once for the max profile; each call copies the inputs host->device,
runs `execute_async_v3` on a torch CUDA stream and copies the first N rows of each output back.

`tensorrt` and `torch` are imported only when a backend or engine is made: without them this module still
imports and raises BackendError saying what is missing. See docs/tensorrt.md (what has been verified where).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from xkd_ros.inference.backend import BackendError, check_inputs
from xkd_ros.inference.engine_cache import (
    DEFAULT_CACHE_DIR,
    PRECISIONS,
    EngineKey,
    engine_path,
    find_engine,
    store_engine,
)
from xkd_ros.inference.metadata import sha256  # the digest model cards record
from xkd_ros.preprocess import AXIS_NAMES

DEFAULT_POINTS = (1000, 35000, 140000)
# Every rig the Segmenter takes (0..metadata.MAX_CAMERAS cameras, metadata.RANGE_ROWS rows; a test keeps them
# equal), tuned for the nuScenes car; a vehicle with one rig builds for exactly it (--cameras 1 1 1 --rows 64
# 64 64).
DEFAULT_CAMERAS = (0, 6, 8)
DEFAULT_ROWS = (8, 32, 256)
WORKSPACE_BYTES = 4 << 30
# The dynamic axes of an exported graph (xkd_ros.preprocess.input_spec's names) and the option setting each;
# the per-scan sizes of the compact camera inputs (graph_input_spec) follow from points and cameras.
AXES = {"N": "points", "M": "cameras", "H": "rows"}
DERIVED_AXES = {axis: AXIS_NAMES[axis] for axis in ("S", "U", "V")}

Ranges = dict[str, tuple[int, int, int]]  # axis name -> (min, opt, max)


def _tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as error:
        raise BackendError(
            f"tensorrt is not installed ({error}): the TensorRT backend needs an NVIDIA GPU with TensorRT 10 "
            "(pip install tensorrt, or JetPack on Jetson); use the onnxruntime backend here"
        ) from None
    return tensorrt


def _torch_cuda(device: int) -> Any:
    try:
        import torch
    except ImportError:
        raise BackendError("tensorrt backend: torch is needed for CUDA buffers (the `train` extra)") from None
    if not torch.cuda.is_available():
        raise BackendError("tensorrt backend: torch sees no CUDA device")
    if not 0 <= device < torch.cuda.device_count():
        raise BackendError(f"tensorrt backend: no CUDA device {device} ({torch.cuda.device_count()} found)")
    return torch


def _check_settings(
    precision: str, points: Iterable[int], cameras: Iterable[int], rows: Iterable[int]
) -> Ranges:
    """The profile's ranges by axis name, each checked: 1 <= min <= opt <= max (cameras may be 0)."""
    if precision not in PRECISIONS:
        raise BackendError(f"tensorrt backend: precision must be one of {PRECISIONS}, got {precision!r}")
    ranges = {}
    for axis, values, lowest in (("N", points, 1), ("M", cameras, 0), ("H", rows, 1)):
        triple = tuple(int(v) for v in values)
        if len(triple) != 3 or not lowest <= triple[0] <= triple[1] <= triple[2]:
            raise BackendError(
                f"tensorrt backend: {AXES[axis]} must be {lowest} <= min <= opt <= max, got {triple}"
            )
        ranges[axis] = triple
    return {**ranges, **_derived_ranges(ranges)}


def _derived_ranges(ranges: Ranges) -> Ranges:
    """The profile of the compact camera inputs: from none to all points fused (opt: the half a six-camera
    car sees, 57 % on the nuScenes keyframe), and 1 to M camera slots (opt 2: where two views overlap)."""
    _, opt, high = ranges["N"]
    cameras = ranges["M"]
    slots = (1, min(2, max(cameras[1], 1)), max(cameras[2], 1))
    return {"S": (0, opt // 2, high), "U": (0, opt // 2, high), "V": slots}


def model_axes(onnx_path: str | Path) -> dict[str, tuple[int | str, ...]]:
    """Each input's shape in the ONNX graph, a dynamic axis by its name ("N", "M", "H"); read with ONNX
    Runtime (a runtime dependency), since TensorRT's parser keeps -1 for them, not their names."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for bad files
        raise BackendError(f"{onnx_path}: cannot load: {error}") from None
    return {i.name: tuple(i.shape) for i in session.get_inputs()}


def profile_shapes(
    axes: Mapping[str, tuple[int | str, ...]], ranges: Ranges
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape of every input: its dynamic axes at the ranges of their names, the rest fixed.
    A dynamic axis the ranges do not name is a BackendError (a graph not made by xkd-export)."""
    shapes = {}
    for name, shape in axes.items():
        unknown = [axis for axis in shape if isinstance(axis, str) and axis not in ranges]
        if unknown:
            raise BackendError(
                f"tensorrt backend: input {name!r} {shape}: dynamic axis {unknown[0]!r} is none of "
                f"{sorted(ranges)}"
            )
        shapes[name] = tuple(
            tuple(ranges[axis][k] if isinstance(axis, str) else axis for axis in shape) for k in range(3)
        )
    return shapes  # type: ignore[return-value]


def input_sizes(
    axes: Mapping[str, tuple[int | str, ...]], inputs: Mapping[str, np.ndarray], model: str
) -> dict[str, int]:
    """The size of each dynamic axis in `inputs`; inputs that disagree on one are a BackendError."""
    sizes: dict[str, set[int]] = {}
    for name, shape in axes.items():
        for axis, symbol in enumerate(shape):
            if isinstance(symbol, str):
                sizes.setdefault(symbol, set()).add(inputs[name].shape[axis])
    for symbol, found in sizes.items():
        if len(found) != 1:
            raise BackendError(
                f"{model}: inputs disagree on the number of {AXIS_NAMES.get(symbol, symbol)}: {sorted(found)}"
            )
    return {symbol: found.pop() for symbol, found in sizes.items()}


def _torch_dtype(trt: Any, torch: Any, dtype: Any) -> Any:
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int64: torch.int64,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    if dtype not in table:
        raise BackendError(f"tensorrt backend: unsupported I/O tensor type {dtype}")
    return table[dtype]


def _fit_calibration(
    inputs: Mapping[str, np.ndarray], axes: Mapping[str, tuple[int | str, ...]], ranges: Ranges
) -> dict[str, np.ndarray]:
    """A calibration frame at the opt shape (TensorRT calibrates there): its points cropped, or repeated
    cyclically, to opt points; its cameras and range rows must already be opt (they cannot be made up)."""
    sizes = input_sizes(axes, inputs, "calibration frame")
    for axis in ("M", "H"):
        if axis in sizes and sizes[axis] != ranges[axis][1]:
            raise BackendError(
                f"calibration frame: {sizes[axis]} {AXES[axis]}, the profile's opt is {ranges[axis][1]}: "
                f"calibrate with frames of the rig the engine is tuned for, or set --{AXES[axis]} to theirs"
            )
    n = ranges["N"][1]
    out = {}
    for name, array in inputs.items():
        if axes.get(name, ("",))[:1] == ("N",):
            array = array[np.resize(np.arange(len(array)), n)] if len(array) else array
        out[name] = np.ascontiguousarray(array)
    return out


class _Calibrator:
    """Factory for an IInt8EntropyCalibrator2 subclass (the base class exists only once tensorrt imports)."""

    @staticmethod
    def create(trt: Any, torch: Any, network: Any, frames: Iterable[Mapping[str, np.ndarray]] | None,
               axes: Mapping[str, tuple[int | str, ...]], ranges: Ranges, cache_file: Path,
               device: int) -> Any:  # fmt: skip
        names = [network.get_input(i).name for i in range(network.num_inputs)]

        class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self) -> None:
                trt.IInt8EntropyCalibrator2.__init__(self)
                self._frames: Iterator[Mapping[str, np.ndarray]] = iter(frames or ())
                self._held: list[Any] = []  # device tensors of the current batch, alive until the next

            def get_batch_size(self) -> int:
                return 1  # explicit-batch network: the batch is whatever the input shapes say

            def get_batch(self, names_asked: list[str]) -> list[int] | None:
                frame = next(self._frames, None)
                if frame is None:
                    return None
                missing = [n for n in names if n not in frame]
                if missing:
                    raise BackendError(f"calibration frame: inputs {missing} missing")
                arrays = _fit_calibration(frame, axes, ranges)
                self._held = [
                    torch.from_numpy(arrays[n]).to(f"cuda:{device}", non_blocking=False) for n in names_asked
                ]
                return [t.data_ptr() for t in self._held]

            def read_calibration_cache(self) -> bytes | None:
                return cache_file.read_bytes() if cache_file.is_file() else None

            def write_calibration_cache(self, cache: Any) -> None:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                cache_file.write_bytes(bytes(cache))

        return EntropyCalibrator()


def build_engine(
    onnx_path: str | Path,
    precision: str = "fp16",
    points: Iterable[int] = DEFAULT_POINTS,
    cameras: Iterable[int] = DEFAULT_CAMERAS,
    rows: Iterable[int] = DEFAULT_ROWS,
    calibration: Iterable[Mapping[str, np.ndarray]] | None = None,
    calibration_cache: Path | None = None,
    device: int = 0,
    workspace_bytes: int = WORKSPACE_BYTES,
) -> bytes:
    """Parse the ONNX model and build a serialized engine with one profile over its dynamic axes (points,
    cameras, range rows; `profile_shapes`).

    int8 of a graph with Q/DQ nodes (xkd-quantize) is TensorRT's explicit quantization and needs nothing
    more. Otherwise int8 calibrates (implicit quantization, deprecated since TensorRT 10.1): it needs
    `calibration` (network input dicts at the opt camera count and rows; each is cropped or repeated to the
    opt point count) or an existing `calibration_cache`, and a graph whose inputs all follow from points,
    cameras and rows (LiDAR-only): the compact camera inputs of a fusion graph vary per scan, which a
    calibration profile cannot take. Layers TensorRT does not quantize fall back to fp16.
    """
    ranges = _check_settings(precision, points, cameras, rows)
    trt = _tensorrt()
    axes = model_axes(onnx_path)
    shapes = profile_shapes(axes, ranges)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"{onnx_path}: TensorRT cannot parse the model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        profile.set_shape(name, *shapes[name])
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    explicit = any(network.get_layer(i).type == trt.LayerType.QUANTIZE for i in range(network.num_layers))
    if precision == "int8" and explicit:
        config.set_flag(trt.BuilderFlag.INT8)
    elif precision == "int8":
        derived = sorted({axis for shape in axes.values() for axis in shape if axis in DERIVED_AXES})
        if derived:
            raise BackendError(
                f"{onnx_path}: int8 calibration cannot take inputs whose size varies per scan "
                f"({', '.join(DERIVED_AXES[a] for a in derived)}): quantize it with xkd-quantize (Q/DQ) "
                "and build that model with --precision int8"
            )
        cache_file = calibration_cache or Path(str(onnx_path) + ".calib")
        if calibration is None and not cache_file.is_file():
            raise BackendError(
                f"{onnx_path}: int8 needs calibration inputs or a calibration cache {cache_file}"
            )
        torch = _torch_cuda(device)
        config.set_flag(trt.BuilderFlag.INT8)
        with warnings.catch_warnings():  # implicit (calibrated) quantization is deprecated since 10.1
            warnings.simplefilter("ignore", DeprecationWarning)
            calibrator = _Calibrator.create(
                trt, torch, network, calibration, axes, ranges, cache_file, device
            )
            config.int8_calibrator = calibrator
            config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"{onnx_path}: TensorRT engine build failed ({precision}, profile {ranges})")
    return bytes(serialized)


def engine_key(onnx_path: Path, precision: str, ranges: Ranges, device: int) -> EngineKey:
    trt, torch = _tensorrt(), _torch_cuda(device)
    major, minor = torch.cuda.get_device_capability(device)
    return EngineKey(
        onnx_sha256=sha256(onnx_path),
        tensorrt_version=trt.__version__,
        gpu_name=torch.cuda.get_device_name(device),
        compute_capability=f"{major}.{minor}",
        precision=precision,
        profile=ranges["N"],
        cameras=ranges["M"],
        rows=ranges["H"],
    )


def load_or_build(
    onnx_path: Path,
    precision: str,
    ranges: Ranges,
    cache_dir: Path,
    calibration: Iterable[Mapping[str, np.ndarray]] | None,
    device: int,
) -> tuple[Any, Path]:
    """The deserialized engine for these settings: from the cache, else built now and stored."""
    trt = _tensorrt()
    key = engine_key(onnx_path, precision, ranges, device)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    cached = find_engine(cache_dir, key)
    if cached is not None:
        try:
            engine = runtime.deserialize_cuda_engine(cached.read_bytes())
        except Exception:  # a stale or damaged file: rebuild below
            engine = None
        if engine is not None:
            return engine, cached
    calibration_cache = engine_path(cache_dir, key).with_suffix(".calib")
    serialized = build_engine(
        onnx_path, precision, ranges["N"], ranges["M"], ranges["H"], calibration, calibration_cache, device
    )
    path = store_engine(cache_dir, key, serialized)
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        raise BackendError(f"{path}: TensorRT cannot deserialize the engine it just built")
    return engine, path


class TensorRTBackend:
    """A TensorRT engine for an exported .onnx model; inputs and outputs as OnnxRuntimeBackend. `points`,
    `cameras` and `rows` are the (min, opt, max) of its optimization profile."""

    name = "tensorrt"

    def __init__(
        self,
        model_path: str | Path,
        precision: str = "fp16",
        points: Iterable[int] = DEFAULT_POINTS,
        cache_dir: str | Path | None = None,
        calibration_inputs: Iterable[Mapping[str, np.ndarray]] | None = None,
        device: int = 0,
        pinned: bool = True,
        cameras: Iterable[int] = DEFAULT_CAMERAS,
        rows: Iterable[int] = DEFAULT_ROWS,
    ) -> None:
        self.ranges = _check_settings(precision, points, cameras, rows)
        self.points = self.ranges["N"]
        self.precision = precision
        trt = _tensorrt()
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise BackendError(f"{self.model_path}: no such ONNX model")
        self.axes = model_axes(self.model_path)
        if not any("N" in shape for shape in self.axes.values()):
            raise BackendError(
                f"{self.model_path}: no input has a dynamic point axis (N): not from xkd-export"
            )
        max_shapes = {name: shapes[2] for name, shapes in profile_shapes(self.axes, self.ranges).items()}
        torch = self._torch = _torch_cuda(device)
        self.device = torch.device("cuda", device)
        self.cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
        with torch.cuda.device(self.device):
            self.engine, self.engine_path = load_or_build(
                self.model_path, precision, self.ranges, self.cache_dir, calibration_inputs, device
            )
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = tuple(n for n in names if is_input[n])
        self.output_names = tuple(n for n in names if not is_input[n])
        dtypes = {n: _torch_dtype(trt, torch, self.engine.get_tensor_dtype(n)) for n in names}
        self._expected = {
            n: (np.dtype(torch.empty(0, dtype=dtypes[n]).numpy().dtype), len(self.axes[n]))
            for n in self.input_names
        }
        # one flat buffer per tensor, sized at the max profile; a call uses its first volume(shape) elements
        for n in self.input_names:
            self.context.set_input_shape(n, max_shapes[n])
        for n in self.output_names:
            shape = tuple(self.context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise BackendError(f"{self.model_path}: output {n!r} has a data-dependent shape {shape}")
            max_shapes[n] = shape
        self._device_buffers, self._host_buffers = {}, {}
        for n in names:
            size = max(int(np.prod(max_shapes[n])), 1)  # an empty tensor (0 cameras) still needs an address
            self._device_buffers[n] = torch.empty(size, dtype=dtypes[n], device=self.device)
            self._host_buffers[n] = torch.empty(size, dtype=dtypes[n], pin_memory=pinned)
            self.context.set_tensor_address(n, self._device_buffers[n].data_ptr())

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(inputs, self._expected, str(self.model_path))
        sizes = input_sizes(self.axes, inputs, str(self.model_path))
        for axis, size in sizes.items():
            low, _, high = self.ranges[axis]
            if not low <= size <= high:
                raise BackendError(
                    f"{self.engine_path}: {size} {AXIS_NAMES[axis]} is outside the engine profile [{low}, "
                    f"{high}] (rebuild with --{AXES.get(axis, 'points')})"
                )
        torch = self._torch
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            for n in self.input_names:
                array = np.ascontiguousarray(inputs[n])
                size = array.size
                host = self._host_buffers[n][:size]
                host.numpy()[:] = array.reshape(-1)
                self._device_buffers[n][:size].copy_(host, non_blocking=True)
                self.context.set_input_shape(n, array.shape)
            shapes = {n: tuple(self.context.get_tensor_shape(n)) for n in self.output_names}
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise BackendError(f"{self.engine_path}: TensorRT execution failed")
            for n in self.output_names:
                size = int(np.prod(shapes[n]))
                self._host_buffers[n][:size].copy_(self._device_buffers[n][:size], non_blocking=True)
            self.stream.synchronize()
        return {
            n: self._host_buffers[n][: int(np.prod(shapes[n]))].numpy().reshape(shapes[n]).copy()
            for n in self.output_names
        }


def calibration_frames(folder: Path, onnx_path: Path, frames: int) -> Iterator[dict[str, np.ndarray]]:
    """Up to `frames` calibration inputs from `folder`: its .npz files (arrays named as the network inputs),
    else its nuScenes keyframe folders (itself or its subfolders), pre-processed as the model says."""
    npz = sorted(folder.glob("*.npz"))
    if npz:
        for path in npz[:frames]:
            with np.load(path) as data:
                yield {name: data[name] for name in data.files}
        return
    from xkd_ros.data import load_keyframe
    from xkd_ros.inference.metadata import read_metadata
    from xkd_ros.preprocess import PreprocessConfig, prepare_frame

    config = PreprocessConfig.from_dict(read_metadata(onnx_path)["preprocess"], f"{onnx_path}: preprocess")
    candidates = (
        [folder] if (folder / "info.json").is_file() else sorted(p for p in folder.iterdir() if p.is_dir())
    )
    for sample in itertools.islice(candidates, frames):
        yield prepare_frame(load_keyframe(sample), config).as_dict()


def main(argv: list[str] | None = None) -> int:
    """xkd-build-engine: build (or find) the TensorRT engine for an exported model ahead of time."""
    parser = argparse.ArgumentParser(prog="xkd-build-engine", description=main.__doc__)
    parser.add_argument("model", type=Path, help="the exported .onnx model")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16")
    parser.add_argument("--points", type=int, nargs=3, default=DEFAULT_POINTS, metavar=("MIN", "OPT", "MAX"))
    parser.add_argument(
        "--cameras", type=int, nargs=3, default=DEFAULT_CAMERAS, metavar=("MIN", "OPT", "MAX"),
        help="cameras the engine takes (the rig's camera count; 0: LiDAR-only)",
    )  # fmt: skip
    parser.add_argument(
        "--rows", type=int, nargs=3, default=DEFAULT_ROWS, metavar=("MIN", "OPT", "MAX"),
        help="range-image rows the engine takes (the LiDAR's beam count)",
    )  # fmt: skip
    parser.add_argument(
        "--cache", type=Path, default=None, help=f"engine cache (default {DEFAULT_CACHE_DIR})"
    )
    parser.add_argument("--calibration-data", type=Path, default=None, help="int8: .npz inputs or keyframes")
    parser.add_argument("--frames", type=int, default=64, help="int8: calibration frames to use")
    parser.add_argument("--device", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        calibration = None
        if args.calibration_data is not None:
            if not args.calibration_data.is_dir():
                raise BackendError(f"{args.calibration_data}: no such calibration folder")
            calibration = calibration_frames(args.calibration_data, args.model, args.frames)
        backend = TensorRTBackend(
            args.model, args.precision, args.points, args.cache, calibration, device=args.device,
            cameras=args.cameras, rows=args.rows,
        )  # fmt: skip
    except BackendError as error:
        print(f"xkd-build-engine: {error}", file=sys.stderr)
        return 2
    print(backend.engine_path)
    return 0
