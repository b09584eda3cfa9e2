"""`Segmenter`: scan + images + rig -> per-point labels; the one call of the node, the evaluator and the demo.

It owns what surrounds the network so the three cannot drift apart: the pre-processing config and class set
the model was trained with (read from the model itself), input checks with errors that name the camera or
field, the IGNORE_INDEX label for points that have no geometry, and per-stage timings.

The default path (ONNX Runtime) imports no torch: a vehicle needs none.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime

from xkd_ros.data.classes import IGNORE_INDEX, ClassSet, load_class_set
from xkd_ros.geometry import Rig
from xkd_ros.inference import Backend, OnnxRuntimeBackend, choose_backend, create_backend
from xkd_ros.preprocess import PreprocessConfig, check_image, prepare

if TYPE_CHECKING:
    from xkd_ros.data.frame import Frame

# The ONNX metadata key xkd_ros.export writes; not imported from there because that module imports torch.
METADATA_KEY = "xkd_ros"
REQUIRED_CHANNELS = ("x", "y", "z", "intensity")

__all__ = ["METADATA_KEY", "REQUIRED_CHANNELS", "Segmentation", "Segmenter"]


def _metadata_session(path: str | Path) -> onnxruntime.InferenceSession:
    """A CPU session, only to read an exported model's metadata when another backend runs it."""
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@dataclass(eq=False)
class Segmentation:
    """The result for one scan, aligned with its points.

    labels: (N,) uint8 class ids, IGNORE_INDEX for invalid points (NaN, zero range, below min_range).
    confidence: (N,) float32 softmax probability of the label, 0 for invalid points.
    seen: (N,) bool, a camera saw the point, so the fused head labelled it (else the LiDAR-only head).
    cameras_used: the cameras whose images went into the network, in the model's order.
    timings: milliseconds of preprocess_ms, inference_ms, postprocess_ms and total_ms.
    """

    labels: np.ndarray
    confidence: np.ndarray
    seen: np.ndarray
    cameras_used: tuple[str, ...]
    timings: dict[str, float]


class Segmenter:
    """A network with the pre-processing and class set it was trained with."""

    def __init__(self, backend: Backend, preprocess: PreprocessConfig, classes: ClassSet) -> None:
        self.backend = backend
        self.preprocess = preprocess
        self.classes = classes

    @classmethod
    def from_model(cls, path: str | Path, backend: str = "onnxruntime", threads: int = 0) -> Segmenter:
        """The model at `path` (an exported .onnx, or a training checkpoint for backend "torch"), with the
        pre-processing and classes it carries, so it cannot be fed differently from how it was trained."""
        kind, _ = choose_backend(backend)
        engine = create_backend(kind, path, **({} if kind == "tensorrt" else {"threads": threads}))
        if kind == "torch":
            from xkd_ros.train.checkpoint import load_checkpoint  # torch, only for the torch backend

            meta = load_checkpoint(path)
        else:  # an exported .onnx carries its pre-processing and classes (TensorRT builds from it too)
            session = engine.session if isinstance(engine, OnnxRuntimeBackend) else _metadata_session(path)
            metadata = session.get_modelmeta().custom_metadata_map
            if METADATA_KEY not in metadata:
                raise ValueError(f"{path}: no {METADATA_KEY!r} metadata: not exported by xkd-export")
            meta = json.loads(metadata[METADATA_KEY])
        preprocess = PreprocessConfig.from_dict(meta["preprocess"], str(path))
        classes = load_class_set(meta["classes"])
        num_classes = meta["model_config"]["num_classes"]
        if num_classes != classes.num_classes:
            raise ValueError(
                f"{path}: the model has {num_classes} classes, class set {classes.name!r} "
                f"{classes.num_classes}"
            )
        return cls(engine, preprocess, classes)

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

        Cameras the model expects but `images` lacks (late, dropped) leave their points to the LiDAR-only
        head; cameras the model does not know are ignored. `lidar_only` drops every image, so fusion and
        LiDAR-only can be compared with one model. Bad input raises ValueError naming the field or camera.
        """
        start = time.perf_counter()
        points, channels = _select_channels(points, channels)
        _check_images(images, rig)
        used = () if lidar_only else tuple(c for c in self.preprocess.cameras if c in images)
        inputs = prepare(points, channels, {c: images[c] for c in used}, rig, self.preprocess)
        prepared = time.perf_counter()
        outputs = self.backend.infer(inputs.as_dict())
        inferred = time.perf_counter()
        valid = inputs.point_valid
        labels = outputs["label"].astype(np.uint8)
        labels[~valid] = IGNORE_INDEX
        confidence = np.where(valid, outputs["confidence"], np.float32(0)).astype(np.float32, copy=False)
        seen = inputs.point_visible.any(axis=1)
        end = time.perf_counter()
        timings = {
            "preprocess_ms": 1e3 * (prepared - start),
            "inference_ms": 1e3 * (inferred - prepared),
            "postprocess_ms": 1e3 * (end - inferred),
            "total_ms": 1e3 * (end - start),
        }
        return Segmentation(labels, confidence, seen, used, timings)

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
    """Every image belongs to a camera of the rig and has its calibrated size, including images the model
    does not use and lidar_only calls: a wrong image is a wiring fault worth reporting wherever it shows."""
    for camera, image in images.items():
        if camera not in rig.cameras:
            raise ValueError(f"images.{camera}: camera is not in the rig {rig.names}")
        check_image(camera, image, rig[camera].intrinsics)
