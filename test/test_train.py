"""The offline pipeline at tiny size: one command trains and exports; resume; DDP; backends agree."""

import csv
import importlib.util
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO

from xkd_ros.data.synthetic.generator import main as synthesize
from xkd_ros.export import read_metadata, sha256
from xkd_ros.inference import BackendError, choose_backend, create_backend
from xkd_ros.preprocess import PreprocessConfig, prepare_frame
from xkd_ros.train.checkpoint import load_checkpoint, save_checkpoint
from xkd_ros.train.cli import main as xkd_train
from xkd_ros.train.data import labelled_subset
from xkd_ros.train.experiment import ExperimentConfig

TINY = REPO / "config/train/tiny.yaml"


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    small = root / "small.yaml"
    small.write_text(
        "camera: {width: 160, height: 90}\nlidar: {azimuth_steps: 360}\nsequence: {frames_per_scene: 3}\n"
    )
    synthesize(
        ["--out", str(root / "split"), "--train", "4", "--val", "2", "--seed", "1", "--config", str(small)]
    )
    return root / "split"


@pytest.fixture(scope="module")
def trained(split, tmp_path_factory):
    """`xkd-train --config config/train/tiny.yaml --export model.onnx`: the one command, at tiny size."""
    out = tmp_path_factory.mktemp("run")
    assert xkd_train(["--config", str(TINY), "--out", str(out), "--set", f"data.root={split}",
                      "--export", str(out / "model.onnx")]) == 0  # fmt: skip
    return out


def log_rows(out):
    with (out / "log.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_one_command_trains_both_stages_and_exports(trained):
    rows = log_rows(trained)
    assert [(r["stage"], int(r["step"])) for r in rows] == [("pretrain", s) for s in (1, 2, 3)] + [
        ("finetune", s) for s in (1, 2, 3, 4)
    ]
    assert all(float(r["info_nce"]) > 0 for r in rows[:3])
    assert all(float(r["distill"]) >= 0 and float(r["fused_seg"]) > 0 for r in rows[3:])
    state = load_checkpoint(trained / "checkpoint.pt")
    assert (state["stage"], state["step"]) == ("finetune", 4)
    metadata = read_metadata(trained / "model.onnx")
    assert metadata["classes"] == "synthetic"
    assert metadata["preprocess"]["range_width"] == 128
    card = (trained / "model.md").read_text()  # the model card beside the model
    assert f"sha256 `{sha256(trained / 'model.onnx')}`" in card
    assert "| **mIoU** |" in card


@pytest.mark.parametrize("sample", ["nuscenes_keyframe", "rellis_frame"])
def test_onnx_runtime_matches_torch_on_real_frames(trained, sample, request):
    frame = request.getfixturevalue(sample)
    onnx_backend = create_backend("onnxruntime", trained / "model.onnx")
    torch_backend = create_backend("torch", trained / "best.pt")
    preprocess = PreprocessConfig.from_dict(read_metadata(trained / "model.onnx")["preprocess"])
    inputs = prepare_frame(frame, preprocess).as_dict()
    got, want = onnx_backend.infer(inputs), torch_backend.infer(inputs)
    assert got["label"].shape == (len(frame.points),)
    for name in ("fused_logits", "lidar_logits", "confidence"):
        assert np.abs(got[name] - want[name]).max() < 1e-3, name
    assert got["label"].max() < 14


def test_training_resumes_where_it_stopped(split, tmp_path):
    args = ["--config", str(TINY), "--out", str(tmp_path), "--set", f"data.root={split}", "pretrain.steps=0"]
    xkd_train([*args, "finetune.steps=2"])
    xkd_train([*args, "finetune.steps=4"])  # a longer run in the same folder continues from step 2
    assert [int(r["step"]) for r in log_rows(tmp_path)] == [1, 2, 3, 4]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4


def test_lidar_only_baseline_skips_pretraining(split, tmp_path):
    xkd_train(
        [
            "--config",
            str(TINY),
            "--out",
            str(tmp_path),
            "--set",
            f"data.root={split}",
            "model.use_images=false",
        ]
    )
    rows = log_rows(tmp_path)
    assert {r["stage"] for r in rows} == {"finetune"}
    assert all(r["fused_seg"] == "" and r["distill"] == "" for r in rows)


def test_two_processes_train_with_gloo(split, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
               "127.0.0.1", "--master_port", str(port), "-m", "xkd_ros.train.cli", "--config", str(TINY),
               "--out", str(tmp_path), "--set", f"data.root={split}"]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [int(r["step"]) for r in log_rows(tmp_path)] == [1, 2, 3, 1, 2, 3, 4]  # rank 0 writes alone
    assert (tmp_path / "metrics.json").is_file()


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"tiny.yaml: finetune: unknown keys \['distil_weight'\]"):
        ExperimentConfig.load(TINY, ["finetune.distil_weight=1"])
    with pytest.raises(ValueError, match=r"tiny.yaml: pretrain.steps: expected int"):
        ExperimentConfig.load(TINY, ["pretrain.steps=many"])


def test_label_fraction_keeps_a_fixed_share():
    mask = labelled_subset(100, 0.1, seed=3)
    assert mask.sum() == 10
    assert np.array_equal(mask, labelled_subset(100, 0.1, seed=3))
    assert labelled_subset(5, 0.01, seed=0).sum() == 1  # never none
    with pytest.raises(ValueError, match="label_fraction"):
        labelled_subset(5, 0.0, seed=0)


class Payload:
    """Not plain data: a checkpoint holding it must not load."""


def test_checkpoints_load_plain_data_only(tmp_path):
    save_checkpoint({"weights": torch.ones(2)}, tmp_path / "ok.pt")
    assert load_checkpoint(tmp_path / "ok.pt")["weights"].tolist() == [1.0, 1.0]
    torch.save({"payload": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil\.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


def test_auto_backend_says_what_it_chose_and_why():
    kind, reason = choose_backend("auto")
    if importlib.util.find_spec("tensorrt") is None:
        assert (kind, reason) == ("onnxruntime", "auto: tensorrt is not installed")
    assert choose_backend("torch") == ("torch", "set by the backend parameter")


def test_backend_errors_name_the_problem(trained, tmp_path):
    with pytest.raises(BackendError, match="'openvino' is not one of"):
        create_backend("openvino", trained / "model.onnx")
    with pytest.raises(BackendError, match="no such ONNX model"):
        create_backend("onnxruntime", tmp_path / "missing.onnx")
    backend = create_backend("onnxruntime", trained / "model.onnx")
    wrong = {
        "range_image": np.zeros((6, 32, 128), np.float32),
        "point_features": np.zeros((3, 5), np.float32),
    }
    wrong["point_index"] = np.zeros((3, 2), np.int32)
    with pytest.raises(BackendError, match="input 'point_index' must be 2-d int64, got 2-d int32"):
        backend.infer(wrong)
