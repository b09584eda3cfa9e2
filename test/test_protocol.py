"""bench/protocol.py: the statistics docs/results.md rests on (means, sample std, paired 95 % intervals)."""

import importlib.util
import json
import math
import sys

import pytest
from conftest import REPO

spec = importlib.util.spec_from_file_location("protocol", REPO / "bench" / "protocol.py")
protocol = importlib.util.module_from_spec(spec)
sys.modules["protocol"] = protocol  # its dataclasses look their module up there
spec.loader.exec_module(protocol)


def _write_protocol(tmp_path, baseline="lidar_only"):
    path = tmp_path / "p.yaml"
    path.write_text(
        f"name: p\nout: {tmp_path / 'out'}\nseeds: [0, 1, 2]\ndata: {{root: {tmp_path / 'data'}}}\n"
        f"baseline: {baseline}\nreference: fusion\n"
        "rows:\n  - {name: lidar_only, config: a.yaml}\n  - {name: fusion, config: b.yaml}\n"
        "  - {name: better, config: b.yaml, set: ['init.checkpoint=x/seed{seed}/best.pt']}\n"
    )
    return path


def _metrics(out, row, seed, deployed=None, lidar=0.5):
    folder = out / row / f"seed{seed}"
    folder.mkdir(parents=True)
    test = {"lidar": {"miou": lidar, "iou": {"road": lidar}}}
    if deployed is not None:
        test["deployed"] = {"miou": deployed, "iou": {"road": deployed}}
    (folder / "metrics.json").write_text(json.dumps({"test": test, "test_step": 100, "training_seconds": 60}))


def test_summary_means_stds_and_paired_intervals(tmp_path):
    config = protocol.Protocol.load(_write_protocol(tmp_path))
    assert config.rows[2].overrides == ("init.checkpoint=x/seed{seed}/best.pt",)  # filled in per run
    base, fusion, better = [0.50, 0.40, 0.45], [0.52, 0.43, 0.46], [0.60, 0.52, 0.55]
    for seed in range(3):
        _metrics(config.out, "lidar_only", seed, lidar=base[seed])
        _metrics(config.out, "fusion", seed, deployed=fusion[seed])
        _metrics(config.out, "better", seed, deployed=better[seed])
    rows = protocol.summarise(config)["rows"]
    entry = rows["fusion"]["heads"]["deployed"]
    assert entry["mean"] == pytest.approx(sum(fusion) / 3)
    assert entry["std"] == pytest.approx(0.0458257569, abs=1e-8)  # sample std (n - 1)
    paired = entry["vs_baseline"]  # per seed 0.02, 0.03, 0.01
    assert paired["mean"] == pytest.approx(0.02)
    assert paired["ci95"] == pytest.approx(4.303 * 0.01 / math.sqrt(3), rel=1e-3)
    reference = rows["better"]["heads"]["deployed"]["vs_reference"]  # per seed 0.08, 0.09, 0.09
    assert reference["mean"] == pytest.approx(0.08666666, abs=1e-6)
    text = protocol.markdown(protocol.summarise(config), config)
    assert "+2.0 +- 2.5 (within noise)" in text  # 0.02 inside its half-width of 0.0248
    assert "+8.7 +- 1.4 (resolved)" in text


def test_a_difference_inside_its_interval_is_within_noise(tmp_path):
    config = protocol.Protocol.load(_write_protocol(tmp_path))
    for seed, (base, fused) in enumerate([(0.50, 0.58), (0.40, 0.38), (0.45, 0.47)]):
        _metrics(config.out, "lidar_only", seed, lidar=base)
        _metrics(config.out, "fusion", seed, deployed=fused)
    text = protocol.markdown(protocol.summarise(config), config)
    assert "(within noise)" in text
    assert "(resolved)" not in text


def test_a_protocol_naming_a_missing_baseline_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="baseline 'nope' is not one of the rows"):
        protocol.Protocol.load(_write_protocol(tmp_path, baseline="nope"))
    assert protocol.main([str(tmp_path / "missing.yaml")]) == 2
