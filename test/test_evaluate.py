"""xkd-evaluate offline: the default model on synthetic frames, fusion and LiDAR-only side by side."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO

from xkd_ros.classes import IGNORE_INDEX, load_class_set
from xkd_ros.data.rosbag import write_bag
from xkd_ros.data.synthetic import SyntheticGenerator, load_config
from xkd_ros.data.synthetic.generator import main as synthesize
from xkd_ros.evaluate.cli import main
from xkd_ros.evaluate.live import LiveResult, Recording, describe_lost, wait_budget
from xkd_ros.evaluate.report import write_report
from xkd_ros.evaluate.scoring import evaluate
from xkd_ros.pipeline import Segmenter

MODEL = REPO / "models/xkd_synthetic.onnx"
NS = 1_000_000_000


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


# Live mode: what can be checked without DDS (the runs over DDS are in test_demo_main.py).


def recording(stamps, label_topic="/lidar/labels"):
    return Recording(
        Path("bag"), "/lidar/points", label_topic, ("/lidar/points",), tuple(stamps), "synthetic"
    )


def test_live_result_names_the_scans_without_a_labelled_cloud():
    stamps = [10_000_000_000, 10_500_000_000, 11_000_000_000]
    labels = np.zeros(4, dtype=np.uint8)
    result = LiveResult(recording(stamps), outputs={stamps[0] + 300: labels, stamps[2]: labels})
    result.truth = {stamps[0] + 300: labels, stamps[2]: labels}
    result.totals = {stamps[0] + 300: 50.0, stamps[2]: 60.0}
    assert result.lost() == [(1, stamps[1])]  # a stamp back from float seconds still matches its scan
    assert not result.complete()
    assert describe_lost(result.lost(), 3) == "1 of 3 scans not labelled: #2 (stamp 10.500000000 s)"
    report = result.report(load_class_set("synthetic"))
    assert report["scans_recorded"] == 3
    assert report["scans_labelled"] == 2
    assert report["scans_lost"] == [{"index": 1, "stamp_ns": stamps[1]}]
    assert report["node_total_ms"]["p50"] == pytest.approx(55.0)

    result.outputs[stamps[1]] = labels
    result.truth[stamps[1]] = labels
    result.totals[stamps[0] + NS // 10] = 70.0  # a total_ms of no recorded scan
    assert not result.complete()  # scan #2's total_ms is still to come: totals pair with scans by stamp
    result.totals[stamps[1]] = 55.0
    assert result.complete()


def test_the_live_wait_scales_with_the_recording():
    short, long = recording([0, NS]), recording(range(0, 100 * NS, NS // 2))
    assert wait_budget(long, rate=1.0) > wait_budget(short, rate=1.0)
    assert wait_budget(long, rate=0.5) - wait_budget(long, rate=1.0) == pytest.approx(99.5)
    assert wait_budget(short, 1.0, startup_s=0, per_scan_s=1) == pytest.approx(1 + 2)


def test_live_mode_refuses_a_bag_without_labels(tmp_path, nuscenes_keyframe, capsys):
    bag = write_bag([nuscenes_keyframe], tmp_path / "bag", image_format="jpeg")
    assert main([str(bag), "--live", "--out", str(tmp_path / "eval")]) == 1
    assert capsys.readouterr().err == (
        f"xkd-evaluate: error: {bag}: no label topic in the bag, nothing to score the labels against\n"
    )
    with pytest.raises(SystemExit):
        main([str(bag), "--live", "--rate", "0"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--record: only with --live (it records a live session)"),
        (["--live"], "exists already; a recording goes to a new folder"),
    ],
)
def test_record_needs_live_mode_and_a_new_folder(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        main([str(tmp_path), *extra, "--record", str(tmp_path)])
    assert message in capsys.readouterr().err
