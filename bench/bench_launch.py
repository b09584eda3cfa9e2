"""A ROS user's session timed with the real tools: `ros2 launch` until the node listens, a recording replayed
until the first labelled cloud, and `ros2 param get|set` against the running node.

Run: `.venv/bin/python bench/bench_launch.py [--runs 3] [--bag BAG] [--rate 5] [--json out/bench/launch.json]`
(needs ../shared/ros2-launch installed in the venv, as `make test` does).

Once: the package is built by `colcon build --packages-select xkd_ros` into a temporary workspace (timed), its
`install/setup.bash` sourced over the venv (the ROS underlay here) on a ROS_DOMAIN_ID reserved for the run
(xkd_ros.ros_env, discovery on this machine only), the ros2 daemon started, and this process joins the graph
with a subscription to the labelled clouds. The recording is `--bag` (default out/demo/recording, written by
`make demo`; made with xkd_ros.demo.record when absent): a synthetic drive with six JPEG cameras; the param
file names its rig, `camera_transport: compressed` and the cameras' mean offsets.

Each run, a fresh `ros2 launch xkd_ros segment.launch.py param_file:=... pointcloud_topic:=/lidar/points
camera_topic:=/cameras/{camera}/image_raw`, timed from its start by polling the graph (no fixed waits):
(a) segment_node's process started (/proc), its start-up log line (the last thing it does: rclpy up, model
loaded, subscribed; its own stamp), its input subscription seen in the graph here, and its labelled-cloud
publisher matched here; `ros2 param get /segment sync.timeout` and `ros2 param set /segment sync.timeout 0.2`
with the daemon (as a user types them) and with `--no-daemon --timeout 30`, the node idle (and once
`--no-daemon` with the default --timeout of 1 s: found or not); (b) `ros2 run xkd_ros xkd-replay BAG
--loop --rate R --wait-for-subscribers` started: its subscribers matched (its log line), then the first
labelled cloud here, with the node's own total_ms of that scan (~/debug/total_ms, paired by stamp) against
its median over the later ones; (c) the same param calls while the node labels the looping recording.
Then Ctrl-C to the replay and the launch (its exit status is reported). Prints medians and min-max over the
runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from timing import write_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "test"))  # the tests' ROS 2 user tooling
from ros2_stack import colcon_build, copy_package, daemons, missing, start, stop, user_shell

from xkd_ros.data.messages import header_ns
from xkd_ros.record import joined
from xkd_ros.ros_env import domain_environment

ROOT = Path(__file__).resolve().parent.parent
NODE = "/segment"
SCAN_TOPIC = "/lidar/points"
OUTPUT = f"{NODE}/output/labeled_cloud"
TOTAL_MS = f"{NODE}/debug/total_ms"
PARAMETER = "sync.timeout"
NEW_VALUE = "0.2"
START_S = 120.0  # longest wait for a process to come up on a busy 2-core machine; the graph ends it sooner
CLI_S = 60.0  # longest a ros2 command may take
BUSY_SCANS = 5  # labelled clouds seen after the first before the busy param calls start
POLL_S = 0.01  # graph polling: the resolution of the start-up times


class BenchError(RuntimeError):
    """What did not come up or answer, in one sentence."""


def machine() -> str:
    """'AMD EPYC ..., 2 cores' from lscpu, else what platform says."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def build_workspace(root: Path) -> float:
    """A colcon workspace in `root` holding a copy of the package, built as a user does; its build seconds."""
    copy_package(root / "src/xkd_ros")
    started = time.perf_counter()
    result = colcon_build(root, timeout=600)
    if result.returncode != 0:
        raise BenchError(f"colcon build failed in {root}: {result.stdout[-2000:]}{result.stderr[-2000:]}")
    return time.perf_counter() - started


def recording(bag: Path | None) -> Path:
    """The bag to replay: `bag`, else the demo's, else a synthetic drive written now (as the demo does)."""
    if bag is not None:
        return bag
    demo = ROOT / "out/demo/recording"
    if (demo / "metadata.yaml").is_file():
        return demo
    from xkd_ros.demo import record

    print(
        "no out/demo/recording: writing a 16-scan synthetic drive to out/bench_launch/recording", flush=True
    )
    return record(ROOT / "out/bench_launch", 16, 7)[0]


def write_param_file(bag: Path, path: Path) -> tuple[list[str], float]:
    """A param file for the bag's rig (compressed cameras, their mean image - scan offsets); the played input
    topics and the seconds from the bag's first played message to its first scan."""
    from rosbags.rosbag2 import Reader

    from xkd_ros.data.rosbag import BagTopics, RosbagDataset

    dataset = RosbagDataset(bag)
    cameras = list(dataset.rig.names)
    frames = [dataset[i] for i in range(len(dataset))]
    offsets = [
        float(np.mean([f.image_stamps[c] - f.stamp for f in frames if c in f.image_stamps])) for c in cameras
    ]
    path.write_text(
        "/**:\n  ros__parameters:\n"
        f"    rig_path: {bag / 'rig.yaml'}\n"
        f"    cameras: [{', '.join(cameras)}]\n"
        "    camera_transport: compressed\n"
        f"    sync:\n      camera_offsets: [{', '.join(f'{o:.4f}' for o in offsets)}]\n"
    )
    topics = BagTopics()
    inputs = [
        SCAN_TOPIC,
        *(t for c in cameras for t in (topics.image(c, compressed=True), topics.camera_info(c))),
    ]
    with Reader(bag) as reader:
        played = [c for c in reader.connections if c.topic in inputs]
        times = [(t, c.topic) for c, t, _ in reader.messages(connections=played)]
    first = min(t for t, _ in times)
    first_scan = min(t for t, topic in times if topic == SCAN_TOPIC)
    return inputs, (first_scan - first) / 1e9


def ros2(shell: dict[str, str], *args: str, spin: Callable[[], None] | None = None) -> tuple[float, str]:
    """Wall seconds of `ros2 ARGS...` and its output (10 ms resolution); `spin` is called meanwhile (this
    process keeps taking the node's clouds). BenchError when it fails or outlasts CLI_S."""
    started = time.perf_counter()
    process = subprocess.Popen(
        ["ros2", *args],
        env=shell,
        cwd=shell["PWD"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        if spin is None:
            output, _ = process.communicate(timeout=CLI_S)
        else:
            while process.poll() is None:  # its output is a line or two: the pipe never fills
                if time.perf_counter() - started > CLI_S:
                    raise subprocess.TimeoutExpired(process.args, CLI_S)
                spin()
            output = process.stdout.read()
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise BenchError(f"ros2 {' '.join(args)}: no answer in {CLI_S:.0f} s") from None
    finally:
        process.stdout.close()
    seconds = time.perf_counter() - started
    output = output.strip()
    if process.returncode != 0:
        raise BenchError(f"ros2 {' '.join(args)} failed: {output}")
    return seconds, output


def param_calls(shell: dict[str, str], expected_get: str, spin: Callable[[], None]) -> dict[str, float]:
    """`ros2 param get` then `set` with the daemon (as a user types them) and with `--no-daemon --timeout
    30` (the default --timeout of 1 s, to find the node in the graph, can be too short here): wall seconds."""
    times = {}
    for mode, flags in (("daemon", ()), ("no_daemon", ("--no-daemon", "--timeout", "30"))):
        seconds, out = ros2(shell, "param", "get", *flags, NODE, PARAMETER, spin=spin)
        if out != f"Double value is: {expected_get}":
            raise BenchError(f"ros2 param get {NODE} {PARAMETER} answered {out!r}, not {expected_get}")
        times[f"get_{mode}_s"] = seconds
        seconds, out = ros2(shell, "param", "set", *flags, NODE, PARAMETER, NEW_VALUE, spin=spin)
        if out != "Set parameter successful":
            raise BenchError(f"ros2 param set {NODE} {PARAMETER} {NEW_VALUE} answered {out!r}")
        times[f"set_{mode}_s"] = seconds
        expected_get = NEW_VALUE
    return times


class Listener:
    """This process on the graph: the labelled clouds (arrival times, stamps) and the node's total_ms."""

    def __init__(self, node, executor) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PointStamped
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import PointCloud2

        self.node, self.executor = node, executor
        self.clouds: list[tuple[float, int]] = []  # (monotonic arrival, stamp ns)
        self.total_ms: dict[int, float] = {}  # stamp ns -> the node's total_ms of that scan
        self.output = node.create_subscription(PointCloud2, OUTPUT, self._on_cloud, qos_profile_sensor_data)
        node.create_subscription(PointStamped, TOTAL_MS, self._on_total, 10)
        self.diagnostics: dict[str, str] = {}  # the node's last /diagnostics values: its own counts
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_cloud(self, msg) -> None:
        self.clouds.append((time.monotonic(), header_ns(msg.header)))

    def _on_total(self, msg) -> None:
        self.total_ms[header_ns(msg.header)] = msg.point.x

    def _on_diagnostics(self, msg) -> None:
        self.diagnostics.update({kv.key: kv.value for kv in msg.status[0].values})

    def spin(self) -> None:
        self.executor.spin_once(timeout_sec=POLL_S)

    def until(self, done: Callable[[], bool], what: str, alive: list[tuple[subprocess.Popen, Path]]) -> float:
        """Spin until `done()`; the monotonic time it held. BenchError naming `what` and the log of a
        process that died meanwhile, or after START_S."""
        deadline = time.monotonic() + START_S
        while not done():
            for process, log in alive:
                if process.poll() is not None:
                    raise BenchError(f"{what}: {process.args[:3]} exited; its log: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise BenchError(f"{what}: not within {START_S:.0f} s")
            self.executor.spin_once(timeout_sec=POLL_S)
        return time.monotonic()


def node_pid(session: int) -> int:
    """The segment_node process that the launch in process group `session` started."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if (
            any(a.endswith(b"/segment_node") for a in argv)
            and int(stat.rsplit(")", 1)[1].split()[3]) == session
        ):
            return int(entry.name)
    raise BenchError(f"no segment_node process in the launch's process group {session}")


def process_start(pid: int) -> float:
    """When process `pid` started, on time.monotonic()'s clock (10 ms ticks: /proc/PID/stat's starttime)."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    since_boot = time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
    return ticks / os.sysconf("SC_CLK_TCK") - since_boot


READY = re.compile(r"\[INFO\] \[(\d+\.\d+)\] \[segment\]: model ")  # the node's start-up line


def ready_logged(log: Path) -> float:
    """When the node logged its start-up line (the last thing it does, after subscribing), on
    time.monotonic()'s clock: `[segment]: model ...` with its epoch stamp, in the launch's output."""
    return float(READY.search(log.read_text())[1]) - (time.time() - time.monotonic())


def one_run(
    shell: dict[str, str],
    listener: Listener,
    param_file: Path,
    bag: Path,
    inputs: list[str],
    rate: float,
    log_dir: Path,
) -> dict:
    """One fresh launch, timed as the module says."""
    listener.clouds.clear()
    listener.total_ms.clear()
    listener.diagnostics.clear()
    launch_log, replay_log = log_dir / "launch.log", log_dir / "replay.log"
    started = time.monotonic()
    launch = start(
        shell,
        [
            *("ros2", "launch", "xkd_ros", "segment.launch.py", f"param_file:={param_file}"),
            *(f"pointcloud_topic:={SCAN_TOPIC}", "camera_topic:=/cameras/{camera}/image_raw"),
        ],
        launch_log,
    )
    replay = None
    try:
        alive = [(launch, launch_log)]
        subscribed = listener.until(
            lambda: listener.node.count_subscribers(SCAN_TOPIC) >= 1, f"a subscription to {SCAN_TOPIC}", alive
        )
        spawned = process_start(node_pid(launch.pid))
        listener.until(lambda: READY.search(launch_log.read_text()), "the node's start-up line", alive)
        ready = ready_logged(launch_log)
        listener.until(lambda: listener.output.get_publisher_count() >= 1, f"{OUTPUT} matched here", alive)
        ros2(shell, "param", "get", "-h")  # a warm-up: the page cache, as for every ros2 after the first
        cli_s, _ = ros2(shell, "param", "get", "-h")  # the CLI's own start-up, no graph
        try:  # --no-daemon with the default --timeout of 1 s: does the node get found in time?
            ros2(shell, "param", "get", "--no-daemon", NODE, PARAMETER, spin=listener.spin)
            found_in_1s = True
        except BenchError:
            found_in_1s = False
        idle = param_calls(shell, "0.1", listener.spin)

        replay_started = time.monotonic()
        replay = start(
            shell,
            [
                *("ros2", "run", "xkd_ros", "xkd-replay", str(bag), "--loop", "--rate", f"{rate:g}"),
                *("--wait-for-subscribers", "--wait-timeout", f"{START_S:g}", "--topics", *inputs),
            ],
            replay_log,
        )
        alive.append((replay, replay_log))
        replay_matched = listener.until(
            lambda: "matched on every topic" in replay_log.read_text(),
            "xkd-replay's subscribers matched",
            alive,
        )
        first = listener.until(lambda: bool(listener.clouds), f"a labelled cloud on {OUTPUT}", alive)
        listener.until(
            lambda: len(listener.clouds) > BUSY_SCANS, f"{BUSY_SCANS + 1} labelled clouds on {OUTPUT}", alive
        )
        busy_from, labelled_before = time.monotonic(), len(listener.clouds)
        busy = param_calls(shell, NEW_VALUE, listener.spin)
        busy_rate = (len(listener.clouds) - labelled_before) / (time.monotonic() - busy_from)
        listener.until(lambda: listener.clouds[0][1] in listener.total_ms, "the first scan's total_ms", alive)
    finally:
        replay_status = stop(replay) if replay is not None else None
        launch_status = stop(launch)
    first_stamp = listener.clouds[0][1]
    later = [ms for stamp, ms in listener.total_ms.items() if stamp != first_stamp]
    return {
        "launch_to_node_process_s": spawned - started,
        "launch_to_node_ready_logged_s": ready - started,
        "launch_to_input_subscription_s": subscribed - started,
        "ros2_param_get_help_s": cli_s,
        "no_daemon_found_in_default_timeout": found_in_1s,
        "idle": idle,
        "replay_to_subscribers_matched_s": replay_matched - replay_started,
        "replay_to_first_labelled_s": first - replay_started,
        "first_scan_total_ms": listener.total_ms[first_stamp],
        "later_scans_total_ms_median": statistics.median(later) if later else None,
        "busy": busy,
        "busy_labelled_per_s": busy_rate,
        "labelled_received_here": len(listener.clouds),
        "node_counts": {k: v for k, v in listener.diagnostics.items() if k.startswith(("scans", "sync"))},
        "launch_exit_status": launch_status,
        "replay_exit_status": replay_status,
    }


def flatten(run: dict) -> dict[str, float]:
    """The run's numbers, one level deep (idle_get_daemon_s, ...); flags and texts left out."""
    items = [
        (f"{k}_{n}" if isinstance(d, dict) else k, v)
        for k, d in run.items()
        for n, v in (d.items() if isinstance(d, dict) else [(None, d)])
    ]
    return {k: v for k, v in items if isinstance(v, (int, float)) and not isinstance(v, bool)}


def summarise(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Median, min and max of every figure over the runs."""
    flats = [flatten(run) for run in runs]
    keys = [k for k in flats[0] if all(f.get(k) is not None for f in flats)]
    return {
        k: {
            "median": statistics.median(f[k] for f in flats),
            "min": min(f[k] for f in flats),
            "max": max(f[k] for f in flats),
        }
        for k in keys
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh launches")
    parser.add_argument("--bag", type=Path, help="the recording (default out/demo/recording)")
    parser.add_argument(
        "--rate", type=float, default=5.0, help="xkd-replay --rate (5: the demo's 2 Hz scans at 10 Hz)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    reason = missing()
    if reason:
        print(f"bench_launch: {reason}", file=sys.stderr)
        return 1

    bag = recording(args.bag)
    runs = []
    with (
        tempfile.TemporaryDirectory(prefix="bench_launch_") as tmp,
        domain_environment("bench_launch") as env,
    ):
        scratch = Path(tmp)
        build_s = build_workspace(scratch / "ws")
        shell = user_shell(scratch / "ws", env, scratch / "ros_log", scratch)
        param_file = scratch / "bench.param.yaml"
        inputs, lead_s = write_param_file(bag, param_file)
        print(f"colcon build {build_s:.1f} s; replaying {bag} at rate {args.rate:g}", flush=True)
        daemon_s, _ = ros2(shell, "daemon", "start")
        try:
            with joined(shell, "xkd_launch_bench") as (node, executor):
                listener = Listener(node, executor)
                for index in range(args.runs):
                    log_dir = ROOT / f"out/bench_launch/run{index + 1}"  # the launch's and replay's output
                    log_dir.mkdir(parents=True, exist_ok=True)
                    try:
                        run = one_run(shell, listener, param_file, bag, inputs, args.rate, log_dir)
                    except BenchError as error:
                        print(f"bench_launch: run {index + 1}: {error}", file=sys.stderr)
                        return 1
                    runs.append(run)
                    print(
                        f"run {index + 1}: node process {run['launch_to_node_process_s']:.2f} s, "
                        "subscribed "
                        f"{run['launch_to_input_subscription_s']:.2f} s, first labelled "
                        f"{run['replay_to_first_labelled_s']:.2f} s after the replay started; param get "
                        f"{run['idle']['get_daemon_s']:.2f} / busy {run['busy']['get_daemon_s']:.2f} s; "
                        f"launch exit {run['launch_exit_status']}",
                        flush=True,
                    )
        finally:
            with contextlib.suppress(BenchError):
                ros2(shell, "daemon", "stop")
            for pid in daemons(shell["ROS_DOMAIN_ID"]):
                os.kill(pid, signal.SIGKILL)

    summary = summarise(runs)
    print(f"{'figure':<48} {'median':>8} {'min':>8} {'max':>8}")
    for key, s in summary.items():
        print(f"{key:<48} {s['median']:>8.3f} {s['min']:>8.3f} {s['max']:>8.3f}")
    found = sum(run["no_daemon_found_in_default_timeout"] for run in runs)
    print(f"ros2 param get --no-daemon (default --timeout 1 s) found the node in {found} of {len(runs)} runs")
    print(
        f"(the bag's first scan comes {lead_s:.3f} s into it: {lead_s / args.rate:.3f} s at rate "
        f"{args.rate:g})"
    )
    write_json(
        args.json,
        {
            "machine": machine(),
            "date": datetime.date.today().isoformat(),
            "bag": str(bag),
            "replay_rate": args.rate,
            "first_scan_lead_s": lead_s / args.rate,
            "colcon_build_s": build_s,
            "daemon_start_s": daemon_s,
            "summary": summary,
            "runs": runs,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
