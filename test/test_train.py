"""The offline pipeline at tiny size: one command trains and exports; resume; DDP; backends agree."""

import csv
import dataclasses
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO

from xkd_ros.classes import IGNORE_INDEX
from xkd_ros.data import open_frames
from xkd_ros.data.synthetic.generator import main as synthesize
from xkd_ros.inference import BackendError, choose_backend, create_backend
from xkd_ros.inference.metadata import read_metadata, sha256
from xkd_ros.model import ModelConfig, build_model
from xkd_ros.model.checkpoint import load_checkpoint, save_checkpoint
from xkd_ros.preprocess import MOVED_TO_RIG, PreprocessConfig, prepare_frame
from xkd_ros.train.cli import main as xkd_train
from xkd_ros.train.data import PreparedFrames, ShapeBatches, collate, labelled_subset
from xkd_ros.train.experiment import ExperimentConfig
from xkd_ros.train.trainer import Trainer

TINY = REPO / "config/train/tiny.yaml"


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    small = root / "small.yaml"
    small.write_text(
        "camera: {width: 160, height: 90}\nlidar: {azimuth_steps: 360}\nsequence: {frames_per_scene: 3}\n"
    )
    synthesize(
        ["--out", str(root / "split"), "--train", "4", "--val", "2", "--test", "2", "--seed", "1",
         "--config", str(small)]
    )  # fmt: skip
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
    inputs = prepare_frame(frame, preprocess).feed(onnx_backend.input_names)
    got, want = onnx_backend.infer(inputs), torch_backend.infer(inputs)
    assert got["label"].shape == (len(frame.points),)
    for name in ("logits", "confidence"):
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


def test_a_sensor_setting_in_an_experiment_is_refused_naming_the_rig(split, tmp_path, capsys):
    code = xkd_train(["--config", str(TINY), "--out", str(tmp_path), "--set", f"data.root={split}",
                      "preprocess.range_height=64"])  # fmt: skip
    error = capsys.readouterr().err
    assert code == 2
    assert re.search(r"preprocess\.range_height: .* the rig's now: rig\.lidar\.beams", error), error
    assert "Traceback" not in error


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


# ---- issue 12: test split, augmentation, unlabelled distillation, teacher KD, superpixels, init, sizes ----


def test_the_test_split_is_scored_once_from_best_pt(split, tmp_path):
    """Selection on validation, the score on the test split: metrics.json says both, and which step."""
    assert xkd_train(["--config", str(TINY), "--out", str(tmp_path), "--set", f"data.root={split}",
                      "pretrain.steps=1", "data.test={split: test}"]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    best = load_checkpoint(tmp_path / "best.pt")
    assert metrics["test_step"] == metrics["best"]["step"] == best["step"]
    assert metrics["best"]["deployed"] == best["validation"]["deployed"]
    assert metrics["last"]["step"] == 4
    assert metrics["last"]["deployed"] == metrics["deployed"]  # the validation keys stay as they were
    assert set(metrics["test"]) == {"lidar", "fused", "deployed"}
    assert list(metrics["test_per_root"]) == [str(split)]
    assert metrics["test_per_root"][str(split)] == metrics["test"]  # one root: the same
    assert metrics["training_seconds"] > 0


def test_the_test_score_comes_from_best_pt_not_the_last_weights(split, tmp_path):
    import xkd_ros.train.trainer as trainer

    config = ExperimentConfig.load(
        TINY, [f"data.root={split}", "pretrain.steps=0", "finetune.steps=2", "data.test={split: val}"]
    )
    run = trainer.Trainer(config, tmp_path)
    run.fit()
    other = build_model(run.model_config)  # weights no step produced, written as if selected at step 99
    save_checkpoint({**run._state(), "model": other.state_dict(), "step": 99}, tmp_path / trainer.BEST)
    result = run.test()
    assert result["test_step"] == 99
    data = run.test_data[str(split)]
    assert result["test"] == run._scores(run._confusions(other, data))
    assert result["test"] != run._scores(run._confusions(run.model, data))


def test_a_root_without_test_frames_is_an_error_naming_it(split, tmp_path):
    config = ExperimentConfig.load(TINY, [f"data.root={split}", "data.test={split: nowhere}"])
    with pytest.raises((ValueError, FileNotFoundError), match=str(split)):
        Trainer(config, tmp_path)


def test_augmented_unlabelled_training_runs_the_label_free_losses_on_unlabelled_frames(
    split, tmp_path, monkeypatch
):
    """finetune.unlabelled_batches: each step also draws frames without labels, on which only the
    distillation runs (logged as unlabelled_distill); augmentation is on for all training batches."""
    seen = []
    original = Trainer._unlabelled_terms

    def spy(self, batches):
        seen.extend(batch["labels"] for batch in batches)
        return original(self, batches)

    monkeypatch.setattr(Trainer, "_unlabelled_terms", spy)
    assert xkd_train(["--config", str(TINY), "--out", str(tmp_path), "--set", f"data.root={split}",
                      "finetune.unlabelled_batches=1", "augment.rotate=true", "augment.flip=true",
                      "augment.scale=[0.95, 1.05]", "augment.point_dropout=0.1", "augment.image_crop=0.8",
                      "augment.color_jitter=0.2"]) == 0  # fmt: skip
    rows = [r for r in log_rows(tmp_path) if r["stage"] == "finetune"]
    assert len(rows) == 4
    assert all(float(r["unlabelled_distill"]) > 0 for r in rows)
    assert len(seen) == 4
    assert all((labels == IGNORE_INDEX).all() for labels in seen)  # frames without labels only
    with pytest.raises(ValueError, match=r"finetune\.unlabelled_batches: 1 but every training frame"):
        Trainer(ExperimentConfig.load(TINY, [f"data.root={split}", "data.label_fraction=1",
                                             "finetune.unlabelled_batches=1"]), tmp_path / "x")  # fmt: skip


def test_augmentation_draws_repeat_per_step_and_differ_between_steps(split, tmp_path):
    config = ExperimentConfig.load(
        TINY, [f"data.root={split}", "augment.rotate=true", "augment.point_dropout=0.2"]
    )
    run = Trainer(config, tmp_path)
    items = [run.train_data[0]]
    first, again = run._batch(items, "finetune", 3, 0), run._batch(items, "finetune", 3, 0)
    later = run._batch(items, "finetune", 4, 0)
    assert torch.equal(first["point_features"], again["point_features"])
    assert first["point_features"].shape != later["point_features"].shape or not torch.equal(
        first["point_features"], later["point_features"]
    )
    plain = Trainer(ExperimentConfig.load(TINY, [f"data.root={split}"]), tmp_path / "plain")
    assert torch.equal(plain._batch(items, "finetune", 3, 0)["point_features"],
                       torch.from_numpy(items[0].inputs.point_features))  # fmt: skip
    assert not run.val_data.superpixels
    assert run.val_data.teacher is None


class FakeTeacher:
    """A frozen teacher stand-in: class = 1 where the point is high, else 0 (3 classes), on seen points."""

    NUM_CLASSES = 3
    fingerprint = "fake-1"
    calls = 0

    def point_targets(self, images, point_uv, point_visible):
        FakeTeacher.calls += 1
        seen = (point_visible > 0).any(1)
        probabilities = np.full((len(point_uv), 3), 0.05, dtype=np.float16)
        probabilities[:, 0] = np.where(point_uv[:, 0, 1] < 0, 0.9, 0.05)
        probabilities[:, 1] = 1 - probabilities[:, 0] - 0.05
        return probabilities, seen


def test_teacher_targets_are_distilled_in_both_stages_and_cached(split, tmp_path, monkeypatch):
    import xkd_ros.train.trainer as trainer

    monkeypatch.setattr(trainer, "build_teacher", lambda config: FakeTeacher())
    FakeTeacher.calls = 0
    args = ["--config", str(TINY), "--set", f"data.root={split}", "teacher.kind=espnet_cityscapes",
            "finetune.unlabelled_batches=1", "pretrain.steps=2", "finetune.steps=2"]  # fmt: skip
    assert xkd_train([*args, "--out", str(tmp_path / "a")]) == 0
    rows = log_rows(tmp_path / "a")
    assert all(float(r["teacher_kd"]) > 0 for r in rows)  # both stages
    assert all(float(r["unlabelled_teacher_kd"]) > 0 for r in rows if r["stage"] == "finetune")
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["teacher_targets"]["computed"] == FakeTeacher.calls == 4  # every training frame once
    assert load_checkpoint(tmp_path / "a" / "best.pt")["model_config"]["teacher_classes"] == 3
    cache = tmp_path / ".teacher_cache" / "fake-1"
    assert len(list(cache.glob("*.npz"))) == 4
    assert xkd_train([*args, "--out", str(tmp_path / "b")]) == 0  # another run (seed, row): from the cache
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert (metrics["teacher_targets"]["computed"], metrics["teacher_targets"]["cached"]) == (0, 4)
    assert FakeTeacher.calls == 4


def test_superpixel_pairs_pretrain(split, tmp_path):
    assert xkd_train(["--config", str(TINY), "--out", str(tmp_path), "--set", f"data.root={split}",
                      "pretrain.pairs=superpixel", "pretrain.superpixels=30", "pretrain.steps=2",
                      "data.max_train_frames=2", "finetune.steps=1"]) == 0  # fmt: skip
    rows = [r for r in log_rows(tmp_path) if r["stage"] == "pretrain"]
    assert len(rows) == 2
    assert all(float(r["superpixel_nce"]) > 0 and r["info_nce"] == "" for r in rows)


def test_init_checkpoint_loads_matching_weights(trained, split, tmp_path):
    args = ["--config", str(TINY), "--out", str(tmp_path), "--set", f"data.root={split}", "pretrain.steps=0",
            "finetune.steps=1", "finetune.lr=0", "finetune.weight_decay=0",
            f"init.checkpoint={trained / 'best.pt'}"]  # fmt: skip
    assert xkd_train(args) == 0
    report = json.loads((tmp_path / "metrics.json").read_text())["init"]
    assert report["loaded"] == report["of"] > 0
    assert report["reinitialised"] == []
    source = load_checkpoint(trained / "best.pt")["model"]
    started = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    convolutions = [name for name in source if name.endswith("weight") and source[name].ndim == 4]
    assert all(torch.equal(started[name], source[name]) for name in convolutions)  # lr 0: as loaded


def test_load_matching_reinitialises_heads_of_another_class_count(trained):
    from xkd_ros.train.trainer import load_matching

    state = load_checkpoint(trained / "best.pt")
    config = ModelConfig.from_dict({**state["model_config"], "num_classes": 19})
    model = build_model(config)
    fresh = {name: value.clone() for name, value in model.state_dict().items()}
    report = load_matching(model, state["model"], "best.pt")
    changed = {name for name, value in model.state_dict().items() if not torch.equal(value, fresh[name])}
    assert report["reinitialised"]
    assert all("head" in name for name in report["reinitialised"])
    assert not changed & set(report["reinitialised"])  # the heads keep their fresh weights
    assert report["loaded"] == report["of"] - len(report["reinitialised"])
    assert set(report["unused"]) == set(report["reinitialised"])


def test_a_fresh_run_loads_the_pretrained_backbone_and_a_resumed_one_does_not(split, tmp_path, monkeypatch):
    import xkd_ros.model.backbones as backbones

    calls = []
    monkeypatch.setattr(backbones, "load_backbone_weights", lambda model: calls.append(model) or "loaded 7")
    args = ["--config", str(TINY), "--out", str(tmp_path), "--set", f"data.root={split}", "pretrain.steps=0",
            "model.image_backbone=efficientnet_lite0"]  # fmt: skip
    assert xkd_train([*args, "finetune.steps=1"]) == 0
    assert len(calls) == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["backbone"] == "loaded 7"
    assert xkd_train([*args, "finetune.steps=2"]) == 0  # resumed: the checkpoint's weights, not ImageNet's
    assert len(calls) == 1


def test_a_pretrained_backbone_refuses_another_image_normalisation(split, tmp_path, capsys):
    args = ["--config", str(TINY), "--out", str(tmp_path), "--set", f"data.root={split}",
            "model.image_backbone=efficientnet_lite0", "preprocess.mean=[0.5, 0.5, 0.5]"]  # fmt: skip
    assert xkd_train(args) == 2
    error = capsys.readouterr().err
    assert "model.image_backbone efficientnet_lite0 needs preprocess mean/std = ImageNet's" in error
    assert "Traceback" not in error


def test_size_switch_applies_its_overrides_before_set(tmp_path, capsys):
    path = tmp_path / "sized.yaml"
    path.write_text(TINY.read_text() + "sizes: {full: [finetune.steps=20000, pretrain.steps=5000]}\n")
    config = ExperimentConfig.load(path, ["pretrain.steps=7"], size="full")
    assert (config.finetune.steps, config.pretrain.steps) == (20000, 7)  # --set wins over the size
    assert ExperimentConfig.load(path).finetune.steps == 4  # without --size: the file's own scale
    with pytest.raises(ValueError, match=r"no size 'huge' in its sizes \(there are: \['full'\]\)"):
        ExperimentConfig.load(path, size="huge")
    with pytest.raises(SystemExit):
        xkd_train(["--config", str(path), "--size", "huge"])
    assert "no size 'huge'" in capsys.readouterr().err


def test_new_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"pretrain\.pairs: expected one of"):
        ExperimentConfig.load(TINY, ["pretrain.pairs=voxel"])
    with pytest.raises(ValueError, match=r"teacher\.kind: expected one of"):
        ExperimentConfig.load(TINY, ["teacher.kind=dino"])
    with pytest.raises(ValueError, match=r"finetune\.unlabelled_batches: must be >= 0"):
        ExperimentConfig.load(TINY, ["finetune.unlabelled_batches=-1"])
    defaults = ExperimentConfig.load(TINY)  # today's configs mean what they did
    assert (defaults.pretrain.pairs, defaults.teacher.kind, defaults.finetune.unlabelled_batches) == (
        "pixel", "none", 0)  # fmt: skip
    assert not defaults.augment.active
    assert defaults.data.test == {}
    assert defaults.init.checkpoint == ""
