"""The default model in models/ (made by the commands in docs/results.md) on the real nuScenes keyframe."""

import numpy as np
from conftest import REPO

from xkd_ros.classes import load_class_set
from xkd_ros.inference import create_backend
from xkd_ros.inference.metadata import read_metadata, sha256
from xkd_ros.preprocess import PreprocessConfig, prepare_frame

MODEL = REPO / "models/xkd_synthetic.onnx"


def test_model_card_matches_the_model_file():
    card = MODEL.with_suffix(".md").read_text()
    assert f"sha256 `{sha256(MODEL)}`" in card


def test_default_model_labels_the_real_keyframe(nuscenes_keyframe):
    metadata = read_metadata(MODEL)
    classes = load_class_set(metadata["classes"])
    preprocess = PreprocessConfig.from_dict(metadata["preprocess"])
    inputs = prepare_frame(nuscenes_keyframe, preprocess)
    backend = create_backend("onnxruntime", MODEL, threads=2)
    outputs = backend.infer(inputs.feed(backend.input_names))
    label, confidence = outputs["label"], outputs["confidence"]
    assert label.shape == confidence.shape == (len(nuscenes_keyframe.points),)
    assert label.min() >= 0
    assert label.max() < classes.num_classes
    assert np.all((confidence > 0) & (confidence <= 1 + 1e-6))
    seen = inputs.point_visible.max(axis=1) > 0
    assert 0.4 < seen.mean() < 0.8  # about 22k of 35k points are in a camera (SOURCE.md)
    # the road around the car: points 1.5-2.5 m below the LiDAR within 10 m are mostly labelled road-like
    ground = (np.hypot(*nuscenes_keyframe.xyz[:, :2].T) < 10) & (nuscenes_keyframe.xyz[:, 2] < -1.5)
    road_like = np.isin(
        label[ground], [classes.index(n) for n in ("road", "lane_marking", "sidewalk", "terrain")]
    )
    assert road_like.mean() > 0.5, road_like.mean()
