"""TensorRT backend (TensorRT 10 Python API, torch.cuda for device memory and the stream).

The engine is built from the exported ONNX model with one optimization profile over the point count N
(min, opt, max), cached by `engine_cache` (ONNX hash, TensorRT version, GPU, precision, profile) and rebuilt
when the cache does not match or cannot be deserialized. Input and output device buffers are allocated once
for the max profile; each call copies the inputs host->device, runs `execute_async_v3` on a torch CUDA
stream and copies the first N rows of each output back.

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

DEFAULT_POINTS = (1000, 35000, 140000)
WORKSPACE_BYTES = 4 << 30


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


def _check_settings(precision: str, points: Iterable[int]) -> tuple[int, int, int]:
    if precision not in PRECISIONS:
        raise BackendError(f"tensorrt backend: precision must be one of {PRECISIONS}, got {precision!r}")
    points = tuple(int(p) for p in points)
    if len(points) != 3 or not 1 <= points[0] <= points[1] <= points[2]:
        raise BackendError(f"tensorrt backend: points must be 1 <= min <= opt <= max, got {points}")
    return points  # type: ignore[return-value]


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


def _point_shape(shape: tuple[int, ...], n: int, name: str) -> tuple[int, ...]:
    """`shape` with its dynamic (-1) first dimension set to `n` (no other dimension may be dynamic)."""
    if any(d < 0 for d in shape[1:]):
        raise BackendError(
            f"tensorrt backend: input {name!r} {shape}: only the point dimension may be dynamic"
        )
    return (n, *shape[1:]) if shape and shape[0] < 0 else shape


def _fit_points(inputs: Mapping[str, np.ndarray], dynamic: set[str], n: int) -> dict[str, np.ndarray]:
    """The point inputs cropped, or repeated cyclically, to exactly `n` points (calibration runs at opt)."""
    out = {}
    for name, array in inputs.items():
        if name in dynamic:
            array = array[np.resize(np.arange(len(array)), n)] if len(array) else array
        out[name] = np.ascontiguousarray(array)
    return out


class _Calibrator:
    """Factory for an IInt8EntropyCalibrator2 subclass (the base class exists only once tensorrt imports)."""

    @staticmethod
    def create(trt: Any, torch: Any, network: Any, frames: Iterable[Mapping[str, np.ndarray]] | None,
               opt_points: int, cache_file: Path, device: int) -> Any:  # fmt: skip
        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        names = [t.name for t in inputs]
        dynamic = {t.name for t in inputs if len(t.shape) and t.shape[0] < 0}

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
                arrays = _fit_points(frame, dynamic, opt_points)
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
    calibration: Iterable[Mapping[str, np.ndarray]] | None = None,
    calibration_cache: Path | None = None,
    device: int = 0,
    workspace_bytes: int = WORKSPACE_BYTES,
) -> bytes:
    """Parse the ONNX model and build a serialized engine with one profile over the point count.

    int8 needs `calibration` (network input dicts; each is cropped or repeated to the opt point count) or an
    existing `calibration_cache`; layers TensorRT does not quantize fall back to fp16.
    """
    points = _check_settings(precision, points)
    trt = _tensorrt()
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
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        profile.set_shape(tensor.name, *(_point_shape(shape, n, tensor.name) for n in points))
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        cache_file = calibration_cache or Path(str(onnx_path) + ".calib")
        if calibration is None and not cache_file.is_file():
            raise BackendError(
                f"{onnx_path}: int8 needs calibration inputs or a calibration cache {cache_file}"
            )
        torch = _torch_cuda(device)
        config.set_flag(trt.BuilderFlag.INT8)
        with warnings.catch_warnings():  # implicit (calibrated) quantization is deprecated since 10.1
            warnings.simplefilter("ignore", DeprecationWarning)
            calibrator = _Calibrator.create(trt, torch, network, calibration, points[1], cache_file, device)
            config.int8_calibrator = calibrator
            config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"{onnx_path}: TensorRT engine build failed ({precision}, points {points})")
    return bytes(serialized)


def engine_key(onnx_path: Path, precision: str, points: tuple[int, int, int], device: int) -> EngineKey:
    from xkd_ros.pipeline import sha256  # the digest model cards record

    trt, torch = _tensorrt(), _torch_cuda(device)
    major, minor = torch.cuda.get_device_capability(device)
    return EngineKey(
        onnx_sha256=sha256(onnx_path),
        tensorrt_version=trt.__version__,
        gpu_name=torch.cuda.get_device_name(device),
        compute_capability=f"{major}.{minor}",
        precision=precision,
        profile=points,
    )


def load_or_build(
    onnx_path: Path,
    precision: str,
    points: tuple[int, int, int],
    cache_dir: Path,
    calibration: Iterable[Mapping[str, np.ndarray]] | None,
    device: int,
) -> tuple[Any, Path]:
    """The deserialized engine for these settings: from the cache, else built now and stored."""
    trt = _tensorrt()
    key = engine_key(onnx_path, precision, points, device)
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
    serialized = build_engine(onnx_path, precision, points, calibration, calibration_cache, device)
    path = store_engine(cache_dir, key, serialized)
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        raise BackendError(f"{path}: TensorRT cannot deserialize the engine it just built")
    return engine, path


class TensorRTBackend:
    """A TensorRT engine for an exported .onnx model; inputs and outputs as OnnxRuntimeBackend."""

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
    ) -> None:
        self.points = _check_settings(precision, points)
        self.precision = precision
        trt = _tensorrt()
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise BackendError(f"{self.model_path}: no such ONNX model")
        torch = self._torch = _torch_cuda(device)
        self.device = torch.device("cuda", device)
        self.cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()
        with torch.cuda.device(self.device):
            self.engine, self.engine_path = load_or_build(
                self.model_path, precision, self.points, self.cache_dir, calibration_inputs, device
            )
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = tuple(n for n in names if is_input[n])
        self.output_names = tuple(n for n in names if not is_input[n])
        shapes = {n: tuple(self.engine.get_tensor_shape(n)) for n in self.input_names}
        self._dynamic = {n for n, s in shapes.items() if len(s) and s[0] < 0}
        if not self._dynamic:
            raise BackendError(f"{self.model_path}: no input has a dynamic point dimension")
        dtypes = {n: _torch_dtype(trt, torch, self.engine.get_tensor_dtype(n)) for n in names}
        self._expected = {
            n: (np.dtype(torch.empty(0, dtype=dtypes[n]).numpy().dtype), len(shapes[n]))
            for n in self.input_names
        }
        # one flat buffer per tensor, sized at the max profile; a call uses its first volume(shape) elements
        max_shapes = {n: _point_shape(shapes[n], self.points[2], n) for n in self.input_names}
        for n, shape in max_shapes.items():
            self.context.set_input_shape(n, shape)
        for n in self.output_names:
            shape = tuple(self.context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise BackendError(f"{self.model_path}: output {n!r} has a data-dependent shape {shape}")
            max_shapes[n] = shape
        self._device_buffers, self._host_buffers = {}, {}
        for n in names:
            size = int(np.prod(max_shapes[n]))
            self._device_buffers[n] = torch.empty(size, dtype=dtypes[n], device=self.device)
            self._host_buffers[n] = torch.empty(size, dtype=dtypes[n], pin_memory=pinned)
            self.context.set_tensor_address(n, self._device_buffers[n].data_ptr())

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(inputs, self._expected, str(self.model_path))
        counts = {len(inputs[n]) for n in self._dynamic}
        if len(counts) != 1:
            raise BackendError(
                f"{self.model_path}: point inputs disagree on the point count: {sorted(counts)}"
            )
        n_points = counts.pop()
        low, _, high = self.points
        if not low <= n_points <= high:
            raise BackendError(
                f"{self.engine_path}: {n_points} points is outside the engine profile [{low}, {high}] "
                "(rebuild with --points)"
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
    from xkd_ros.export import read_metadata
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
            args.model, args.precision, args.points, args.cache, calibration, device=args.device
        )
    except BackendError as error:
        print(f"xkd-build-engine: {error}", file=sys.stderr)
        return 2
    print(backend.engine_path)
    return 0
