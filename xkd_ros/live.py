"""Live evaluation: a running segment_node labels a replayed recording while this process listens.

The ROS glue shared by `xkd-demo` (`make demo`) and `xkd-evaluate --live`; the scoring is offline code
(`xkd_ros.evaluate.score_live`). The processes meet through hand-shakes, never through sleeps:

1. this process joins the node's DDS graph in an rclpy context of its own (`joined`: ROS_DOMAIN_ID is passed
   to rclpy.init, the Fast DDS profile and the discovery range are held in os.environ only while the
   participant is created, then restored);
2. it waits until the node is up: its subscription to the scan topic and its labelled-cloud and total_ms
   publishers are in the graph;
3. it subscribes to those outputs with the reliability the node offers (a reliable reader never matches a
   best-effort writer, and the shipped parameters publish best effort) and waits until they are matched;
4. only then it starts `xkd-replay --wait-for-subscribers`, which waits for the node's inputs and for this
   process's ground-truth subscription, and at the end for the reliable subscribers' acknowledgements;
5. it waits for one labelled cloud per recorded scan: at most a start-up allowance + the recording's
   duration / rate + a per-scan allowance per scan, and once the player is done, until no labelled cloud
   came for one per-scan allowance. Scans without one are reported lost, by index and stamp.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xkd_ros.data.classes import ClassSet
from xkd_ros.ros_env import process_environment

__all__ = [
    "LiveError",
    "LiveResult",
    "Recording",
    "describe_lost",
    "interrupt",
    "joined",
    "offered_qos",
    "run_live",
    "wait_budget",
]

NS_PER_S = 1_000_000_000
STARTUP_S = 60.0  # a node loading its model, and DDS discovery, on a busy 2-core machine
PER_SCAN_S = 10.0  # one scan through decode, inference and publishing: 1.8 s at p90 on a busy 2-core machine
STAMP_TOLERANCE_NS = 1_000  # recorded stamps come back from float seconds: equal to within a microsecond
SPIN_S = 0.05
# Read from the environment when a DDS participant is created (ROS_DOMAIN_ID goes to rclpy.init).
PARTICIPANT_VARIABLES = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE")


class LiveError(RuntimeError):
    """The live run cannot go on; the text says which process or topic failed."""


@dataclass(frozen=True)
class Recording:
    """What is replayed and what comes back: a labelled bag, the topics the node and the listener take from
    it, and the stamps of its scans in order."""

    bag: Path
    scan_topic: str
    label_topic: str | None  # None: a bag without ground truth, nothing to score
    topics: tuple[str, ...]  # played: the scans, the labels, every camera's image and CameraInfo
    stamps: tuple[int, ...]  # ns
    classes: str | None

    @classmethod
    def from_bag(cls, path: str | Path) -> Recording:
        """The recording of a bag `RosbagDataset` reads (its xkd.yaml, else topics found by type)."""
        from xkd_ros.data.messages import stamp_to_ns
        from xkd_ros.data.rosbag import RosbagDataset

        dataset = RosbagDataset(path)
        labels = (dataset.label_topic,) if dataset.label_topic else ()
        cameras = [t for c in dataset.cameras.values() for t in (c.image, c.camera_info)]
        return cls(
            bag=Path(path),
            scan_topic=dataset.lidar_topic,
            label_topic=dataset.label_topic,
            topics=(dataset.lidar_topic, *labels, *cameras),
            stamps=tuple(stamp_to_ns(float(s)) for s in dataset.stamps),
            classes=dataset.classes,
        )

    @property
    def duration_s(self) -> float:
        return (max(self.stamps) - min(self.stamps)) / NS_PER_S if self.stamps else 0.0


def wait_budget(
    recording: Recording, rate: float, startup_s: float = STARTUP_S, per_scan_s: float = PER_SCAN_S
) -> float:
    """Seconds to wait at most for the labelled scans once the replay starts: it scales with the recording."""
    return startup_s + recording.duration_s / rate + per_scan_s * len(recording.stamps)


@dataclass
class LiveResult:
    """What came back: labels by stamp from the node and from the ground truth; the node's total_ms."""

    recording: Recording
    outputs: dict[int, np.ndarray] = field(default_factory=dict)
    truth: dict[int, np.ndarray] = field(default_factory=dict)
    totals: list[float] = field(default_factory=list)

    def lost(self) -> list[tuple[int, int]]:
        """(index, stamp ns) of every recorded scan that has no labelled cloud."""
        return _missing(self.recording.stamps, self.outputs)

    def complete(self) -> bool:
        """Every recorded scan has its labelled cloud and total_ms (published right after the cloud), and
        its ground truth where the bag has labels."""
        if self.lost() or len(self.totals) < len(self.recording.stamps):
            return False
        return self.recording.label_topic is None or not _missing(self.recording.stamps, self.truth)

    def report(self, classes: ClassSet) -> dict:
        """score_live's mIoU, IoU and latency, plus the scans recorded and those lost."""
        from xkd_ros.evaluate import score_live

        return {
            "scans_recorded": len(self.recording.stamps),
            **score_live(self.outputs, self.truth, self.totals, classes),
            "scans_lost": [{"index": i, "stamp_ns": s} for i, s in self.lost()],
        }


def _missing(stamps: Sequence[int], got: Mapping[int, Any]) -> list[tuple[int, int]]:
    """(index, stamp) of the stamps with no key of `got` within STAMP_TOLERANCE_NS."""
    keys = np.array(sorted(got), dtype=np.int64)
    missing = []
    for index, stamp in enumerate(stamps):
        at = int(np.searchsorted(keys, stamp))
        near = keys[max(at - 1, 0) : at + 1]
        if not np.any(np.abs(near - stamp) <= STAMP_TOLERANCE_NS):
            missing.append((index, stamp))
    return missing


def describe_lost(lost: Sequence[tuple[int, int]], recorded: int) -> str:
    """'2 of 16 scans not labelled: #3 (stamp 12.500000000 s), ...' (1-based, as a user counts)."""
    scans = ", ".join(f"#{i + 1} (stamp {s // NS_PER_S}.{s % NS_PER_S:09d} s)" for i, s in lost)
    return f"{len(lost)} of {recorded} scans not labelled: {scans}"


@contextlib.contextmanager
def joined(env: Mapping[str, str], name: str) -> Iterator[tuple[Any, Any]]:
    """(node, executor) in an rclpy context of its own on the graph of `env`, torn down in the order rclpy
    wants (executor, node, context). ROS_DOMAIN_ID goes to rclpy.init; the participant variables are set in
    os.environ only while the participant is created (ros_env.process_environment), so this process's
    environment is unchanged afterwards. Fast DDS reads its profile file once per process, at the first
    participant: a process that joins graphs with different profiles needs a process per profile."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    domain = env.get("ROS_DOMAIN_ID")
    with process_environment({k: env[k] for k in PARTICIPANT_VARIABLES if k in env}):
        rclpy.init(context=context, domain_id=int(domain) if domain else None)
        try:
            node = rclpy.create_node(name, context=context)
        except BaseException:
            rclpy.shutdown(context=context)
            raise
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)


def offered_qos(node: Any, topic: str, depth: int) -> Any:
    """A reader QoS that matches every writer on `topic`: reliable only when all of them offer reliable
    (a reliable reader and a best-effort writer never match); volatile, which matches any durability."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    offered = [info.qos_profile.reliability for info in node.get_publishers_info_by_topic(topic)]
    reliable = bool(offered) and all(r == ReliabilityPolicy.RELIABLE for r in offered)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def interrupt(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop a ROS process as Ctrl-C would (it leaves its DDS graph cleanly); kill it if it is still there
    after `timeout` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _stamp(msg: Any) -> int:
    return msg.header.stamp.sec * NS_PER_S + msg.header.stamp.nanosec


class _Waiter:
    """Spins the executor until a condition holds, failing with a sentence when a process it depends on
    exits or a deadline passes."""

    def __init__(self, executor: Any, node_process: subprocess.Popen | None) -> None:
        self.executor = executor
        self.node_process = node_process

    def check_node(self) -> None:
        if self.node_process is not None and self.node_process.poll() is not None:
            raise LiveError(f"segment_node exited with status {self.node_process.returncode}")

    def until(self, done: Callable[[], bool], seconds: float, failure: Callable[[], str]) -> None:
        deadline = time.monotonic() + seconds
        while not done():
            self.check_node()
            if time.monotonic() >= deadline:
                raise LiveError(failure())
            self.executor.spin_once(timeout_sec=SPIN_S)


def run_live(
    recording: Recording,
    env: Mapping[str, str],
    node_name: str = "segment",
    rate: float = 1.0,
    node_process: subprocess.Popen | None = None,
    startup_s: float = STARTUP_S,
    per_scan_s: float = PER_SCAN_S,
    timeout: float | None = None,
) -> LiveResult:
    """Replay `recording` at `rate` to the running node `node_name` once it and this listener are matched;
    returns what it published. `node_process` (when this process started the node) ends the wait early if it
    exits. `timeout` replaces wait_budget(...) as the longest wait once the replay starts. Raises LiveError
    when the node is not up within `startup_s`, exits, or the player fails."""
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Float64

    from xkd_ros.msgs import read_points

    result = LiveResult(recording)
    expected = len(recording.stamps)
    depth = max(expected, 10)  # a slow listener never loses a labelled cloud to its own queue
    output = f"/{node_name}/output/labeled_cloud"
    total = f"/{node_name}/debug/total_ms"

    def on_output(msg: Any) -> None:
        result.outputs[_stamp(msg)] = read_points(msg, ["label"])["label"].copy()

    def on_truth(msg: Any) -> None:
        result.truth[_stamp(msg)] = read_points(msg, ["label"])["label"].copy()

    with joined(env, "xkd_live_listener") as (node, executor):
        waiter = _Waiter(executor, node_process)
        waiter.until(
            lambda: (
                node.count_subscribers(recording.scan_topic) >= 1
                and bool(node.get_publishers_info_by_topic(output))
                and bool(node.get_publishers_info_by_topic(total))
            ),
            startup_s,
            lambda: (
                f"segment_node {node_name!r} is not up after {startup_s:g} s: "
                + _absent(node, recording.scan_topic, output, total)
            ),
        )
        outputs = node.create_subscription(PointCloud2, output, on_output, offered_qos(node, output, depth))
        totals = node.create_subscription(
            Float64, total, lambda m: result.totals.append(m.data), offered_qos(node, total, depth)
        )
        if recording.label_topic is not None:  # played by xkd-replay: reliable
            node.create_subscription(PointCloud2, recording.label_topic, on_truth, depth)
        waiter.until(
            lambda: outputs.get_publisher_count() >= 1 and totals.get_publisher_count() >= 1,
            startup_s,
            lambda: f"this listener is not matched to {output} and {total} after {startup_s:g} s",
        )
        replay = [
            sys.executable,
            "-m",
            "xkd_ros.replay",
            str(recording.bag),
            "--rate",
            f"{rate:g}",
            "--wait-for-subscribers",
            "--wait-timeout",
            f"{startup_s:g}",
            "--topics",
            *recording.topics,
        ]
        player = subprocess.Popen(replay, env=dict(env))
        try:
            _collect(
                result,
                waiter,
                player,
                timeout or wait_budget(recording, rate, startup_s, per_scan_s),
                per_scan_s,
            )
        finally:
            if player.poll() is None:
                player.terminate()
                player.wait()
    return result


def _absent(node: Any, scan_topic: str, output: str, total: str) -> str:
    """Which of the node's endpoints the graph lacks, as a phrase."""
    missing = []
    if node.count_subscribers(scan_topic) < 1:
        missing.append(f"no subscriber on {scan_topic}")
    missing += [f"no publisher on {t}" for t in (output, total) if not node.get_publishers_info_by_topic(t)]
    return ", ".join(missing)


def _collect(
    result: LiveResult, waiter: _Waiter, player: subprocess.Popen, budget: float, per_scan_s: float
) -> None:
    """Spin until every recorded scan has its labelled cloud and ground truth, the budget is spent, or the
    player is done and nothing came for `per_scan_s` since (the node has nothing more to give)."""
    deadline = time.monotonic() + budget
    quiet_since: float | None = None  # once the player is done: when the last news came
    seen = 0
    while not result.complete():
        now = time.monotonic()
        if now >= deadline:
            return
        code = player.poll()
        if code is not None and code != 0:
            raise LiveError(f"xkd-replay exited with status {code} (its error is above)")
        if code is not None:
            news = len(result.outputs) + len(result.truth)
            if quiet_since is None or news != seen:
                quiet_since, seen = now, news
            if now - quiet_since >= per_scan_s:
                return
        waiter.check_node()
        waiter.executor.spin_once(timeout_sec=SPIN_S)
