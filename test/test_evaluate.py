"""xkd-evaluate offline: the default model on synthetic frames, fusion and LiDAR-only side by side."""

import json

import cv2
import numpy as np
import pytest
from conftest import REPO

from xkd_ros.data.classes import IGNORE_INDEX
from xkd_ros.data.synthetic import SyntheticGenerator, load_config
from xkd_ros.data.synthetic.generator import main as synthesize
from xkd_ros.evaluate import evaluate, main, write_report
from xkd_ros.pipeline import Segmenter

MODEL = REPO / "models/xkd_synthetic.onnx"


@pytest.fixture(scope="module")
def frames():
    config = load_config(
        overrides={"camera": {"width": 240, "height": 135}, "sequence": {"frames_per_scene": 2}}
    )
    generator = SyntheticGenerator(config, seed=11)
    return [generator.sample("val", index).frame for index in range(2)]


def test_every_labelled_point_is_counted_once_per_mode(frames, tmp_path):
    segmenter = Segmenter.from_model(MODEL, threads=2)
    results = evaluate(frames, segmenter)
    labelled = sum(int((frame.labels != IGNORE_INDEX).sum()) for frame in frames)
    assert {mode: int(r.confusion.sum()) for mode, r in results.items()} == {
        "fusion": labelled,
        "lidar_only": labelled,
    }
    assert not np.array_equal(results["fusion"].confusion, results["lidar_only"].confusion)
    report = write_report(results, segmenter, frames, tmp_path, "default")
    fusion, lidar = report["modes"]["fusion"], report["modes"]["lidar_only"]
    assert 0 < lidar["miou"] < 1
    assert fusion["miou"] > lidar["miou"]  # the cameras carry what the LiDAR lacks (docs/results.md)
    assert set(fusion["latency_ms"]) >= {"preprocess_ms", "inference_ms", "total_ms"}
    for picture in ("confusion_fusion.png", "confusion_lidar_only.png", "iou_per_class.png", "bev.png"):
        assert cv2.imread(str(tmp_path / picture)) is not None
    assert "| **mIoU (%)** |" in (tmp_path / "report.md").read_text()


def test_command_line_on_a_written_split(tmp_path):
    small = tmp_path / "small.yaml"
    small.write_text("camera: {width: 160, height: 90}\nlidar: {azimuth_steps: 360}\n")
    synthesize(["--out", str(tmp_path / "synth"), "--val", "1", "--seed", "4", "--config", str(small)])
    assert main([str(tmp_path / "synth"), "--split", "val", "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval/report.json").read_text())
    assert report["frames"] == 1
    assert set(report["modes"]) == {"fusion", "lidar_only"}


def test_frames_without_labels_are_refused(nuscenes_keyframe):
    with pytest.raises(ValueError, match="needs labels of class set 'synthetic'"):
        evaluate([nuscenes_keyframe], Segmenter.from_model(MODEL))
