"""Class maps between class sets (config/classes/*.yaml `maps`, ClassSet.map_to) and the mapped scoring of
xkd-evaluate (ClassMapping, evaluate(..., mapping=...), --map-to)."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, REPO
from tiny_model import tiny_model

from xkd_ros.classes import IGNORE_INDEX, ClassSet, load_class_set
from xkd_ros.data import Frame
from xkd_ros.evaluate.cli import main
from xkd_ros.evaluate.scoring import NO_COUNTERPART, ClassMapping, evaluate
from xkd_ros.geometry import Rig

CLASS_FILES = sorted((REPO / "config/classes").glob("*.yaml"))


def test_every_map_of_every_class_file_resolves_and_lists_every_class():
    """Each map names each class of its file once and only classes of the other set (map_to checks the
    targets); the synthetic set reaches all three real data sets."""
    maps = {}
    for path in CLASS_FILES:
        classes = load_class_set(path.stem)
        for other, entries in classes.maps.items():
            assert list(entries) == list(classes.names), (path, other)
            lut = classes.map_to(load_class_set(other))
            assert lut.shape == (classes.num_classes,)
            maps[(classes.name, other)] = lut
    assert {("synthetic", "semantickitti"), ("synthetic", "nuscenes"), ("synthetic", "rellis3d")} <= set(maps)


def names_of(source: str, target: str) -> dict[str, str | None]:
    target_names = load_class_set(target).names
    lut = load_class_set(source).map_to(load_class_set(target))
    return {
        name: None if t == IGNORE_INDEX else target_names[t]
        for name, t in zip(load_class_set(source).names, lut, strict=True)
    }


def test_synthetic_maps_say_what_they_merge_and_what_has_no_counterpart():
    kitti = names_of("synthetic", "semantickitti")
    assert kitti["lane_marking"] == kitti["road"] == "road"  # as semantic-kitti-api's learning_map does
    assert kitti["bus"] == "other-vehicle"
    assert kitti["cyclist"] == "bicyclist"
    assert None not in kitti.values()
    assert names_of("synthetic", "nuscenes")["building"] == "manmade"
    rellis = names_of("synthetic", "rellis3d")
    assert rellis["traffic_sign"] is None
    assert rellis["cyclist"] is None
    assert rellis["car"] == rellis["truck"] == rellis["bus"] == "vehicle"


def test_a_class_set_maps_to_itself_as_the_identity():
    classes = load_class_set("semantickitti")
    assert np.array_equal(classes.map_to(classes), np.arange(classes.num_classes))


def class_file(tmp_path: Path, maps: str) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(
        "name: toy\nclasses:\n  - {name: a, color: [0, 0, 0]}\n  - {name: b, color: [1, 1, 1]}\n"
        f"raw: {{0: a, 1: b}}\n{maps}"
    )
    return path


@pytest.mark.parametrize(
    ("maps", "message"),
    [
        ("maps: {semantickitti: {a: road}}\n", r"toy.yaml: maps.semantickitti: \['b'\] not listed"),
        (
            "maps: {semantickitti: {a: road, b: ~, c: car}}\n",
            r"toy.yaml: maps.semantickitti: \['c'\] are not",
        ),
        ("maps: {semantickitti: {a: road, b: [car]}}\n", r"toy.yaml: maps.semantickitti: \['b'\]: expected"),
        ("maps: [semantickitti]\n", r"toy.yaml: maps: expected"),
    ],
)
def test_malformed_maps_are_refused_naming_the_file(tmp_path, maps, message):
    with pytest.raises(ValueError, match=message):
        ClassSet.from_yaml(class_file(tmp_path, maps))


def test_unknown_target_names_and_missing_maps_are_errors_naming_the_file(tmp_path):
    toy = ClassSet.from_yaml(class_file(tmp_path, "maps: {semantickitti: {a: road, b: lorry}}\n"))
    with pytest.raises(ValueError, match=r"toy.yaml: maps.semantickitti.b: 'lorry' is not a class of"):
        toy.map_to(load_class_set("semantickitti"))
    with pytest.raises(ValueError, match=r"toy.yaml: maps: no map to class set 'nuscenes'"):
        toy.map_to(load_class_set("nuscenes"))


# Mapped scoring: a stub segmenter gives exact predictions, so the confusion can be checked by hand.


@dataclass
class StubSegmentation:
    labels: np.ndarray
    timings: dict


class StubSegmenter:
    """What evaluate() uses of a Segmenter: its classes and segment_frame, with fixed labels."""

    def __init__(self, classes: str, labels: np.ndarray) -> None:
        self.classes = load_class_set(classes)
        self.labels = labels

    def segment_frame(self, frame, lidar_only=False):
        return StubSegmentation(self.labels, {"total_ms": 1.0})


def kitti_frame(names: list[str]) -> Frame:
    kitti = load_class_set("semantickitti")
    labels = np.array([IGNORE_INDEX if n == "ignore" else kitti.index(n) for n in names], dtype=np.uint8)
    points = np.zeros((len(names), 4), dtype=np.float32)
    points[:, 0] = 5.0
    return Frame(
        points, ("x", "y", "z", "intensity"), Rig.from_cameras([]), labels=labels, classes=kitti.name
    )


def test_mapped_scoring_counts_merged_unmapped_invalid_and_unscored_points():
    synthetic = load_class_set("synthetic")
    frame = kitti_frame(["road", "road", "road", "car", "trunk", "trunk", "ignore", "vegetation"])
    predicted = [
        synthetic.index(n) for n in ("road", "lane_marking", "car", "car", "vegetation", "road", "road")
    ]
    labels = np.array([*predicted, IGNORE_INDEX], dtype=np.uint8)  # the last point invalid
    segmenter = StubSegmenter("synthetic", labels)
    mapping = ClassMapping.between(segmenter.classes, load_class_set("semantickitti"))
    (result,) = evaluate([frame], segmenter, modes=("lidar_only",), mapping=mapping).values()
    summary = result.summary(mapping.target)
    # road: 2 hits (road, lane_marking), 1 missed (as car); car: 1 hit, 1 false positive; vegetation: its
    # one point invalid (counted wrong), trunk points not scored (the model has no trunk class)
    assert summary["iou"]["road"] == pytest.approx(2 / 3)
    assert summary["iou"]["car"] == pytest.approx(1 / 2)
    assert summary["iou"]["vegetation"] == 0.0
    assert summary["iou"]["person"] is None  # neither labelled nor predicted
    assert "trunk" not in summary["iou"]
    assert "trunk" in summary["not_predicted"]
    assert summary["points_scored"] == 5
    assert summary["points_not_scored"] == 2
    assert summary["miou"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert result.confusion[load_class_set("semantickitti").index("vegetation"), -1] == 1
    assert mapping.predictions(np.array([synthetic.index("bus")]))[0] == mapping.target.index("other-vehicle")


def test_a_class_without_counterpart_is_a_wrong_prediction_not_a_dropped_point():
    rellis = load_class_set("rellis3d")
    mapping = ClassMapping.between(load_class_set("synthetic"), rellis)
    sign = load_class_set("synthetic").index("traffic_sign")
    assert mapping.predictions(np.array([sign]))[0] == rellis.num_classes  # the NO_COUNTERPART column
    truth = mapping.truth(np.array([rellis.index("bush"), rellis.index("tree")], dtype=np.uint8))
    assert truth.tolist() == [IGNORE_INDEX, rellis.index("tree")]
    assert NO_COUNTERPART not in rellis.names


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tiny"))


def test_command_line_maps_a_synthetic_model_onto_semantickitti_labels(tiny, tmp_path, capsys):
    data = DATA / "semantickitti_tiny"
    assert main([str(data), "--model", str(tiny), "--out", str(tmp_path / "plain")]) == 1
    assert "needs labels of class set 'synthetic', has 'semantickitti'" in capsys.readouterr().err
    out = tmp_path / "mapped"
    assert main([str(data), "--model", str(tiny), "--map-to", "semantickitti", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["classes"] == "semantickitti"
    lidar = report["modes"]["lidar_only"]
    assert lidar["mapped_from"] == "synthetic"
    assert "trunk" in lidar["not_predicted"]
    assert set(lidar["iou"]) == set(load_class_set("semantickitti").names) - set(lidar["not_predicted"])
    assert 0 <= lidar["miou"] <= 1
    assert "not predicted by this model" in (out / "report.md").read_text()


def test_command_line_names_an_unknown_target(tiny, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                str(DATA / "semantickitti_tiny"),
                "--model",
                str(tiny),
                "--map-to",
                "kitti360",
                "--out",
                str(tmp_path),
            ]
        )
    assert "--map-to" in capsys.readouterr().err
