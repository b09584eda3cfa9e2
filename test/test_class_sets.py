"""Every class set in config/classes loads, maps raw ids as its data set defines and refuses unknown ids."""

import numpy as np
import pytest
from conftest import REPO

from xkd_ros.classes import IGNORE_INDEX, ClassSet, load_class_set

CLASS_SETS = sorted(path.stem for path in (REPO / "config/classes").glob("*.yaml"))

# (raw id, class name or None for ignore) per class set: a few mappings each data set documents.
KNOWN = {
    "nuscenes": [
        (0, None),  # noise
        (2, "pedestrian"),  # human.pedestrian.adult
        (6, "pedestrian"),  # human.pedestrian.police_officer
        (9, "barrier"),
        (11, None),  # movable_object.pushable_pullable
        (15, "bus"),  # vehicle.bus.bendy
        (16, "bus"),  # vehicle.bus.rigid
        (17, "car"),
        (19, None),  # vehicle.emergency.ambulance
        (24, "driveable_surface"),
        (29, None),  # static.other
        (30, "vegetation"),
        (31, None),  # vehicle.ego
    ],
    "semantickitti": [
        (0, None),
        (1, None),  # outlier
        (10, "car"),
        (13, "other-vehicle"),  # bus
        (44, "parking"),
        (52, None),  # other-structure
        (60, "road"),  # lane-marking
        (81, "traffic-sign"),
        (99, None),  # other-object
        (252, "car"),  # moving-car
        (253, "bicyclist"),
        (259, "other-vehicle"),
    ],
    "rellis3d": [(0, None), (3, "grass"), (17, "person"), (34, "rubble")],
    "synthetic": [(0, "road"), (13, "cyclist"), (255, None)],
}
NUM_CLASSES = {"nuscenes": 16, "semantickitti": 19, "rellis3d": 19, "synthetic": 14}


def test_the_data_sets_readers_need_have_class_sets():
    assert set(KNOWN) <= set(CLASS_SETS)


@pytest.mark.parametrize("name", CLASS_SETS)
def test_class_set_loads_and_maps_known_ids(name):
    classes = load_class_set(name)
    assert classes.colors.shape == (classes.num_classes, 3)
    used = np.unique(classes.raw_to_train[classes.raw_to_train >= 0])
    assert set(used.tolist()) - {IGNORE_INDEX} == set(range(classes.num_classes))  # every class reachable
    if name in KNOWN:
        assert classes.num_classes == NUM_CLASSES[name]
        raw = np.array([raw_id for raw_id, _ in KNOWN[name]])
        expected = [IGNORE_INDEX if cls is None else classes.index(cls) for _, cls in KNOWN[name]]
        np.testing.assert_array_equal(classes.map_raw(raw), expected)


@pytest.mark.parametrize("name", CLASS_SETS)
def test_unknown_raw_id_names_the_source(name):
    classes = load_class_set(name)
    known = int(np.flatnonzero(classes.raw_to_train >= 0)[0])
    unknown = np.flatnonzero(classes.raw_to_train < 0)
    for bad in [*unknown[:1].tolist(), len(classes.raw_to_train), 70000]:  # a gap, just past, far past
        with pytest.raises(ValueError, match=rf"^scan 7\.label: raw class id\(s\) \[{bad}\] .*'{name}'"):
            classes.map_raw(np.array([known, bad, known]), source="scan 7.label")


def test_nuscenes_class_set_covers_exactly_the_32_general_ids():
    lut = load_class_set("nuscenes").raw_to_train
    assert len(lut) == 32
    assert (lut >= 0).all()
    assert (lut == IGNORE_INDEX).sum() == 12  # the classes the lidarseg benchmark leaves out


def test_semantickitti_class_set_lists_the_34_raw_ids():
    lut = load_class_set("semantickitti").raw_to_train
    assert np.flatnonzero(lut >= 0).tolist() == [
        0, 1, 10, 11, 13, 15, 16, 18, 20, 30, 31, 32, 40, 44, 48, 49, 50, 51, 52, 60, 70, 71, 72, 80, 81, 99,
        *range(252, 260),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "name", ["{path}", "../classes/synthetic", "/etc/hostname", ".hidden", "", "synthetic/../nuscenes", ["x"]]
)
def test_a_class_set_name_is_never_a_path(tmp_path, name):
    """Names come from model files and bags: a path in one must not be opened, even one to a valid file."""
    valid = tmp_path / "mine.yaml"
    valid.write_text((REPO / "config/classes/synthetic.yaml").read_text())
    name = str(valid) if name == "{path}" else name
    with pytest.raises(ValueError, match="not a class set name"):
        load_class_set(name)


def test_a_file_the_user_names_loads_through_from_yaml(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text((REPO / "config/classes/synthetic.yaml").read_text())
    assert ClassSet.from_yaml(path).names == load_class_set("synthetic").names


def test_an_unknown_class_set_name_is_named():
    with pytest.raises(FileNotFoundError, match=r"no_such_set\.yaml: no such class set"):
        load_class_set("no_such_set")
