"""The offline pipeline at tiny size: one command trains and exports; resume; DDP; backends agree."""

import csv
import dataclasses
import importlib.util
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO

from xkd_ros.data import open_frames
from xkd_ros.data.synthetic.generator import main as synthesize
from xkd_ros.export import read_metadata, sha256
from xkd_ros.inference import BackendError, choose_backend, create_backend
from xkd_ros.preprocess import MOVED_TO_RIG, PreprocessConfig, prepare_frame
from xkd_ros.train.checkpoint import load_checkpoint, save_checkpoint
from xkd_ros.train.cli import main as xkd_train
from xkd_ros.train.data import PreparedFrames, ShapeBatches, collate, labelled_subset
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
def split16(tmp_path_factory):
    """A second rig: a 16-beam LiDAR and one camera named `front_wide`, same class set."""
    root = tmp_path_factory.mktemp("synth16")
    small = root / "small.yaml"
    small.write_text(
        "camera: {width: 160, height: 90}\n"
        "lidar: {azimuth_steps: 360, beams: 16, elevation_deg: [-15, 15], sensor: velodyne_vlp16}\n"
        "sequence: {frames_per_scene: 3}\n"
        "cameras: [{name: front_wide, yaw_deg: 0, position: [0.5, 0.0, -0.3]}]\n"
    )
    synthesize(
        ["--out", str(root / "split"), "--train", "3", "--val", "1", "--seed", "2", "--config", str(small)]
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
    with pytest.raises(ValueError, match=r"tiny.yaml: data.root: expected str or a non-empty list of them"):
        ExperimentConfig.load(TINY, ["data.root=[out/a, 3]"])
    assert ExperimentConfig.load(TINY, ["data.root=[out/a, out/b]"]).data.roots == ["out/a", "out/b"]
    assert ExperimentConfig.load(TINY).data.roots == ["out/synth_tiny"]


@pytest.mark.parametrize("path", sorted((REPO / "config/train").glob("*.yaml")), ids=lambda p: p.name)
def test_experiment_files_leave_the_sensors_to_the_rig(path):
    """The committed experiments load, and their pre-processing says nothing the rig says."""
    config = ExperimentConfig.load(path)
    assert PreprocessConfig.from_dict(config.preprocess, str(path)).range_width > 0


def test_a_sensor_setting_in_an_experiment_is_refused_naming_the_rig(split, tmp_path):
    with pytest.raises(ValueError, match=r"preprocess\.range_height: .* the rig's now: rig\.lidar\.beams"):
        xkd_train(["--config", str(TINY), "--out", str(tmp_path), "--set", f"data.root={split}",
                   "preprocess.range_height=64"])  # fmt: skip


def test_frames_without_cameras_train_and_validate(split, tmp_path, monkeypatch):
    """Frames with no camera image (M = 0, a LiDAR-only rig) go through both stages and validation."""
    import xkd_ros.train.trainer as trainer

    def without_images(root, **options):
        return [dataclasses.replace(frame, images={}) for frame in open_frames(root, **options)]

    monkeypatch.setattr(trainer, "open_frames", without_images)
    config = ExperimentConfig.load(TINY, [f"data.root={split}", "pretrain.steps=1", "finetune.steps=2"])
    result = trainer.train(config, tmp_path)
    assert 0 <= result["lidar"]["miou"] <= 1
    assert result["deployed"]["miou"] == result["lidar"]["miou"]  # no camera: the LiDAR-only head


def test_shape_batches_keep_each_batch_to_one_shape_and_are_seeded():
    keys = [(32, 6)] * 7 + [(16, 1)] * 4 + [(64, 0)] * 2
    sampler = ShapeBatches(keys, batch_size=3, seed=5)
    first = list(sampler)
    assert len(first) == len(sampler) == 3 + 2 + 1
    assert sorted(i for b in first for i in b) == list(range(len(keys)))  # every frame once an epoch
    assert all(len({keys[i] for i in b}) == 1 and 1 <= len(b) <= 3 for b in first)
    assert list(ShapeBatches(keys, batch_size=3, seed=5)) == first  # the same every run
    sampler.set_epoch(1)
    assert list(sampler) != first
    # under DDP every rank steps as often, and together they cover the epoch
    ranks = [ShapeBatches(keys, 3, seed=5, num_replicas=4, rank=r) for r in range(4)]
    assert {len(list(r)) for r in ranks} == {len(ranks[0])} == {2}
    assert {i for r in ranks for b in r for i in b} == set(range(len(keys)))


def test_training_over_two_rigs(split, split16, tmp_path):
    """One experiment over two roots: a 32-beam six-camera rig and a 16-beam one-camera rig with another
    camera name. Batches keep to one (H, M); the checkpoint says what the model was trained on."""
    preprocess = PreprocessConfig.from_dict(ExperimentConfig.load(TINY).preprocess)
    frames = PreparedFrames(
        [*open_frames(split, split="train"), *open_frames(split16, split="train")], preprocess
    )
    keys = {frames.shape_key(i) for i in range(len(frames))}
    assert keys == {(32, 6), (16, 1)}
    with pytest.raises(ValueError, match="must share the range-image height H"):
        collate([frames[0], frames[len(frames) - 1]])
    roots = f"data.root=[{split}, {split16}]"
    assert xkd_train(["--config", str(TINY), "--out", str(tmp_path), "--set", roots,
                      "pretrain.steps=2", "finetune.steps=3"]) == 0  # fmt: skip
    assert [(r["stage"], int(r["step"])) for r in log_rows(tmp_path)][-1] == ("finetune", 3)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    trained_on = {entry["root"]: entry for entry in state["trained_on"]}
    assert trained_on[str(split16)]["cameras"] == ["front_wide"]
    assert trained_on[str(split16)]["lidar"]["beams"] == 16
    assert trained_on[str(split)]["lidar"]["beams"] == 32
    assert len(trained_on[str(split)]["cameras"]) == 6
    assert not set(MOVED_TO_RIG) & set(state["preprocess"])


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
