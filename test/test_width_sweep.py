"""bench/width_sweep.py and config/protocol/width_sweep.yaml: every row of the sweep is a network the trainer
can build, and the Pareto front is the rows no other row beats at no more latency."""

import importlib.util
import sys

import cv2
import pytest
from conftest import REPO

from xkd_ros.model import ModelConfig
from xkd_ros.preprocess import PreprocessConfig
from xkd_ros.train.experiment import ExperimentConfig


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # width_sweep imports these by name; dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_load("timing")
protocol = _load("protocol")
width_sweep = _load("width_sweep")


def test_every_row_of_the_sweep_is_a_valid_network():
    sweep = protocol.Protocol.load(REPO / "config/protocol/width_sweep.yaml")
    assert sweep.reference == sweep.rows[0].name == "default"
    shapes = set()
    for row in sweep.rows:
        overrides = [item.format(root=sweep.data_root, seed=0) for item in (*sweep.common, *row.overrides)]
        experiment = ExperimentConfig.load(REPO / row.config, overrides)
        model = ModelConfig.from_dict(experiment.model)  # raises on a field or value ModelConfig refuses
        preprocess = PreprocessConfig.from_dict(experiment.preprocess)  # image sizes: multiples of 8
        shapes.add((model, preprocess))
    assert len(shapes) == len(sweep.rows), "two rows of the sweep train the same network"


def test_pareto_front_keeps_the_rows_nothing_beats_at_no_more_latency():
    rows = {
        "default": {"ms": 80.0, "miou_matched": 0.52},
        "faster_worse": {"ms": 50.0, "miou_matched": 0.48},
        "slower_worse": {"ms": 90.0, "miou_matched": 0.50},  # dominated by default
        "same_time_worse": {"ms": 80.0, "miou_matched": 0.51},  # ties on latency, loses on mIoU
        "untrained": {"ms": 40.0, "miou_matched": None},  # no mIoU yet: not on the front
    }
    assert width_sweep.pareto(rows) == ["faster_worse", "default"]


def test_plot_draws_scored_and_untrained_rows(tmp_path):
    rows = {
        "default": {"ms": 80.0, "miou_matched": 0.52, "std": 0.04, "seeds": 2},
        "small": {"ms": 50.0, "miou_matched": 0.50, "std": None, "seeds": 1},
        "untrained": {"ms": 60.0, "miou_matched": None, "std": None, "seeds": 0},
    }
    path = tmp_path / "pareto.png"
    width_sweep.plot(rows, ["small", "default"], "default", "sweep", path)
    image = cv2.imread(str(path))
    assert image is not None
    assert image.shape == (640, 1000, 3)
    blue, green, red = image[..., 0].astype(int), image[..., 1].astype(int), image[..., 2].astype(int)
    assert ((red > 200) & (green < 80)).any(), "the reference row's red marker is missing"
    assert ((green > 140) & (red < 80) & (blue < 80)).any(), "the Pareto front's green is missing"


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (47.3, 58.1), (198.0, 402.0), (7.0, 7.5)])
def test_axis_ticks_are_few_and_inside_the_range(low, high):
    ticks = width_sweep._ticks(low, high)
    assert 2 <= len(ticks) <= 9
    assert low <= ticks[0]
    assert ticks[-1] <= high


def test_rows_with_fewer_seeds_are_placed_on_the_reference_seeds():
    reference = {"heads": {"deployed": {"mean": 0.52}}}
    one_lucky_seed = {"mean": 0.56, "vs_reference": {"mean": -0.01}}  # its seed 0 is the reference's best too
    assert width_sweep._matched(one_lucky_seed, reference, is_reference=False) == pytest.approx(0.51)
    assert width_sweep._matched({"mean": 0.52}, reference, is_reference=True) == 0.52
    assert width_sweep._matched({}, reference, is_reference=False) is None
