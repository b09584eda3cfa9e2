"""Live evaluation: a running segment_node labels a replayed recording while this process listens.

The ROS glue shared by `xkd-demo` (`make demo`) and `xkd-evaluate --live`; the scoring is offline code
(`xkd_ros.evaluate.scoring.score_live`). The processes meet through hand-shakes, never through sleeps:

1. this process joins the node's DDS graph in an rclpy context of its own (`xkd_ros.record.joined`:
   ROS_DOMAIN_ID is passed to rclpy.init, the Fast DDS profile and the discovery range are held in
   os.environ only while the participant is created, then restored);
2. it waits until the node is up: its subscription to the scan topic and its labelled-cloud and total_ms
   publishers are in the graph (with a recording: every output of NODE_OUTPUTS);
3. it subscribes to those outputs with the reliability the node offers (a reliable reader never matches a
   best-effort writer, and the shipped parameters publish best effort) and waits until they are matched;
   with a recording (xkd_ros.record), it also subscribes raw to every output and every played topic;
4. only then it starts `xkd-replay --wait-for-subscribers`, which waits for the node's inputs and for this
   process's ground-truth subscription (with a recording: for two subscribers on every played topic, the
   node or the listener and the recorder), and at the end for the reliable subscribers' acknowledgements;
5. it waits for one labelled cloud and one total_ms per recorded scan, paired by the scan's stamp (the
   debug timings are geometry_msgs/PointStamped with the labelled cloud's header, point.x = ms): at most a
   start-up allowance + the recording's duration / rate + a per-scan allowance per scan, and once the
   player is done, until nothing came for one per-scan allowance. Scans without a labelled cloud are
   reported lost, by index and stamp.

The recording (`record=`) is one rosbag2 mcap that Foxglove and `ros2 bag play` open: the replayed inputs
as the node received them, /tf_static copied from the replayed bag (xkd-replay cannot publish it where
tf2_msgs has no Python package), and everything the node published (NODE_OUTPUTS).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xkd_ros.classes import ClassSet
from xkd_ros.evaluate.scoring import score_live
from xkd_ros.viewers import DEBUG_STAGES

__all__ = [
    "NODE_OUTPUTS",
    "LiveError",
    "LiveResult",
    "Recording",
    "describe_lost",
    "interrupt",
    "offered_qos",
    "run_live",
    "wait_budget",
]

NS_PER_S = 1_000_000_000
STARTUP_S = 60.0  # a node loading its model, and DDS discovery, on a busy 2-core machine
PER_SCAN_S = 10.0  # one scan through decode, inference and publishing: 1.8 s at p90 on a busy 2-core machine
STAMP_TOLERANCE_NS = 1_000  # recorded stamps come back from float seconds: equal to within a microsecond
SPIN_S = 0.05
# segment_node's outputs with one message per labelled scan (the debug ones while debug.publish is on),
# relative to its name.
PER_SCAN_OUTPUTS = (
    "output/labeled_cloud",
    *(f"debug/{stage}_ms" for stage in DEBUG_STAGES),
    "debug/fused_cameras",
)
# Everything segment_node publishes (relative to its name, or absolute): what a live run records.
NODE_OUTPUTS = (*PER_SCAN_OUTPUTS, "output/class_markers", "/diagnostics")
TF_STATIC = "/tf_static"


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
    types: Mapping[str, str] = field(default_factory=dict)  # topic -> message type, every topic of the bag
    counts: Mapping[str, int] = field(default_factory=dict)  # topic -> messages in the bag

    @classmethod
    def from_bag(cls, path: str | Path) -> Recording:
        """The recording of a bag `RosbagDataset` reads (its xkd.yaml, else topics found by type)."""
        from rosbags.rosbag2 import Reader

        from xkd_ros.data.messages import stamp_to_ns
        from xkd_ros.data.rosbag import RosbagDataset

        dataset = RosbagDataset(path)  # a bag that cannot make frames is a RosbagError naming it
        labels = (dataset.label_topic,) if dataset.label_topic else ()
        cameras = [t for c in dataset.cameras.values() for t in (c.image, c.camera_info)]
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        with Reader(folder) as reader:
            types = {connection.topic: connection.msgtype for connection in reader.connections}
            counts = {topic: info.msgcount for topic, info in reader.topics.items()}
        return cls(
            bag=Path(path),
            scan_topic=dataset.lidar_topic,
            label_topic=dataset.label_topic,
            topics=(dataset.lidar_topic, *labels, *cameras),
            stamps=tuple(stamp_to_ns(float(s)) for s in dataset.stamps),
            classes=dataset.classes,
            types=types,
            counts=counts,
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
    """What came back: labels by stamp from the node and from the ground truth; the node's total_ms by the
    stamp of its scan; with a recording, the messages it holds per topic."""

    recording: Recording
    outputs: dict[int, np.ndarray] = field(default_factory=dict)
    truth: dict[int, np.ndarray] = field(default_factory=dict)
    totals: dict[int, float] = field(default_factory=dict)
    recorded: dict[str, int] | None = None

    def lost(self) -> list[tuple[int, int]]:
        """(index, stamp ns) of every recorded scan that has no labelled cloud."""
        return _missing(self.recording.stamps, self.outputs)

    def complete(self) -> bool:
        """Every recorded scan has its labelled cloud and its total_ms (published right after the cloud,
        stamped as it), and its ground truth where the bag has labels."""
        stamps = self.recording.stamps
        if self.lost() or _missing(stamps, self.totals):
            return False
        return self.recording.label_topic is None or not _missing(stamps, self.truth)

    def report(self, classes: ClassSet) -> dict:
        """score_live's mIoU, IoU and latency (the total_ms of the scans the node labelled), the scans
        recorded and those lost; with a recording, its messages per topic."""
        labelled = set(self.outputs)
        totals = [ms for stamp, ms in self.totals.items() if stamp in labelled]
        return {
            "scans_recorded": len(self.recording.stamps),
            **score_live(self.outputs, self.truth, totals, classes),
            "scans_lost": [{"index": i, "stamp_ns": s} for i, s in self.lost()],
            **({} if self.recorded is None else {"session_messages": dict(sorted(self.recorded.items()))}),
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
    record: Path | None = None,
) -> LiveResult:
    """Replay `recording` at `rate` to the running node `node_name` once it and this listener are matched;
    returns what it published. `node_process` (when this process started the node) ends the wait early if it
    exits. `timeout` replaces wait_budget(...) as the longest wait once the replay starts. `record` (a new
    folder) records the session: the node's inputs and all its outputs, in one mcap (xkd_ros.record).
    Raises LiveError when the node is not up within `startup_s`, exits, the player fails or the recording
    cannot be written."""
    from geometry_msgs.msg import PointStamped
    from sensor_msgs.msg import PointCloud2

    from xkd_ros.data.messages import header_ns
    from xkd_ros.msgs import read_points
    from xkd_ros.record import joined

    result = LiveResult(recording)
    expected = len(recording.stamps)
    depth = max(expected, 10)  # a slow listener never loses a labelled cloud to its own queue
    output = f"/{node_name}/output/labeled_cloud"
    total = f"/{node_name}/debug/total_ms"
    required = [output, total]
    if record is not None:
        required += [t if t.startswith("/") else f"/{node_name}/{t}" for t in NODE_OUTPUTS]
        required = list(dict.fromkeys(required))

    def on_output(msg: Any) -> None:
        result.outputs[header_ns(msg.header)] = read_points(msg, ["label"])["label"].copy()

    def on_truth(msg: Any) -> None:
        result.truth[header_ns(msg.header)] = read_points(msg, ["label"])["label"].copy()

    def on_total(msg: Any) -> None:
        result.totals[header_ns(msg.header)] = float(msg.point.x)

    with joined(env, "xkd_live_listener") as (node, executor):
        waiter = _Waiter(executor, node_process)
        waiter.until(
            lambda: (
                node.count_subscribers(recording.scan_topic) >= 1
                and all(node.get_publishers_info_by_topic(t) for t in required)
            ),
            startup_s,
            lambda: (
                f"segment_node {node_name!r} is not up after {startup_s:g} s: "
                + _absent(node, recording.scan_topic, required)
            ),
        )
        outputs = node.create_subscription(PointCloud2, output, on_output, offered_qos(node, output, depth))
        totals = node.create_subscription(PointStamped, total, on_total, offered_qos(node, total, depth))
        if recording.label_topic is not None:  # played by xkd-replay: reliable
            node.create_subscription(PointCloud2, recording.label_topic, on_truth, depth)
        recorder = None if record is None else _start_recorder(node, record, recording, required)
        try:
            # the recorder's subscriptions to the node's outputs (its inputs' publisher is not up yet)
            matched = [
                outputs,
                totals,
                *([] if recorder is None else (recorder.subscriptions[t] for t in required)),
            ]
            waiter.until(
                lambda: all(s.get_publisher_count() >= 1 for s in matched),
                startup_s,
                lambda: (
                    "this listener is not matched to "
                    + ", ".join(s.topic_name for s in matched if s.get_publisher_count() < 1)
                    + f" after {startup_s:g} s"
                ),
            )
            _replay(
                result,
                waiter,
                env,
                recording,
                rate,
                startup_s,
                timeout or wait_budget(recording, rate, startup_s, per_scan_s),
                per_scan_s,
                # the node or the listener, and the recorder, on every played topic
                subscribers=1 if recorder is None else 2,
            )
            if recorder is not None:
                _drain(recorder, result, waiter, node_name, per_scan_s)
        finally:
            if recorder is not None:
                result.recorded = dict(recorder.close())
    return result


def _drain(recorder: Any, result: LiveResult, waiter: _Waiter, node_name: str, seconds: float) -> None:
    """Spin until the recorder has what the listener saw (its callbacks wait in the same executor): every
    played message of the bag, and one message per labelled scan on each per-scan output; at most
    `seconds`. What is still missing then shows in the counts of the report."""
    recording = result.recording
    wanted = {t: recording.counts.get(t, 0) for t in recording.topics}
    wanted |= {f"/{node_name}/{t}": len(result.outputs) for t in PER_SCAN_OUTPUTS}
    deadline = time.monotonic() + seconds
    while any(recorder.counts[t] < n for t, n in wanted.items()) and time.monotonic() < deadline:
        waiter.executor.spin_once(timeout_sec=SPIN_S)


def _start_recorder(node: Any, path: Path, recording: Recording, outputs: Sequence[str]) -> Any:
    """A Recorder of the node's outputs (type and QoS from their publishers), the played topics (their
    types from the bag, the QoS xkd-replay will offer) and /tf_static copied from the bag."""
    from xkd_ros.record import Recorder, RecordError, replay_offer

    try:
        recorder = Recorder(node, path)
    except RecordError as error:
        raise LiveError(f"cannot record the session: {error}") from None
    try:
        for topic in outputs:
            recorder.add(topic)
        for topic in recording.topics:
            recorder.add(topic, recording.types[topic], [replay_offer()])
    except RecordError as error:
        recorder.close()  # what there is stays a readable bag
        raise LiveError(f"cannot record the session: {error}") from None
    if TF_STATIC in recording.types:
        _copy_static(recorder, recording)
    return recorder


def _copy_static(recorder: Any, recording: Recording) -> None:
    """/tf_static as the bag has it (latched), logged now: where the viewers find the cameras' poses."""
    from rosbags.rosbag2 import Reader

    from xkd_ros.record import replay_offer

    folder = recording.bag if recording.bag.is_dir() else recording.bag.parent
    recorder.sink.add(TF_STATIC, recording.types[TF_STATIC], [replay_offer(latched=True)])
    with Reader(folder) as reader:
        connections = [c for c in reader.connections if c.topic == TF_STATIC]
        for _, _, raw in reader.messages(connections=connections):
            recorder.sink.write(TF_STATIC, time.time_ns(), bytes(raw))


def _replay(
    result: LiveResult,
    waiter: _Waiter,
    env: Mapping[str, str],
    recording: Recording,
    rate: float,
    startup_s: float,
    budget: float,
    per_scan_s: float,
    subscribers: int,
) -> None:
    """xkd-replay the recording once `subscribers` are matched on each of its topics; collect what comes."""
    replay = [
        sys.executable,
        "-m",
        "xkd_ros.replay",
        str(recording.bag),
        "--rate",
        f"{rate:g}",
        "--wait-for-subscribers",
        str(subscribers),
        "--wait-timeout",
        f"{startup_s:g}",
        "--topics",
        *recording.topics,
    ]
    player = subprocess.Popen(replay, env=dict(env))
    try:
        _collect(result, waiter, player, budget, per_scan_s)
    finally:
        if player.poll() is None:
            player.terminate()
            player.wait()


def _absent(node: Any, scan_topic: str, outputs: Sequence[str]) -> str:
    """Which of the node's endpoints the graph lacks, as a phrase."""
    missing = []
    if node.count_subscribers(scan_topic) < 1:
        missing.append(f"no subscriber on {scan_topic}")
    missing += [f"no publisher on {t}" for t in outputs if not node.get_publishers_info_by_topic(t)]
    return ", ".join(missing)


def _collect(
    result: LiveResult, waiter: _Waiter, player: subprocess.Popen, budget: float, per_scan_s: float
) -> None:
    """Spin until every recorded scan has its labelled cloud, total_ms and ground truth, the budget is spent,
    or the player is done and nothing came for `per_scan_s` since (the node has nothing more to give)."""
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
            news = len(result.outputs) + len(result.truth) + len(result.totals)
            if quiet_since is None or news != seen:
                quiet_since, seen = now, news
            if now - quiet_since >= per_scan_s:
                return
        waiter.check_node()
        waiter.executor.spin_once(timeout_sec=SPIN_S)
