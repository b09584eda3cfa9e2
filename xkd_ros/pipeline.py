"""`Segmenter`: scan + images + rig -> per-point labels; the one call of the node, the evaluator and the demo.

It owns what surrounds the network so the three cannot drift apart: the pre-processing config and class set
the model was trained with (read from the model itself), input checks with errors that name the camera or
field, the IGNORE_INDEX label for points that have no geometry, and per-stage timings.

Models are rig-agnostic: the rig, not the model, names the cameras. The images of a scan are bound to the
rig's cameras in the rig's order (0 to MAX_CAMERAS of them; a camera without an image is left out), and the
range image has as many rows as the rig's LiDAR has beams. `check_rig` says at start-up, naming the camera or
field, what a model cannot take, and what it will do with the rest.

A model is checked before it runs, so a bad file fails at start-up rather than publishing nonsense: its
sha256 against the model card beside it (models/<name>.md, written by xkd-export; a damaged file otherwise
loads and labels everything 0 with NaN confidence), and its metadata against its graph (dynamic axes,
image and range-image size, classes).

The default path (ONNX Runtime) imports no torch: a vehicle needs none.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime

from xkd_ros.classes import IGNORE_INDEX, ClassSet, load_class_set
from xkd_ros.geometry import Rig
from xkd_ros.inference import Backend, OnnxRuntimeBackend, choose_backend, create_backend
from xkd_ros.inference.metadata import (
    MAX_CAMERAS,
    METADATA_KEY,
    RANGE_ROWS,
    check_model_card,
    metadata_session,
    read_metadata,
)
from xkd_ros.preprocess import (
    AXIS_NAMES,
    NetworkInputs,
    PreprocessConfig,
    check_image,
    graph_input_spec,
    input_spec,
    prepare,
)

if TYPE_CHECKING:
    from xkd_ros.data.frame import Frame

REQUIRED_CHANNELS = ("x", "y", "z", "intensity")

__all__ = [
    "REQUIRED_CHANNELS",
    "PreparedScan",
    "Segmentation",
    "Segmenter",
]

_ONNX_DTYPES = {"tensor(float)": np.dtype(np.float32), "tensor(int64)": np.dtype(np.int64)}
# The preprocess field behind each fixed axis of the network inputs, for errors that say what disagrees.
_AXIS_FIELDS = {
    ("range_image", 0): "range image channels",
    ("range_image", 2): "preprocess.range_width",
    ("point_features", 1): "point features",
    ("point_index", 1): "point index columns",
    ("images", 1): "image channels",
    ("images", 2): "preprocess.image_height",
    ("images", 3): "preprocess.image_width",
    ("point_uv", 2): "uv columns",
    ("fused_uv", 2): "uv columns",
}
_REEXPORT = "exported for one rig before models took any rig; re-export it with xkd-export"


def _check_graph(
    path: str | Path, session: onnxruntime.InferenceSession, meta: dict, preprocess: PreprocessConfig
) -> None:
    """The graph's inputs and outputs are what the metadata's pre-processing and classes make, with the
    points, cameras and range rows dynamic: a model whose metadata was edited or swapped would otherwise
    fail on every scan (or label with the wrong classes), far from the cause, and a graph with a fixed
    camera count or range height would fail on every other rig."""
    spec = {**input_spec(preprocess), **graph_input_spec(preprocess)}  # dense: graphs exported before 0.13
    inputs = {i.name: i for i in session.get_inputs()}
    listed = meta.get("inputs")
    if listed is not None and list(listed) != list(inputs):
        raise ValueError(f"{path}: the metadata lists inputs {list(listed)}, the graph takes {list(inputs)}")
    for name, graph_input in inputs.items():
        if name not in spec:
            raise ValueError(f"{path}: the graph's input {name!r} is not one xkd_ros.preprocess makes")
        shape, dtype = spec[name]
        graph_shape = list(graph_input.shape)
        if len(graph_shape) != len(shape) or _ONNX_DTYPES.get(graph_input.type) != dtype:
            raise ValueError(
                f"{path}: the graph's input {name!r} is {graph_input.type} of shape {graph_shape}, the "
                f"metadata's preprocess makes {len(shape)}-d {dtype}"
            )
        for axis, (want, have) in enumerate(zip(shape, graph_shape, strict=True)):
            if isinstance(want, str):
                if isinstance(have, int):
                    raise ValueError(
                        f"{path}: the graph's input {name!r} takes exactly {have} {AXIS_NAMES[want]} "
                        f"(shape {graph_shape}): {_REEXPORT}"
                    )
            elif isinstance(have, int) and have != want:
                field = _AXIS_FIELDS.get((name, axis), f"axis {axis}")
                raise ValueError(
                    f"{path}: metadata and graph disagree: {field} is {want} in the metadata, the graph's "
                    f"input {name!r} takes {have} (shape {graph_shape})"
                )
    config = meta["model_config"]
    for output in session.get_outputs():
        classes = output.shape[-1] if output.name.endswith("logits") and output.shape else None
        if isinstance(classes, int) and classes != config["num_classes"]:
            raise ValueError(
                f"{path}: metadata and graph disagree: model_config.num_classes is {config['num_classes']}, "
                f"the graph's output {output.name!r} has {classes} classes"
            )


def _rig_limits(path: str | Path, meta: dict) -> tuple[int, tuple[int, int]]:
    """max_cameras and range_rows (lowest, highest) of an exported model's metadata; a model without them
    was exported for one rig (its camera count and range height fixed in the graph)."""
    if "max_cameras" not in meta or "range_rows" not in meta:
        raise ValueError(f"{path}: its metadata has no max_cameras / range_rows: {_REEXPORT}")
    cameras, rows = meta["max_cameras"], meta["range_rows"]
    if not _whole(cameras) or cameras < 0:
        raise ValueError(f"{path}: metadata max_cameras: expected a whole number >= 0, got {cameras!r}")
    if not (
        isinstance(rows, list) and len(rows) == 2 and all(_whole(r) for r in rows) and 1 <= rows[0] <= rows[1]
    ):
        raise ValueError(f"{path}: metadata range_rows: expected [lowest, highest] rows >= 1, got {rows!r}")
    return cameras, (rows[0], rows[1])


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(eq=False)
class PreparedScan:
    """One scan's network inputs from `Segmenter.prepare`, waiting for `Segmenter.infer`: `feed` is what the
    backend's graph takes (`NetworkInputs.feed`), made here so the inference thread only infers."""

    inputs: NetworkInputs
    feed: dict[str, np.ndarray]
    preprocess_ms: float


@dataclass(eq=False)
class Segmentation:
    """The result for one scan, aligned with its points.

    labels: (N,) uint8 class ids, IGNORE_INDEX for invalid points (NaN, zero range, below min_range).
    confidence: (N,) float32 softmax probability of the label, 0 for invalid points.
    seen: (N,) bool, a camera saw the point, so the fused head labelled it (else the LiDAR-only head).
    cameras_used: the cameras whose images went into the network (fused), in the rig's order.
    timings: milliseconds of preprocess_ms, inference_ms, postprocess_ms and total_ms.
    """

    labels: np.ndarray
    confidence: np.ndarray
    seen: np.ndarray
    cameras_used: tuple[str, ...]
    timings: dict[str, float]


class Segmenter:
    """A network with the pre-processing and class set it was trained with, and the rigs it can take:
    up to `max_cameras` cameras (0 for a LiDAR-only model) and range images of `range_rows` rows."""

    def __init__(
        self,
        backend: Backend,
        preprocess: PreprocessConfig,
        classes: ClassSet,
        model_check: str = "",
        max_cameras: int = MAX_CAMERAS,
        range_rows: tuple[int, int] = RANGE_ROWS,
    ) -> None:
        self.backend = backend
        self.preprocess = preprocess
        self.classes = classes
        self.model_check = model_check  # what from_model verified of the file, for the log
        self.uses_images = "images" in backend.input_names
        self.max_cameras = max_cameras if self.uses_images else 0
        self.range_rows = range_rows

    @classmethod
    def from_model(cls, path: str | Path, backend: str = "onnxruntime", threads: int = 0) -> Segmenter:
        """The model at `path` (an exported .onnx, or a training checkpoint for backend "torch"), with the
        pre-processing and classes it carries, so it cannot be fed differently from how it was trained.

        An .onnx is refused (ValueError naming the file and both values) when its sha256 differs from its
        model card's, its metadata disagrees with its graph, or it was exported for one rig (a fixed camera
        count or range height: re-export it); the class set it names must be one of config/classes (a name,
        never a path). `model_check` of the result says what was verified."""
        kind, _ = choose_backend(backend)
        model_check = "" if kind == "torch" else check_model_card(path)  # before any parser sees the bytes
        engine = create_backend(kind, path, **({} if kind == "tensorrt" else {"threads": threads}))
        session = None
        if kind == "torch":
            from xkd_ros.model.checkpoint import load_checkpoint  # torch, only for the torch backend

            meta = load_checkpoint(path)
            limits = (MAX_CAMERAS, RANGE_ROWS)  # eager PyTorch takes any camera count and height
        else:  # an exported .onnx carries its pre-processing and classes (TensorRT builds from it too)
            session = engine.session if isinstance(engine, OnnxRuntimeBackend) else metadata_session(path)
            meta = read_metadata(path, session)
            # before parsing the preprocess, which an old model's fails on keys now the rig's (less helpful)
            limits = _rig_limits(path, meta)
        missing = [key for key in ("preprocess", "classes", "model_config") if key not in meta]
        if missing or "num_classes" not in meta.get("model_config", {}):
            raise ValueError(
                f"{path}: {METADATA_KEY!r} metadata lacks {missing or ['model_config.num_classes']}"
            )
        preprocess = PreprocessConfig.from_dict(meta["preprocess"], str(path))
        try:
            classes = load_class_set(meta["classes"])
        except (ValueError, FileNotFoundError) as error:
            raise ValueError(f"{path}: metadata classes: {error}") from None
        num_classes = meta["model_config"]["num_classes"]
        if num_classes != classes.num_classes:
            raise ValueError(
                f"{path}: the model has {num_classes} classes, class set {classes.name!r} "
                f"{classes.num_classes}"
            )
        if session is not None:
            _check_graph(path, session, meta, preprocess)
        return cls(engine, preprocess, classes, model_check, *limits)

    def check_rig(self, rig: Rig) -> str:
        """Refuse, at start-up, a rig this model cannot take (ValueError naming the camera or field): more
        than `max_cameras` cameras, cameras for a LiDAR-only model, a beam count outside `range_rows`.
        Returns what the model will do with it, one line for the log."""
        lidar = rig.lidar
        low, high = self.range_rows
        if not low <= lidar.beams <= high:
            raise ValueError(
                f"lidar.beams: {lidar.beams} ({lidar.sensor or 'custom profile'}) is outside the "
                f"{low}..{high} range-image rows the model was exported for"
            )
        if len(rig) and not self.uses_images:
            raise ValueError(
                f"cameras: the model is LiDAR-only (no image input) and cannot use the rig's cameras "
                f"{rig.names}; run it without cameras (cameras: []) or use a fusion model"
            )
        if len(rig) > self.max_cameras:
            raise ValueError(
                f"cameras: the rig has {len(rig)} cameras {rig.names}, the model fuses at most "
                f"{self.max_cameras}; choose at most {self.max_cameras} of them"
            )
        beams = f"{lidar.beams}-beam range image ({lidar.sensor or 'custom profile'})"
        if not len(rig):
            why = "no cameras" if self.uses_images else "the model takes no images"
            return f"LiDAR-only: {why}, the LiDAR-only head labels every point; {beams}"
        cameras = f"{len(rig)} camera{'s' if len(rig) > 1 else ''}"
        return f"{cameras} fused in rig order: {', '.join(rig.names)}; {beams}"

    def prepare(
        self,
        points: np.ndarray,
        channels: Sequence[str],
        images: Mapping[str, np.ndarray],
        rig: Rig,
        lidar_only: bool = False,
    ) -> PreparedScan:
        """The pre-processing half of `segment`: checks and network inputs, no inference. Split out so a
        node can prepare scan N+1 while scan N is in `infer` (ONNX Runtime releases the GIL)."""
        start = time.perf_counter()
        points, channels = _select_channels(points, channels)
        _check_images(images, rig)
        if lidar_only or not self.uses_images:
            images = {}
        fused = [camera for camera in rig.names if camera in images]
        if len(fused) > self.max_cameras or not self.range_rows[0] <= rig.lidar.beams <= self.range_rows[1]:
            self.check_rig(rig.with_cameras([rig[camera] for camera in fused]))  # raises, naming what
        inputs = prepare(points, channels, images, rig, self.preprocess)
        feed = inputs.feed(self.backend.input_names)
        return PreparedScan(inputs, feed, 1e3 * (time.perf_counter() - start))

    def infer(self, prepared: PreparedScan) -> Segmentation:
        """The inference and post-processing half of `segment`, on what `prepare` made."""
        start = time.perf_counter()
        inputs = prepared.inputs
        outputs = self.backend.infer(prepared.feed)
        inferred = time.perf_counter()
        valid = inputs.point_valid
        labels = outputs["label"].astype(np.uint8)
        labels[~valid] = IGNORE_INDEX
        confidence = np.where(valid, outputs["confidence"], np.float32(0)).astype(np.float32, copy=False)
        seen = inputs.point_visible.any(axis=1)
        end = time.perf_counter()
        timings = {
            "preprocess_ms": prepared.preprocess_ms,
            "inference_ms": 1e3 * (inferred - start),
            "postprocess_ms": 1e3 * (end - inferred),
            "total_ms": prepared.preprocess_ms + 1e3 * (end - start),
        }
        return Segmentation(labels, confidence, seen, inputs.cameras, timings)

    def segment(
        self,
        points: np.ndarray,
        channels: Sequence[str],
        images: Mapping[str, np.ndarray],
        rig: Rig,
        lidar_only: bool = False,
    ) -> Segmentation:
        """Label every point of `points` (N, C), whose columns are named by `channels` (any order; x, y, z
        and intensity required, ring used where present), with the RGB uint8 `images` of cameras of `rig`.

        The images go to the network in the rig's order; a rig camera without an image (late, dropped) is
        left out and its points fall to the LiDAR-only head where no other camera sees them. `lidar_only`
        drops every image, so fusion and LiDAR-only can be compared with one model (a LiDAR-only model
        always runs so). Bad input, or a rig `check_rig` refuses, raises ValueError naming the field or
        camera. `infer(prepare(...))`.
        """
        return self.infer(self.prepare(points, channels, images, rig, lidar_only))

    def segment_frame(self, frame: Frame, lidar_only: bool = False) -> Segmentation:
        """`segment` for a data.Frame, with the rig moved to each image's stamp where the poses are known."""
        return self.segment(frame.points, frame.channels, frame.images, frame.compensated_rig(), lidar_only)


def _select_channels(points: np.ndarray, channels: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """x, y, z, intensity (and ring) in the order `prepare` wants; ROS clouds come in any field order."""
    channels = tuple(channels)
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != len(channels):
        raise ValueError(f"points: shape {points.shape} does not match channels {channels}")
    missing = [name for name in REQUIRED_CHANNELS if name not in channels]
    if missing:
        raise ValueError(f"points: no {missing} field(s) among {channels}")
    wanted = REQUIRED_CHANNELS + (("ring",) if "ring" in channels else ())
    if channels == wanted:
        return points, channels
    return points[:, [channels.index(name) for name in wanted]], wanted


def _check_images(images: Mapping[str, np.ndarray], rig: Rig) -> None:
    """Every image belongs to a camera of the rig and has its calibrated size (or a reduction of it),
    including images the model does not use and lidar_only calls: a wrong image is a wiring fault worth
    reporting wherever it shows."""
    for camera, image in images.items():
        if camera not in rig.cameras:
            raise ValueError(f"images.{camera}: camera is not in the rig {rig.names}")
        check_image(camera, image, rig[camera].intrinsics)
