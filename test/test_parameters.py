"""xkd_ros.parameters: the schema as the one source of defaults, validation, parameter files as rcl reads
them, the check command, the launch file's overrides, the parameters that change at run time and their
documentation; no ROS here."""

from __future__ import annotations

import math

import pytest
import yaml
from conftest import REPO

from xkd_ros.geometry import LidarProfile
from xkd_ros.parameters import (
    ALL_CAMERAS,
    OFFSETS,
    ParameterError,
    check_offsets,
    defaults,
    leaves,
    lidar_profile,
    main,
    read_param_file,
    runtime_parameters,
    schema_leaf,
    select_cameras,
    validate_parameters,
)

PARAM_FILE = REPO / "config" / "segment.param.yaml"
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
# What the shipped file sets for the shipped nuScenes rig rather than leaving at the schema's default.
RIG_SPECIFIC = {"cameras", OFFSETS}


def _write(tmp_path, text: str, name: str = "p.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------ one source of defaults
def test_every_parameter_has_a_default_that_is_valid():
    schema_defaults = defaults()
    assert set(schema_defaults) == set(leaves())
    assert validate_parameters({}) == schema_defaults
    assert schema_defaults["cameras"] == [ALL_CAMERAS]  # a minimal file (rig_path, model_path) fuses the rig


def test_shipped_file_sets_every_parameter_at_the_schema_default_but_the_rig_specific_ones():
    shipped = read_param_file(PARAM_FILE)
    schema_defaults = defaults()
    assert set(shipped) == set(schema_defaults), "the shipped file and the schema list other parameters"
    differing = {name for name in shipped if shipped[name] != schema_defaults[name]}
    assert differing == RIG_SPECIFIC, f"{differing - RIG_SPECIFIC} differ from config/segment.schema.json"
    params = validate_parameters(shipped)
    assert params["cameras"] == list(CAMERAS)
    assert len(params[OFFSETS]) == len(CAMERAS)


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("params", "named", "reason"),
    [
        ({"sync.foo": 1.0}, "sync.foo", "unknown"),
        ({"bogus": True}, "bogus", "unknown"),
        ({"threads": "four"}, "threads", "type"),
        ({"qos.reliable": 1}, "qos.reliable", "type"),
        ({"sync.timeout": -0.5}, "sync.timeout", "minimum"),
        ({"qos.depth": 0}, "qos.depth", "minimum"),
        ({"max_points": 0}, "max_points", "minimum"),
        ({"backend": "openvino"}, "backend", "is not one of"),
        ({"camera_transport": "theora"}, "camera_transport", "is not one of"),
        ({"cameras": ["CAM_FRONT"], OFFSETS: [0.0, 0.1]}, OFFSETS, "aligned"),
        ({OFFSETS: [0.1, 2.0]}, f"{OFFSETS}[1]", "maximum"),
        ({OFFSETS: "soon"}, OFFSETS, "neither a list nor a map"),
        ({"cameras": ["CAM_FRONT"], f"{OFFSETS}.CAM_BACK": 0.1}, OFFSETS, "not among"),
        ({"threads": None}, "threads", "no value"),
        ({"cameras": ["*", "CAM_FRONT"]}, "cameras", "cannot be combined"),
        ({"lidar.sensor": "velodyne_hdl65e"}, "lidar.sensor", "is not one of"),
        ({"lidar.intensity_scale": -1.0}, "lidar.intensity_scale", "minimum"),
        ({"lidar.beams": 2.5}, "lidar.beams", "type"),
        ({"pipeline.overlap": "yes"}, "pipeline.overlap", "type"),
        ({"pipeline.queue": 2}, "pipeline.queue", "unknown"),
    ],
)
def test_bad_parameter_is_named(params, named, reason):
    with pytest.raises(ParameterError, match=reason) as info:
        validate_parameters(params)
    assert f"'{named}'" in str(info.value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sync.match_threshold", None),
        ("sync.timeout", None),
        (OFFSETS, [-0.01, None]),
        (f"{OFFSETS}.CAM_FRONT", None),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_parameter(name, value, bad):
    value = bad if value is None else [bad if v is None else v for v in value]
    with pytest.raises(ParameterError, match=f"'{name}': {bad} is not a finite number"):
        validate_parameters({name: value})


def test_an_empty_list_is_what_rclpy_makes_none_of():
    """rclpy has no type for [] and hands the node None (PARAMETER_NOT_SET): for a list it is []."""
    params = validate_parameters({"cameras": None, OFFSETS: None})
    assert params["cameras"] == []
    assert params[OFFSETS] == []


def test_offsets_default_to_zero_for_each_camera():
    assert check_offsets([], CAMERAS[:2]) == {"CAM_FRONT": 0.0, "CAM_FRONT_RIGHT": 0.0}
    assert check_offsets({"CAM_FRONT_RIGHT": -0.02}, CAMERAS[:2]) == {
        "CAM_FRONT": 0.0,
        "CAM_FRONT_RIGHT": -0.02,
    }
    assert check_offsets([0.01, -0.02], CAMERAS[:2]) == {"CAM_FRONT": 0.01, "CAM_FRONT_RIGHT": -0.02}


def test_camera_offsets_as_map():
    params = validate_parameters({"cameras": ["CAM_FRONT"], f"{OFFSETS}.CAM_FRONT": -0.02})
    assert params[OFFSETS] == {"CAM_FRONT": -0.02}


def test_numbers_come_back_as_floats():
    """A ROS integer (`timeout: 1`) for a number parameter: the node declares it a double."""
    params = validate_parameters({"sync.timeout": 1, OFFSETS: [0, 0]})
    assert isinstance(params["sync.timeout"], float)
    assert all(isinstance(v, float) for v in params[OFFSETS])


# ------------------------------------------------------------------ parameter files
def test_file_without_offsets_or_cameras_is_valid(tmp_path):
    path = _write(tmp_path, "/**:\n  ros__parameters:\n    cameras: []\n    sync:\n      timeout: 0.2\n")
    params = validate_parameters(read_param_file(path))
    assert params["cameras"] == []
    assert params[OFFSETS] == []
    assert params["sync.timeout"] == 0.2


@pytest.mark.parametrize(
    ("key", "applies"),
    [
        ("/**", True),
        ("segment", True),
        ("/segment", True),
        ("/*", True),
        ("/**/segment", True),
        ("/other", False),
    ],
)
def test_node_keys_as_rcl_matches_them(tmp_path, key, applies):
    path = _write(tmp_path, f"{key}:\n  ros__parameters:\n    threads: 2\n")
    if applies:
        assert read_param_file(path) == {"threads": 2}
    else:
        with pytest.raises(ParameterError, match="no parameters for node /segment"):
            read_param_file(path)


def test_numbers_and_lists_are_typed_as_rcl_types_them(tmp_path):
    path = _write(tmp_path, "/**:\n  ros__parameters:\n    sync:\n      match_threshold: 2e-2\n")
    assert read_param_file(path) == {"sync.match_threshold": 0.02}
    mixed = _write(tmp_path, "/**:\n  ros__parameters:\n    sync:\n      camera_offsets: [0, -0.02]\n")
    with pytest.raises(ParameterError, match=r"'sync\.camera_offsets'.*lists of one type"):
        read_param_file(mixed)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "cannot be read"),
        ("a: [\n", "not valid YAML at line 2"),
        ("- 1\n", "expected node names"),
        ("/**:\n  threads: 1\n", "no ros__parameters"),
    ],
)
def test_unreadable_files_are_named(tmp_path, text, reason):
    path = tmp_path / "p.yaml" if text is None else _write(tmp_path, text)
    with pytest.raises(ParameterError, match=reason) as info:
        read_param_file(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------ the check command
def test_check_command_says_ok_for_the_shipped_file(capsys):
    assert main([str(PARAM_FILE)]) == 0
    assert capsys.readouterr().out == "ok\n"


@pytest.mark.parametrize(
    ("text", "overrides", "named"),
    [
        ("/**:\n  ros__parameters:\n    sync:\n      timeout: .nan\n", [], "'sync.timeout': nan"),
        ("/**:\n  ros__parameters:\n    bogus: 1\n", [], "'bogus': unknown parameter"),
        (
            "/**:\n  ros__parameters:\n    threads: 1\n",
            ["cameras:=[CAM_FRONT]", f"{OFFSETS}:=[0.1, 0.2]"],
            "aligned",
        ),
    ],
)
def test_check_command_names_file_and_parameter(tmp_path, capsys, text, overrides, named):
    path = _write(tmp_path, text)
    assert main([str(path), *(arg for o in overrides for arg in ("-p", o))]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(path) in captured.err
    assert named in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_check_command_takes_empty_lists_on_the_command_line(capsys):
    assert main([str(PARAM_FILE), "-p", "cameras:=[]", "-p", f"{OFFSETS}:=[]"]) == 0


def test_shipped_file_is_what_yaml_reads():
    """read_param_file reads the shipped file as yaml does (nothing lost by its rcl-like typing)."""
    data = yaml.safe_load(PARAM_FILE.read_text())["/**"]["ros__parameters"]
    assert read_param_file(PARAM_FILE)["sync.camera_offsets"] == data["sync"]["camera_offsets"]


# ------------------------------------------------------------------ the rig names the cameras and the LiDAR
def test_cameras_are_selected_from_the_rig():
    rig_cameras = ["front", "rear", "left"]
    assert select_cameras([ALL_CAMERAS], rig_cameras, "car.rig.yaml") == ("front", "rear", "left")
    assert select_cameras([], rig_cameras, "car.rig.yaml") == ()
    assert select_cameras(["rear", "front"], rig_cameras, "car.rig.yaml") == ("rear", "front")
    with pytest.raises(
        ParameterError, match=r"'cameras': the rig 'car.rig.yaml' has no camera\(s\) \['image_2'\]"
    ):
        select_cameras(["front", "image_2"], rig_cameras, "car.rig.yaml")


def test_lidar_parameters_override_the_rig_profile():
    kitti = LidarProfile.from_dict({"sensor": "velodyne_hdl64e", "intensity_scale": 1.0})
    params = validate_parameters({})
    assert lidar_profile(kitti, params) == kitti  # defaults: the rig's
    params = validate_parameters(
        {"lidar.intensity_scale": 255.0, "lidar.min_range": 0.0, "lidar.mount_height": 2.0}
    )
    changed = lidar_profile(kitti, params)
    assert (changed.intensity_scale, changed.min_range, changed.beams, changed.mount_height) == (
        255.0,
        0.0,
        64,
        2.0,
    )
    params = validate_parameters({"lidar.sensor": "ouster_os1_128"})
    ouster = lidar_profile(kitti, params)
    assert (ouster.beams, ouster.ring_order, ouster.intensity_scale) == (128, "top_down", 1.0)
    table = LidarProfile(beams=3, elevations_deg=(1.0, -1.0, -3.0), fov_up_deg=2.0, fov_down_deg=-4.0)
    assert lidar_profile(table, validate_parameters({"lidar.beams": 16})).elevations_deg == ()


# ------------------------------------------------------------------ what changes at run time, and the docs
def test_runtime_parameters_are_the_ones_the_schema_marks():
    assert runtime_parameters() == {"sync.match_threshold", "sync.timeout", OFFSETS, "debug.publish"}
    marks = [leaf["x-runtime"] for leaf in leaves().values() if "x-runtime" in leaf]
    assert marks == [True] * len(marks), "x-runtime is true where given (false: leave it out)"
    schema = {"type": "object", "properties": {"a": {"type": "number", "default": 0, "x-runtime": True}}}
    assert runtime_parameters(schema) == {"a"}
    assert schema_leaf(f"{OFFSETS}.CAM_FRONT") == OFFSETS  # a map entry, declared one per camera
    assert schema_leaf("sync.timeout") == "sync.timeout"


def test_debug_publish_defaults_to_true_and_is_a_boolean():
    assert validate_parameters({})["debug.publish"] is True
    with pytest.raises(ParameterError, match=r"'debug\.publish': 'no' is not of type 'boolean'"):
        validate_parameters({"debug.publish": "no"})


def test_parameters_doc_lists_every_parameter_and_which_change_at_run_time():
    """docs/parameters.md's table: one row per schema parameter, its default, and "yes" exactly for the
    x-runtime ones."""
    rows = {}
    for line in (REPO / "docs" / "parameters.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 4 and cells[2] in ("yes", "no"):
            rows[cells[0].strip("`")] = (cells[1].strip("`"), cells[2])
    assert set(rows) == set(leaves()), (
        "docs/parameters.md and config/segment.schema.json list other parameters"
    )
    assert {name for name, (_, runtime) in rows.items() if runtime == "yes"} == runtime_parameters()
    for name, default in defaults().items():
        assert yaml.safe_load(rows[name][0] or '""') == default, f"docs/parameters.md: default of {name}"
