"""Frozen 2D teachers for 2D -> 3D knowledge distillation: per-point class distributions from a pre-trained
image segmenter, computed once per frame (numpy in, numpy out, ONNX Runtime; no torch needed).

ESPNet (p=2, q=8, 368k parameters) trained on Cityscapes, from ../shared/data/pretrained/espnet_cityscapes
(SOURCE.md there). The code is MIT; the weights were trained on Cityscapes, whose terms are non-commercial:
a model distilled from this teacher inherits that restriction, and its model card must say so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from xkd_ros.paths import share_dir

ESPNET_FOLDER = ("data", "pretrained", "espnet_cityscapes")
ESPNET_ONNX = "espnet_cityscapes.onnx"
# The original evaluation script's input: BGR, (x - mean) / std per channel, then / 255 (sic).
ESPNET_MEAN_BGR = (72.3923111, 82.90893555, 73.15840149)
ESPNET_STD_BGR = (45.3192215, 46.15289307, 44.91483307)
ESPNET_STRIDE = 8  # three downsamplings and three 2x transposed convolutions: sizes must divide by it


def default_espnet_path() -> Path:
    """../shared/data/pretrained/espnet_cityscapes/espnet_cityscapes.onnx beside the checkout (or install)."""
    return share_dir().parent.joinpath("shared", *ESPNET_FOLDER, ESPNET_ONNX)


class EspnetTeacher:
    """ESPNet Cityscapes as a frozen teacher: class probabilities per pixel, and per point.

    The shipped ONNX graph is declared at 1x3x512x1024 but is convolutions, pools and transposed
    convolutions only (no Resize): its input and output sizes are rewritten to width x height on loading,
    so 512x256 costs a quarter of the 1024x512 original (docs/model.md has the figures). Images are
    squeezed to width x height whatever their aspect ratio, as the point coordinates are normalised.

    path: the .onnx file or the folder holding it (None: `default_espnet_path()`); threads: ONNX Runtime's
    intra-op threads (0: its default).
    """

    NUM_CLASSES = 20
    CLASS_NAMES = (
        "road",
        "sidewalk",
        "building",
        "wall",
        "fence",
        "pole",
        "traffic light",
        "traffic sign",
        "vegetation",
        "terrain",
        "sky",
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
        "void",
    )

    def __init__(self, path: str | Path | None = None, width: int = 512, height: int = 256, threads: int = 0):
        path = default_espnet_path() if path is None else Path(path)
        if path.is_dir():
            path = path / ESPNET_ONNX
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no ESPNet Cityscapes teacher (espnet_cityscapes.onnx) there")
        for name, value in (("width", width), ("height", height)):
            if value < ESPNET_STRIDE or value % ESPNET_STRIDE:
                raise ValueError(
                    f"teacher {name} must be a positive multiple of {ESPNET_STRIDE}, got {value}"
                )
        import onnxruntime

        self.path, self.width, self.height = path, width, height
        weights = path.read_bytes()
        self._digest = hashlib.sha256(weights).hexdigest()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self._session = onnxruntime.InferenceSession(
            _resized_graph(weights, path, width, height), options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        # (x - mean) / std / 255 as one multiply-add on the BGR pixels
        self._scale = (1.0 / (255.0 * np.array(ESPNET_STD_BGR, dtype=np.float32))).reshape(3, 1, 1)
        self._shift = -np.array(ESPNET_MEAN_BGR, dtype=np.float32).reshape(3, 1, 1) * self._scale

    @property
    def fingerprint(self) -> str:
        """Its outputs' cache key: the weights file's sha256 (first 16 hex digits) and the input size."""
        return f"espnet-{self._digest[:16]}-{self.width}x{self.height}"

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """(20, height, width) float32 softmax over the classes of one uint8 RGB image (H, W, 3), any size."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"teacher image: expected uint8 RGB (H, W, 3), got {image.dtype} {image.shape}")
        small = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
        bgr = small[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
        logits = self._session.run(None, {self._input: (bgr * self._scale + self._shift)[None]})[0][0]
        logits -= logits.max(axis=0, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=0, keepdims=True)

    def point_targets(
        self, images: Sequence[np.ndarray], point_uv: np.ndarray, point_visible: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-point teacher distribution: (N, 20) float16, the mean over the views that see the point of
        each view's probabilities sampled bilinearly at point_uv, and (N,) bool `seen` (some view sees it;
        the others' rows are zero).

        images: one uint8 RGB image per camera, in point_uv's camera order, at any resolution: point_uv
        (N, M, 2) is in grid_sample's normalised [-1, 1] (align_corners=False) coordinates, as
        xkd_ros.preprocess writes it; point_visible (N, M) is nonzero where the camera sees the point.
        """
        points, cameras = point_visible.shape
        if point_uv.shape != (points, cameras, 2) or len(images) != cameras:
            raise ValueError(
                f"teacher point_targets: {len(images)} images, point_uv {point_uv.shape} and point_visible "
                f"{point_visible.shape} do not agree on N points and M cameras"
            )
        total = np.zeros((points, self.NUM_CLASSES), dtype=np.float32)
        views = np.zeros(points, dtype=np.int64)
        for camera, image in enumerate(images):
            visible = np.flatnonzero(point_visible[:, camera])
            if len(visible) == 0:
                continue
            total[visible] += sample_bilinear(self.probabilities(image), point_uv[visible, camera])
            views[visible] += 1
        seen = views > 0
        total[seen] /= views[seen, None]
        return total.astype(np.float16), seen


def sample_bilinear(maps: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(C, h, w) maps at normalised (u, v) in [-1, 1] -> (K, C): grid_sample's bilinear, align_corners=False,
    border padding (the model's own sampling, xkd_ros.model.fusion.sample_views)."""
    channels, height, width = maps.shape
    x = np.clip(((uv[:, 0].astype(np.float64) + 1) * width - 1) / 2, 0, width - 1)
    y = np.clip(((uv[:, 1].astype(np.float64) + 1) * height - 1) / 2, 0, height - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    wx, wy = (x - x0)[:, None], (y - y0)[:, None]
    flat = maps.reshape(channels, -1).T  # (h * w, C): one row per pixel
    top = flat[y0 * width + x0] * (1 - wx) + flat[y0 * width + x1] * wx
    bottom = flat[y1 * width + x0] * (1 - wx) + flat[y1 * width + x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def _resized_graph(weights: bytes, path: Path, width: int, height: int) -> bytes:
    """The ONNX graph with its input and output declared at 1 x 3 x height x width (1 x 20 x ...)."""
    import onnx

    model = onnx.load_from_string(weights)
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError(f"{path}: expected one input and one output (the ESPNet export), got another graph")
    for value, channels in ((graph.input[0], 3), (graph.output[0], EspnetTeacher.NUM_CLASSES)):
        dims = value.type.tensor_type.shape.dim
        if [dim.dim_value for dim in dims[:2]] != [1, channels]:
            raise ValueError(f"{path}: {value.name} is not 1 x {channels} x H x W (not the ESPNet export)")
        dims[2].dim_value, dims[3].dim_value = height, width
    del graph.value_info[:]  # intermediate shapes inferred for 1024x512; the runtime infers them again
    return model.SerializeToString()
