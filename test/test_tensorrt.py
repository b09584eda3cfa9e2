"""TensorRT backend: the engine cache and the missing-tensorrt error run everywhere; the engine tests
need TensorRT and a CUDA GPU and are skipped (with the reason) where those are missing."""

import dataclasses
import json
import sys

import numpy as np
import pytest
from conftest import REPO

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
    ],
)
def test_key_digest_changes_with_every_field(field, value):
    changed = dataclasses.replace(KEY, **{field: value})
    assert changed.digest() != KEY.digest()
    assert engine_path("/c", changed) != engine_path("/c", KEY)


def test_key_digest_is_stable():
    assert KEY.digest() == dataclasses.replace(KEY, profile=[1000, 35000, 140000]).digest()
    assert len(KEY.digest()) == 16
    assert KEY.digest() in engine_path("/c", KEY).name


@pytest.mark.parametrize(
    ("field", "value"), [("precision", "bf16"), ("profile", (0, 1, 2)), ("profile", (10, 5, 20))]
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
    from xkd_ros.export import read_metadata
    from xkd_ros.preprocess import PreprocessConfig, prepare_frame

    config = PreprocessConfig.from_dict(read_metadata(MODEL)["preprocess"])
    return prepare_frame(nuscenes_keyframe, config).as_dict()


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
    for name in ("confidence", "fused_logits", "lidar_logits"):
        np.testing.assert_allclose(outputs[name], reference[name], rtol=0, atol=atol, err_msg=name)
    assert (outputs["label"] == reference["label"]).mean() >= agree
    # the second backend loads the cached engine instead of building
    again = TensorRTBackend(MODEL, precision=precision, points=(1000, 35000, 60000), cache_dir=tmp_path)
    assert again.engine_path == backend.engine_path
    np.testing.assert_array_equal(again.infer(keyframe_inputs)["label"], outputs["label"])


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


def test_calibration_frames_from_npz_and_keyframes(tmp_path):
    from xkd_ros.inference.tensorrt import calibration_frames

    for i in range(3):
        np.savez(tmp_path / f"{i}.npz", point_features=np.full((4, 5), i, np.float32))
    frames = list(calibration_frames(tmp_path, MODEL, frames=2))
    assert [f["point_features"][0, 0] for f in frames] == [0, 1]
    keyframe = REPO / "test/data/nuscenes_demo"
    (frame,) = calibration_frames(keyframe, MODEL, frames=5)
    assert frame["images"].shape == (6, 3, 136, 240)
    assert frame["point_uv"].shape == (len(frame["point_features"]), 6, 2)


def test_calibration_inputs_are_fitted_to_the_opt_point_count():
    from xkd_ros.inference.tensorrt import _fit_points

    inputs = {"point_index": np.arange(6).reshape(3, 2), "images": np.zeros((2, 2))}
    grown = _fit_points(inputs, {"point_index"}, 5)
    np.testing.assert_array_equal(grown["point_index"][:, 0], [0, 2, 4, 0, 2])
    assert _fit_points(inputs, {"point_index"}, 2)["point_index"].shape == (2, 2)
    assert grown["images"].shape == (2, 2)
