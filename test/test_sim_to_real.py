"""Sim-to-real pieces: the SemanticKITTI scan's azimuth halves (one-scan fine-tuning), the nuScenes
keyframe's 3-D boxes as weak labels, the ego-return check, and bench/sim_to_real.py on tiny models."""

import importlib.util
import json

import numpy as np
import pytest
from conftest import DATA, REPO
from tiny_model import tiny_checkpoint, tiny_model

from xkd_ros.classes import IGNORE_INDEX, load_class_set
from xkd_ros.data.nuscenes import Box3D, load_keyframe, load_keyframe_boxes, points_in_boxes
from xkd_ros.data.semantickitti import SECTORS, SemanticKittiDataset
from xkd_ros.evaluate.scoring import ClassMapping, ego_returns, score_boxes

SCAN = DATA / "semantickitti_spvnas_000000"


def load_bench():
    spec = importlib.util.spec_from_file_location("sim_to_real", REPO / "bench/sim_to_real.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_bare_scan_folder_reads_as_one_labelled_scan():
    (frame,) = SemanticKittiDataset(SCAN)
    assert frame.points.shape == (123_389, 4)
    kitti = load_class_set("semantickitti")
    counts = np.bincount(frame.labels, minlength=256)
    assert counts[kitti.index("car")] == 544 + 990  # static and moving cars (SOURCE.md)
    assert counts[IGNORE_INDEX] == 4458 + 5 + 809 + 1652  # unlabelled, outlier, other-structure, other-object
    assert frame.images == {}
    assert frame.rig.lidar.sensor == "velodyne_hdl64e"


@pytest.mark.parametrize(("one", "other"), [("front", "rear"), ("left", "right")])
def test_sector_halves_are_disjoint_and_cover_the_scan(one, other):
    (whole,) = SemanticKittiDataset(SCAN)
    (first,) = SemanticKittiDataset(SCAN, sector=one)
    (second,) = SemanticKittiDataset(SCAN, sector=other)
    assert len(first.points) + len(second.points) == len(whole.points)
    assert 0.3 < len(first.points) / len(whole.points) < 0.7
    keep = SECTORS[one](whole.points)
    assert np.array_equal(first.points, whole.points[keep])
    assert np.array_equal(second.points, whole.points[~keep])
    assert np.array_equal(np.sort(np.concatenate([first.labels, second.labels])), np.sort(whole.labels))
    assert first.name.endswith(f"/{one}")


def test_the_right_half_holds_every_class_of_the_left_half():
    """Why --holdout left: fine-tuned on the right half, a model has seen every class it is scored on."""
    (left,) = SemanticKittiDataset(SCAN, sector="left")
    (right,) = SemanticKittiDataset(SCAN, sector="right")
    labelled = set(np.unique(left.labels)) - {IGNORE_INDEX}
    assert labelled <= set(np.unique(right.labels))


def test_an_unknown_sector_is_named():
    with pytest.raises(ValueError, match=r"sector: 'top' is not one of \['front', 'left', 'rear', 'right'\]"):
        SemanticKittiDataset(SCAN, sector="top")


def test_boxes_read_as_centred_reproduce_the_annotated_point_counts():
    boxes = load_keyframe_boxes(DATA / "nuscenes_demo")
    frame = load_keyframe(DATA / "nuscenes_demo", decode_images=False)
    counts = np.bincount(points_in_boxes(frame.xyz, boxes) + 1, minlength=len(boxes) + 1)[1:]
    annotated = np.array([box.num_lidar_pts for box in boxes])
    assert len(boxes) == 68
    assert (counts == annotated).sum() >= 60
    assert (np.abs(counts - annotated) <= 5).sum() >= 67
    car = [i for i, box in enumerate(boxes) if box.category == "car"]
    assert (len(car), int(counts[car].sum())) == (8, 79)  # the 79 points in 8 car boxes


def test_points_in_a_rotated_box():
    box = Box3D("car", (10.0, 0.0, 0.0), (4.0, 2.0, 1.5), np.pi / 2, 0)  # its length along y
    xyz = np.array([[10.0, 1.9, 0.0], [11.9, 0.0, 0.0], [10.0, 0.0, 0.8], [10.9, -1.9, -0.7]])
    assert points_in_boxes(xyz, [box]).tolist() == [0, -1, -1, 0]


def test_box_recall_and_ego_returns():
    synthetic, nuscenes = load_class_set("synthetic"), load_class_set("nuscenes")
    mapping = ClassMapping.between(synthetic, nuscenes)
    predicted = np.array([synthetic.index(n) for n in ("car", "car", "road", "bus", "car")], dtype=np.uint8)
    box_of_point = np.array([0, 0, 0, 1, -1])
    scores = score_boxes(predicted, box_of_point, ["car", "barrier"], mapping)
    assert scores["car"]["recall"] == pytest.approx(2 / 3)
    assert scores["car"]["predicted_as"] == {"car": 2, "driveable_surface": 1}
    assert scores["barrier"] == {"points": 1, "recall": "not predicted by this model"}
    xyz = np.array([[0.5, 0, 0], [0, 0.9, 0], [3, 0, 0]])
    check = ego_returns(xyz, np.array([IGNORE_INDEX, 3, 3], dtype=np.uint8))
    assert check == {"radius_m": 1.0, "points": 2, "unlabelled_share": 0.5}


def test_sim_to_real_on_a_tiny_synthetic_model(tmp_path, capsys):
    bench = load_bench()
    model = tiny_model(tmp_path)
    assert bench.main(["--model", str(model), "--data", str(DATA), "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out/sim_to_real.json").read_text())
    kitti = report["semantickitti"]
    assert set(kitti) == {"whole", "left"}
    assert kitti["whole"]["points"] == 123_389
    assert kitti["left"]["points"] < kitti["whole"]["points"]
    assert "trunk" in kitti["whole"]["not_predicted"]
    assert set(report["rellis3d"]) == {"fusion", "lidar_only"}
    boxes = report["nuscenes"]["fusion"]["boxes"]
    assert boxes["car"]["points"] == 79
    assert boxes["barrier"]["recall"] == "not predicted by this model"
    assert report["nuscenes"]["lidar_only"]["ego_returns"]["unlabelled_share"] == 1.0
    text = capsys.readouterr().out
    assert "### SemanticKITTI scan" in text
    assert "| car | 8 | 79 | " in text
    assert text == (tmp_path / "out/sim_to_real.md").read_text()


def test_sim_to_real_on_a_checkpoint_of_semantickitti_classes(tmp_path):
    """A model fine-tuned on the real scan (semantickitti classes, a best.pt): scored as it is on the scan,
    through the semantickitti maps elsewhere."""
    bench = load_bench()
    checkpoint = tiny_checkpoint(tmp_path / "best.pt", classes="semantickitti")
    report = bench.run(checkpoint, DATA, holdout="left")
    assert report["backend"] == "torch"
    assert report["semantickitti"]["whole"]["not_predicted"] == []
    assert "bush" in report["rellis3d"]["fusion"]["not_predicted"]
    assert "other-vehicle" not in report["nuscenes"]["fusion"]["boxes"]
    assert report["nuscenes"]["fusion"]["boxes"]["barrier"]["recall"] == "not predicted by this model"


def test_a_missing_scan_folder_is_named(tmp_path):
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.main(["--model", str(tmp_path / "x.onnx"), "--data", str(tmp_path)])
