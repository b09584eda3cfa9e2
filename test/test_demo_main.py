"""The main job over real DDS: recording -> xkd-replay -> segment_node -> what it published, evaluated."""

import json
import os
import random
import signal
import subprocess
import sys

import numpy as np

from xkd_ros.data.messages import stamp_to_ns
from xkd_ros.data.rosbag import write_bag
from xkd_ros.demo import main, node_command, ros_environment
from xkd_ros.evaluate import listen_live


def test_demo_at_small_size(tmp_path, monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(random.randint(100, 200)))
    assert main(["--out", str(tmp_path), "--frames", "3", "--timeout", "120"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["scans_labelled"] == report["scans_recorded"] == 3
    assert 0.2 < report["miou"] <= 1  # the default model on unseen synthetic scans (about 0.58 on 8 of them)
    assert report["node_total_ms"]["p50"] > 0
    assert (tmp_path / "bev.png").is_file()


def test_real_keyframe_bag_through_the_node(tmp_path, nuscenes_keyframe, monkeypatch):
    """The nuScenes keyframe recorded as a bag, replayed, labelled by segment_node: the output is checked."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(random.randint(100, 200)))
    bag = write_bag([nuscenes_keyframe], tmp_path / "bag", image_format="jpeg")
    cameras = nuscenes_keyframe.rig.names
    offsets = [nuscenes_keyframe.image_stamps[c] - nuscenes_keyframe.stamp for c in cameras]
    env = ros_environment()
    command = node_command(bag / "rig.yaml", cameras, offsets)
    node = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        replay = [sys.executable, "-m", "xkd_ros.replay", str(bag), "--delay", "3"]
        outputs, _, totals = listen_live(env, replay, expected=1, timeout=60)
    finally:
        node.send_signal(signal.SIGINT)
        log = node.communicate(timeout=15)[0]
    assert list(outputs) == [stamp_to_ns(nuscenes_keyframe.stamp)], log[-2000:]
    labels = outputs[stamp_to_ns(nuscenes_keyframe.stamp)]
    assert labels.shape == (34688,)
    assert np.all((labels < 14) | (labels == 255))
    assert totals
    assert os.environ["ROS_DOMAIN_ID"] == env["ROS_DOMAIN_ID"]


def test_evaluate_live_mode_scores_a_running_node(tmp_path, monkeypatch):
    """`xkd-evaluate --live BAG`: replays a labelled bag while segment_node runs, scores what it published."""
    from xkd_ros.data.synthetic import SyntheticGenerator, load_config
    from xkd_ros.evaluate import main as evaluate_main

    monkeypatch.setenv("ROS_DOMAIN_ID", str(random.randint(100, 200)))
    config = load_config(
        overrides={"camera": {"width": 240, "height": 135}, "sequence": {"frames_per_scene": 2}}
    )
    generator = SyntheticGenerator(config, seed=5)
    drive = [generator.sample("live", index).frame for index in range(2)]
    bag = write_bag(drive, tmp_path / "bag", image_format="jpeg")
    cameras = drive[0].rig.names
    offsets = [float(np.mean([f.image_stamps[c] - f.stamp for f in drive])) for c in cameras]
    env = ros_environment()
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", env["FASTDDS_DEFAULT_PROFILES_FILE"])
    command = node_command(bag / "rig.yaml", cameras, offsets)
    node = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        code = evaluate_main([str(bag), "--live", "--out", str(tmp_path / "eval"), "--timeout", "60"])
    finally:
        node.send_signal(signal.SIGINT)
        log = node.communicate(timeout=15)[0]
    assert code == 0, log[-2000:]
    report = json.loads((tmp_path / "eval/live_report.json").read_text())
    assert report["scans_labelled"] == report["scans_with_ground_truth"] == 2
    assert 0 < report["miou"] <= 1
