"""TensorRT backend: the engine cache, the optimization profile over points, cameras and range rows, and the
missing-tensorrt error run everywhere; the engine tests need TensorRT and a CUDA GPU and are skipped (with
the reason) where those are missing."""

import dataclasses
import json
import sys

import numpy as np
import pytest
from conftest import REPO
from tiny_model import tiny_model

from xkd_ros.inference.backend import BackendError
from xkd_ros.inference.engine_cache import EngineKey, engine_path, find_engine, sidecar_path, store_engine

MODEL = REPO / "models/xkd_synthetic.onnx"
KEY = EngineKey(
    onnx_sha256="ab" * 32,
    tensorrt_version="10.3.0",
    gpu_name="NVIDIA Orin",
    compute_capability="8.7",
    precision="fp16",
    profile=(1000, 35000, 140000),
    cameras=(0, 6, 8),
    rows=(8, 32, 256),
)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("onnx_sha256", "cd" * 32),
        ("tensorrt_version", "10.4.0"),
        ("gpu_name", "NVIDIA H100"),
        ("compute_capability", "9.0"),
        ("precision", "int8"),
        ("profile", (1000, 35000, 150000)),
        ("cameras", (1, 6, 8)),
        ("cameras", (0, 1, 8)),
        ("rows", (8, 64, 256)),
        ("rows", (64, 64, 64)),
    ],
)
def test_key_digest_changes_with_every_field(field, value):
    changed = dataclasses.replace(KEY, **{field: value})
    assert changed.digest() != KEY.digest()
    assert engine_path("/c", changed) != engine_path("/c", KEY)


def test_key_digest_is_stable():
    same = dataclasses.replace(KEY, profile=[1000, 35000, 140000], cameras=[0, 6, 8], rows=(8.0, 32, 256))
    assert KEY.digest() == same.digest()
    assert len(KEY.digest()) == 16
    assert KEY.digest() in engine_path("/c", KEY).name


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("precision", "bf16"),
        ("profile", (0, 1, 2)),
        ("profile", (10, 5, 20)),
        ("cameras", (-1, 6, 8)),
        ("cameras", (0, 6)),
        ("rows", (0, 32, 64)),
        ("rows", "many"),
    ],
)
def test_key_rejects_bad_settings(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(KEY, **{field: value})


def test_store_then_find(tmp_path):
    path = store_engine(tmp_path / "engines", KEY, b"engine bytes")
    assert path == engine_path(tmp_path / "engines", KEY)
    assert find_engine(tmp_path / "engines", KEY) == path
    assert path.read_bytes() == b"engine bytes"
    assert json.loads(sidecar_path(path).read_text())["gpu_name"] == "NVIDIA Orin"
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, sidecar_path(path).name])
    store_engine(tmp_path / "engines", KEY, b"rebuilt")  # overwrite in place
    assert find_engine(tmp_path / "engines", KEY).read_bytes() == b"rebuilt"


def test_missing_engine_is_none(tmp_path):
    assert find_engine(tmp_path, KEY) is None
    path = store_engine(tmp_path, KEY, b"x")
    path.unlink()
    assert find_engine(tmp_path, KEY) is None


def test_mismatching_sidecar_is_none(tmp_path):
    path = store_engine(tmp_path, KEY, b"x")
    other = dataclasses.replace(KEY, tensorrt_version="10.4.0")
    sidecar_path(path).write_text(json.dumps(other.to_dict()))  # a sidecar from another build
    assert find_engine(tmp_path, KEY) is None


@pytest.mark.parametrize("sidecar", ["{not json", "", None])
def test_corrupt_or_missing_sidecar_is_none(tmp_path, sidecar):
    path = store_engine(tmp_path, KEY, b"x")
    if sidecar is None:
        sidecar_path(path).unlink()
    else:
        sidecar_path(path).write_text(sidecar)
    assert find_engine(tmp_path, KEY) is None


def test_empty_engine_is_none(tmp_path):
    path = store_engine(tmp_path, KEY, b"x")
    path.write_bytes(b"")
    assert find_engine(tmp_path, KEY) is None
    with pytest.raises(ValueError, match="empty"):
        store_engine(tmp_path, KEY, b"")


def test_backend_without_tensorrt_says_so(monkeypatch):
    from xkd_ros.inference.tensorrt import TensorRTBackend, build_engine

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # what a machine without TensorRT sees
    with pytest.raises(BackendError, match="tensorrt is not installed"):
        TensorRTBackend(MODEL)
    with pytest.raises(BackendError, match="tensorrt is not installed"):
        build_engine(MODEL, "fp32")


def test_build_engine_cli_without_tensorrt(monkeypatch, capsys, tmp_path):
    from xkd_ros.inference.tensorrt import main

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert (
        main(
            [
                str(MODEL),
                "--precision",
                "fp16",
                "--points",
                "1000",
                "35000",
                "140000",
                "--cache",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "tensorrt is not installed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_bad_settings_are_rejected_before_tensorrt():
    from xkd_ros.inference.tensorrt import TensorRTBackend

    with pytest.raises(BackendError, match="precision"):
        TensorRTBackend(MODEL, precision="bf16")
    with pytest.raises(BackendError, match="points"):
        TensorRTBackend(MODEL, points=(100, 10, 1000))
    with pytest.raises(BackendError, match=r"cameras must be 0 <= min <= opt <= max, got \(0, 9, 8\)"):
        TensorRTBackend(MODEL, cameras=(0, 9, 8))
    with pytest.raises(BackendError, match="rows must be 1 <= min"):
        TensorRTBackend(MODEL, rows=(0, 32, 64))


def test_default_profile_covers_every_rig_the_segmenter_takes():
    from xkd_ros.inference.metadata import MAX_CAMERAS, RANGE_ROWS
    from xkd_ros.inference.tensorrt import DEFAULT_CAMERAS, DEFAULT_ROWS

    assert (DEFAULT_CAMERAS[0], DEFAULT_CAMERAS[2]) == (0, MAX_CAMERAS)
    assert (DEFAULT_ROWS[0], DEFAULT_ROWS[2]) == RANGE_ROWS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tiny"))


def test_profile_shapes_cover_points_cameras_and_rows(tiny):
    """What build_engine gives TensorRT's optimization profile for each input of an exported graph."""
    from xkd_ros.inference.tensorrt import _check_settings, model_axes, profile_shapes

    axes = model_axes(tiny)
    assert axes == {
        "range_image": (6, "H", 128),
        "point_features": ("N", 5),
        "point_index": ("N", 2),
        "images": ("M", 3, 56, 96),
        "fused_index": ("S",),
        "fused_uv": ("S", "V", 2),
        "fused_view": ("S", "V"),
        "fused_visible": ("S", "V"),
        "lidar_index": ("U",),
        "output_source": ("N",),
    }
    ranges = _check_settings("fp16", (1000, 35000, 140000), (0, 6, 8), (16, 64, 128))
    shapes = profile_shapes(axes, ranges)
    assert shapes["range_image"] == ((6, 16, 128), (6, 64, 128), (6, 128, 128))
    assert shapes["images"] == ((0, 3, 56, 96), (6, 3, 56, 96), (8, 3, 56, 96))
    assert shapes["point_index"] == ((1000, 2), (35000, 2), (140000, 2))
    # from no point fused to all of them, 1 to 8 camera slots a point
    assert shapes["fused_uv"] == ((0, 1, 2), (17500, 2, 2), (140000, 8, 2))
    assert shapes["lidar_index"] == ((0,), (17500,), (140000,))
    assert shapes["output_source"] == ((1000,), (35000,), (140000,))
    with pytest.raises(BackendError, match=r"input 'range_image' .*dynamic axis 'H' is none of"):
        profile_shapes(axes, {"N": (1, 2, 3), "M": (0, 1, 2)})


def test_input_sizes_name_the_axis_inputs_disagree_on(tiny):
    from xkd_ros.inference.tensorrt import input_sizes, model_axes

    axes = model_axes(tiny)
    inputs = {
        "range_image": np.zeros((6, 64, 128), np.float32),
        "point_features": np.zeros((10, 5), np.float32),
        "point_index": np.zeros((10, 2), np.int64),
        "images": np.zeros((0, 3, 56, 96), np.float32),
        "fused_index": np.zeros(0, np.int64),
        "fused_uv": np.zeros((0, 1, 2), np.float32),
        "fused_view": np.zeros((0, 1), np.int64),
        "fused_visible": np.zeros((0, 1), np.float32),
        "lidar_index": np.arange(10),
        "output_source": np.arange(10),
    }
    assert input_sizes(axes, inputs, "m.onnx") == {"N": 10, "M": 0, "H": 64, "S": 0, "V": 1, "U": 10}
    inputs["output_source"] = np.arange(9)
    with pytest.raises(BackendError, match=r"m.onnx: inputs disagree on the number of points: \[9, 10\]"):
        input_sizes(axes, inputs, "m.onnx")
    inputs["output_source"], inputs["fused_view"] = np.arange(10), np.zeros((0, 2), np.int64)
    with pytest.raises(BackendError, match=r"inputs disagree on the number of camera slots: \[1, 2\]"):
        input_sizes(axes, inputs, "m.onnx")


# --- engine tests: need TensorRT and a CUDA GPU ---------------------------------------------------------


@pytest.fixture(scope="module")
def gpu():
    pytest.importorskip(
        "tensorrt", reason="TensorRT is not installed on this machine: the backend is untested here"
    )
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the TensorRT backend is untested here")


@pytest.fixture(scope="module")
def keyframe_inputs(nuscenes_keyframe):
    from xkd_ros.inference import OnnxRuntimeBackend
    from xkd_ros.inference.metadata import read_metadata
    from xkd_ros.preprocess import PreprocessConfig, prepare_frame

    config = PreprocessConfig.from_dict(read_metadata(MODEL)["preprocess"])
    inputs = prepare_frame(nuscenes_keyframe, config)
    return inputs.feed(OnnxRuntimeBackend(MODEL).input_names)


@pytest.fixture(scope="module")
def reference(keyframe_inputs):
    from xkd_ros.inference import OnnxRuntimeBackend

    return OnnxRuntimeBackend(MODEL, threads=2).infer(keyframe_inputs)


@pytest.mark.parametrize(("precision", "atol", "agree"), [("fp32", 1e-3, 0.999), ("fp16", 5e-2, 0.98)])
def test_tensorrt_matches_onnxruntime(gpu, tmp_path, keyframe_inputs, reference, precision, atol, agree):
    from xkd_ros.inference.tensorrt import TensorRTBackend

    backend = TensorRTBackend(MODEL, precision=precision, points=(1000, 35000, 60000), cache_dir=tmp_path)
    assert backend.output_names == tuple(reference)
    outputs = backend.infer(keyframe_inputs)
    for name, expected in reference.items():
        assert outputs[name].shape == expected.shape
        assert outputs[name].dtype == expected.dtype
    for name in ("confidence", "logits"):
        np.testing.assert_allclose(outputs[name], reference[name], rtol=0, atol=atol, err_msg=name)
    assert (outputs["label"] == reference["label"]).mean() >= agree
    # the second backend loads the cached engine instead of building
    again = TensorRTBackend(MODEL, precision=precision, points=(1000, 35000, 60000), cache_dir=tmp_path)
    assert again.engine_path == backend.engine_path
    np.testing.assert_array_equal(again.infer(keyframe_inputs)["label"], outputs["label"])


def test_tensorrt_takes_any_camera_count_of_its_profile(gpu, tmp_path, nuscenes_keyframe, keyframe_inputs):
    """The keyframe's first camera only, and none: the engine's M axis (0..8) as ONNX Runtime runs it."""
    from xkd_ros.inference import OnnxRuntimeBackend
    from xkd_ros.inference.metadata import read_metadata
    from xkd_ros.inference.tensorrt import TensorRTBackend
    from xkd_ros.preprocess import PreprocessConfig, prepare

    backend = TensorRTBackend(MODEL, precision="fp32", points=(1000, 35000, 60000), cache_dir=tmp_path)
    onnxruntime = OnnxRuntimeBackend(MODEL, threads=2)
    config, frame = PreprocessConfig.from_dict(read_metadata(MODEL)["preprocess"]), nuscenes_keyframe
    for cameras in (1, 0):
        images = {name: frame.images[name] for name in frame.rig.names[:cameras]}
        prepared = prepare(frame.points, frame.channels, images, frame.compensated_rig(), config)
        inputs = prepared.feed(onnxruntime.input_names)
        got, want = backend.infer(inputs), onnxruntime.infer(inputs)
        for name in ("confidence", "logits"):
            np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-3, err_msg=f"{cameras}: {name}")
    small = TensorRTBackend(
        MODEL, precision="fp32", points=(1000, 35000, 60000), cameras=(1, 1, 1), cache_dir=tmp_path
    )
    with pytest.raises(BackendError, match=r"6 cameras is outside the engine profile \[1, 1\]"):
        small.infer(keyframe_inputs)


def test_tensorrt_rebuilds_a_damaged_engine(gpu, tmp_path, keyframe_inputs, reference):
    from xkd_ros.inference.tensorrt import TensorRTBackend

    path = TensorRTBackend(
        MODEL, precision="fp32", points=(1000, 35000, 60000), cache_dir=tmp_path
    ).engine_path
    path.write_bytes(b"not an engine")
    backend = TensorRTBackend(MODEL, precision="fp32", points=(1000, 35000, 60000), cache_dir=tmp_path)
    assert path.read_bytes() != b"not an engine"
    assert (backend.infer(keyframe_inputs)["label"] == reference["label"]).mean() >= 0.999


def test_tensorrt_rejects_points_outside_the_profile(gpu, tmp_path, keyframe_inputs):
    from xkd_ros.inference.tensorrt import TensorRTBackend

    backend = TensorRTBackend(MODEL, precision="fp32", points=(1, 100, 1000), cache_dir=tmp_path)
    with pytest.raises(BackendError, match="outside the engine profile"):
        backend.infer(keyframe_inputs)


def test_calibration_frames_from_npz_and_keyframes(tmp_path, tiny):
    from xkd_ros.inference.tensorrt import calibration_frames

    for i in range(3):
        np.savez(tmp_path / f"{i}.npz", point_features=np.full((4, 5), i, np.float32))
    frames = list(calibration_frames(tmp_path, tiny, frames=2))
    assert [f["point_features"][0, 0] for f in frames] == [0, 1]
    keyframe = REPO / "test/data/nuscenes_demo"
    (frame,) = calibration_frames(keyframe, tiny, frames=5)
    assert frame["images"].shape == (6, 3, 56, 96)
    assert frame["point_uv"].shape == (len(frame["point_features"]), 6, 2)
    assert frame["range_image"].shape == (6, 32, 128)


def test_calibration_inputs_are_fitted_to_the_opt_shape():
    from xkd_ros.inference.tensorrt import _fit_calibration

    axes = {"point_index": ("N", 2), "images": ("M", 2), "range_image": (6, "H")}
    inputs = {
        "point_index": np.arange(6).reshape(3, 2),
        "images": np.zeros((2, 2)),
        "range_image": np.zeros((6, 32)),
    }
    ranges = {"N": (1, 5, 9), "M": (0, 2, 8), "H": (8, 32, 64)}
    grown = _fit_calibration(inputs, axes, ranges)
    np.testing.assert_array_equal(grown["point_index"][:, 0], [0, 2, 4, 0, 2])
    assert _fit_calibration(inputs, axes, {**ranges, "N": (1, 2, 2)})["point_index"].shape == (2, 2)
    assert grown["images"].shape == (2, 2)
    with pytest.raises(BackendError, match="calibration frame: 2 cameras, the profile's opt is 6"):
        _fit_calibration(inputs, axes, {**ranges, "M": (0, 6, 8)})
    with pytest.raises(BackendError, match="calibration frame: 32 rows, the profile's opt is 64"):
        _fit_calibration(inputs, axes, {**ranges, "H": (8, 64, 64)})
