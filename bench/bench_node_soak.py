"""Soak benchmark of segment_node over DDS: end-to-end latency and the node's memory over time.

Run: `.venv/bin/python bench/bench_node_soak.py [--seconds 300] [--rate 10] [--record OUT] [--json F]`.
Starts segment_node as xkd_ros/demo.py does (the ROS_DOMAIN_ID of the environment or one reserved for the
run, loopback-only discovery, the large-data Fast DDS profile) but subscribed to raw rgb8 Images, waits
until the node subscribes every input and this process is matched to its labelled clouds, and publishes the
nuScenes keyframe (34,688 points, six 1600x900 rgb8 Images and their CameraInfos) at `--rate` Hz with fresh
stamps (scan = now, each image = now + the keyframe's camera offset), reliable QoS depth 5. Latency of a
scan = arrival of its labelled cloud here - its publish time (= its stamp), matched by header stamp. The
node's RSS (VmRSS) is sampled every 10 s. Prints per 30 s window and overall: scans published, labelled,
latency p50 / p99, node RSS, and whether any scan queued behind another: the node's ~/debug/queue_ms (how
long each prepared scan waited for the inference thread, pipeline.overlap; at most one inference when
nothing piles up) p99 / max, its "scans superseded before inference" counter (/diagnostics) grown in the
window, and labelled clouds arriving older than one already labelled (out of order: never, with a queue of
one). Overall also: the node's inference_ms and total_ms p50 / p99 (~/debug), and the node's CPU seconds.

`--record OUT` runs `xkd-record OUT -t <the node's inputs and everything it publishes>` beside the node during
the soak (started before the soak, which waits until it subscribes to every topic; Ctrl-C at the end), so
that a recorder's cost on the node is measured: the report adds the recording's size, its messages per topic
and the recorder's CPU seconds and memory.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import yaml
from timing import write_json

from xkd_ros.demo import NODE, node_command
from xkd_ros.evaluate.live import NODE_OUTPUTS, interrupt, offered_qos
from xkd_ros.paths import config_path
from xkd_ros.record import joined
from xkd_ros.ros_env import domain_environment

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "test/data"
RSS_EVERY_S = 10.0
WINDOW_S = 30.0
DISCOVERY_S = 30.0
DRAIN_S = 5.0
NS_PER_S = 1_000_000_000
# The node's ~/debug/<stage>_ms recorded (PointStamped: point.x in ms, the header the scan's).
DEBUG_STAGES = ("queue", "inference", "total")
SUPERSEDED = "scans superseded before inference"
RECORDER = "xkd_record"  # the node name of xkd-record (xkd_ros.record)
RECORDER_STOP_S = 120.0  # xkd-record writing its backlog and closing the bag


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat), None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_topics(cameras: list[str]) -> list[str]:
    """The node's inputs as this benchmark publishes them and everything the node publishes."""
    inputs = ["/lidar/points"]
    inputs += [f"/cameras/{c}/{t}" for c in cameras for t in ("image_raw", "camera_info")]
    return inputs + [t if t.startswith("/") else f"/{NODE}/{t}" for t in NODE_OUTPUTS]


def recording_summary(out: Path) -> dict:
    """The recording's size and its messages per topic (its metadata.yaml)."""
    info = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    counts = {t["topic_metadata"]["name"]: t["message_count"] for t in info["topics_with_message_count"]}
    return {
        "path": str(out),
        "size_mb": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6,
        "messages": info["message_count"],
        "per_topic": counts,
    }


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MB (VmRSS of /proc/<pid>/status), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def percentiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def p99_max(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return float(np.percentile(values, 99)), float(max(values))


def grown(samples: list[tuple[float, int]], low: float, high: float) -> int | None:
    """How much a counter of the node sampled as (t, value) grew from `low` to `high` (the last sample
    before each; 0 before the first: the node started with this run and had no scan before it): None
    without samples."""
    if not samples:
        return None
    before = [v for t, v in samples if t < low] or [0]
    until = [v for t, v in samples if t < high] or [0]
    return until[-1] - before[-1]


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def set_stamp(header, ns: int) -> None:
    header.stamp.sec, header.stamp.nanosec = divmod(ns, NS_PER_S)


def soak(
    env: dict[str, str],
    node_pid: int,
    frame,
    messages,
    seconds: float,
    rate: float,
    recorder_pid: int | None = None,
    recorded: Sequence[str] = (),
) -> dict:
    """Publish the keyframe at `rate` Hz for `seconds` once the node has subscribed to every input, this
    process is matched to its labelled clouds and the recorder (`recorder_pid`, if any) has subscribed to
    every `recorded` topic; returns the records."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PointStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    cameras = list(messages.images)
    offsets_ns = {c: round((frame.image_stamps[c] - frame.stamp) * NS_PER_S) for c in cameras}
    published: dict[int, float] = {}  # stamp ns -> publish time (s since start)
    arrived: dict[int, float] = {}  # stamp ns -> arrival time (s since start)
    out_of_order: list[float] = []  # arrival times of labelled clouds older than one already arrived
    newest = [-1]
    debug: dict[str, list[tuple[float, float]]] = {stage: [] for stage in DEBUG_STAGES}  # (t, ms)
    superseded: list[tuple[float, int]] = []  # (t, the node's counter) from /diagnostics
    publish_ms: list[float] = []  # time this process spends publishing one scan's messages
    rss: list[tuple[float, float]] = []
    diagnostics: dict[str, str] = {}  # the node's last /diagnostics values: its own count of scans
    start = time.time()

    def on_labelled(msg: PointCloud2) -> None:
        now = time.time()
        stamp = msg.header.stamp.sec * NS_PER_S + msg.header.stamp.nanosec
        arrived.setdefault(stamp, now - start)
        if stamp < newest[0]:
            out_of_order.append(now - start)
        newest[0] = max(newest[0], stamp)

    def on_diagnostics(msg: DiagnosticArray) -> None:
        diagnostics.update({kv.key: kv.value for kv in msg.status[0].values})
        if SUPERSEDED in diagnostics:
            superseded.append((time.time() - start, int(diagnostics[SUPERSEDED])))

    def on_debug(stage: str) -> Callable[[PointStamped], None]:
        return lambda msg: debug[stage].append((time.time() - start, msg.point.x))  # ms, stamped as the scan

    with joined(env, "xkd_soak_bench") as (node, executor):
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        cloud_pub = node.create_publisher(PointCloud2, "/lidar/points", qos)
        image_pubs = {c: node.create_publisher(Image, f"/cameras/{c}/image_raw", qos) for c in cameras}
        info_pubs = {c: node.create_publisher(CameraInfo, f"/cameras/{c}/camera_info", qos) for c in cameras}
        for stage in DEBUG_STAGES:
            node.create_subscription(PointStamped, f"/{NODE}/debug/{stage}_ms", on_debug(stage), 50)
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        publishers = [cloud_pub, *image_pubs.values(), *info_pubs.values()]
        labelled = f"/{NODE}/output/labeled_cloud"
        waited = time.monotonic()

        def discovered(done: Callable[[], bool], what: Callable[[], str]) -> None:
            while not done():
                if time.monotonic() - waited > DISCOVERY_S:
                    raise RuntimeError(f"segment_node: {what()} after {DISCOVERY_S:.0f} s")
                executor.spin_once(timeout_sec=0.1)

        discovered(
            lambda: bool(node.get_publishers_info_by_topic(labelled)), lambda: f"no publisher on {labelled}"
        )
        # The reliability the node offers (its qos.reliable): a reliable reader never matches best effort.
        output = node.create_subscription(PointCloud2, labelled, on_labelled, offered_qos(node, labelled, 5))
        discovered(lambda: output.get_publisher_count() >= 1, lambda: f"{labelled} not matched")
        readers = 1 if recorder_pid is None else 2  # the node, and the recorder
        discovered(
            lambda: all(p.get_subscription_count() >= readers for p in publishers),
            lambda: (
                f"fewer than {readers} subscriber(s) on "
                + ", ".join(p.topic_name for p in publishers if p.get_subscription_count() < readers)
            ),
        )

        def unrecorded() -> list[str]:
            return [
                t
                for t in recorded
                if not any(i.node_name == RECORDER for i in node.get_subscriptions_info_by_topic(t))
            ]

        discovered(
            lambda: not unrecorded(), lambda: f"xkd-record not subscribed to {', '.join(unrecorded())}"
        )
        waited = time.monotonic() - waited
        print(f"node discovered after {waited:.1f} s; soaking {seconds:.0f} s at {rate:g} Hz", flush=True)

        period = 1.0 / rate
        cpu = {"node": cpu_seconds(node_pid), "recorder": cpu_seconds(recorder_pid) if recorder_pid else None}
        start = time.time()
        next_publish, next_rss = start, start
        end = start + seconds
        while True:
            now = time.time()
            if now >= end:
                break
            if now >= next_rss:
                value = rss_mb(node_pid)
                if value is not None:
                    rss.append((now - start, value))
                next_rss += RSS_EVERY_S
            if now >= next_publish:
                stamp = time.time_ns()
                for camera in cameras:
                    image, info = messages.images[camera], messages.camera_infos[camera]
                    set_stamp(image.header, stamp + offsets_ns[camera])
                    set_stamp(info.header, stamp + offsets_ns[camera])
                    info_pubs[camera].publish(info)
                    image_pubs[camera].publish(image)
                set_stamp(messages.cloud.header, stamp)
                cloud_pub.publish(messages.cloud)
                published[stamp] = stamp / NS_PER_S - start
                publish_ms.append((time.time_ns() - stamp) / 1e6)
                next_publish += period
                if time.time() > next_publish + period:  # publishing fell behind: do not burst to catch up
                    next_publish = time.time()
            wait = min(next_publish, next_rss, end) - time.time()
            executor.spin_once(timeout_sec=max(wait, 0.0))
        drain = time.time() + DRAIN_S  # the last scans are still in the node
        while time.time() < drain and len(arrived.keys() & published.keys()) < len(published):
            executor.spin_once(timeout_sec=0.05)
        value = rss_mb(node_pid)
        if value is not None:
            rss.append((time.time() - start, value))
        cpu_s = {
            who: (cpu_seconds(pid) or 0.0) - (cpu[who] or 0.0)
            for who, pid in (("node", node_pid), ("recorder", recorder_pid))
            if pid is not None
        }
        if recorder_pid is not None:
            cpu_s["recorder_rss_mb"] = rss_mb(recorder_pid)
    return {
        "cpu": cpu_s,
        "published": published,
        "arrived": arrived,
        "out_of_order": out_of_order,
        "debug": debug,
        "superseded": superseded,
        "publish_ms": publish_ms,
        "rss": rss,
        "start": start,
        "diagnostics": diagnostics,
    }


def summarise(records: dict, seconds: float) -> dict:
    published, arrived, rss = records["published"], records["arrived"], records["rss"]
    scans = sorted((t, (arrived[s] - t) * 1e3 if s in arrived else None) for s, t in published.items())
    windows = []
    count = max(1, int(np.ceil(seconds / WINDOW_S)))
    for index in range(count):
        low, high = index * WINDOW_S, min((index + 1) * WINDOW_S, seconds)
        inside = [lat for t, lat in scans if low <= t < high]
        latencies = [lat for lat in inside if lat is not None]
        p50, p99 = percentiles(latencies)
        samples = [mb for t, mb in rss if low <= t < high]
        # what the node sent after the last scan was published (the drain) counts in the last window
        until = float("inf") if index == count - 1 else high
        queue_p99, queue_max = p99_max([ms for t, ms in records["debug"]["queue"] if low <= t < until])
        windows.append(
            {
                "from_s": low,
                "to_s": high,
                "published": len(inside),
                "labelled": len(latencies),
                "latency_p50_ms": p50,
                "latency_p99_ms": p99,
                "queue_p99_ms": queue_p99,
                "queue_max_ms": queue_max,
                "superseded": grown(records["superseded"], low, until),
                "out_of_order": sum(low <= t < until for t in records["out_of_order"]),
                "node_rss_mb": samples[-1] if samples else None,
            }
        )
    latencies = [lat for _, lat in scans if lat is not None]
    p50, p99 = percentiles(latencies)
    debug = {stage: [ms for _, ms in samples] for stage, samples in records["debug"].items()}
    queue_p99, queue_max = p99_max(debug["queue"])
    memory = [mb for _, mb in rss]
    overall = {
        "published": len(scans),
        "labelled": len(latencies),
        "dropped": len(scans) - len(latencies),
        "dropped_at_s": [round(t, 2) for t, lat in scans if lat is None],  # publish times of the lost scans
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
        "latency_max_ms": max(latencies) if latencies else None,
        "queue_p50_ms": percentiles(debug["queue"])[0],
        "queue_p99_ms": queue_p99,
        "queue_max_ms": queue_max,
        "superseded_before_inference": grown(records["superseded"], -1.0, float("inf")),
        "out_of_order": len(records["out_of_order"]),
        "node_inference_ms_p50": percentiles(debug["inference"])[0],
        "node_inference_ms_p99": percentiles(debug["inference"])[1],
        "node_total_ms_p50": percentiles(debug["total"])[0],
        "node_total_ms_p99": percentiles(debug["total"])[1],
        "publish_ms_p50": float(np.percentile(records["publish_ms"], 50)) if records["publish_ms"] else None,
        "rss_first_mb": memory[0] if memory else None,
        "rss_last_mb": memory[-1] if memory else None,
        "rss_max_mb": max(memory) if memory else None,
        "node_cpu_s": records["cpu"]["node"],
        "recorder_cpu_s": records["cpu"].get("recorder"),
        "recorder_rss_mb": records["cpu"].get("recorder_rss_mb"),
    }
    node = {
        k: v
        for k, v in records["diagnostics"].items()
        if k.startswith("scans") or k in ("pipeline", "backend", "inference threads")
    }
    return {
        "windows": windows,
        "overall": overall,
        "node_counts": node,
        "rss_samples": [list(s) for s in rss],
    }


def print_report(summary: dict) -> None:
    print(
        f"{'window [s]':>12} {'published':>10} {'labelled':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'queue p99':>10} {'queue max':>10} {'superseded':>11} {'out of order':>13} {'RSS MB':>8}"
    )
    for w in summary["windows"]:
        span = f"{w['from_s']:.0f}-{w['to_s']:.0f}"
        print(
            f"{span:>12} {w['published']:>10} {w['labelled']:>9} {fmt(w['latency_p50_ms']):>8} "
            f"{fmt(w['latency_p99_ms']):>8} {fmt(w['queue_p99_ms']):>10} {fmt(w['queue_max_ms']):>10} "
            f"{fmt(w['superseded'], 'd'):>11} {w['out_of_order']:>13} {fmt(w['node_rss_mb']):>8}"
        )
    o = summary["overall"]
    print(
        f"overall: published {o['published']}, labelled {o['labelled']}, dropped {o['dropped']}; "
        f"latency p50 {fmt(o['latency_p50_ms'])} ms, p99 {fmt(o['latency_p99_ms'])} ms "
        f"(node total_ms p50 {fmt(o['node_total_ms_p50'])} p99 {fmt(o['node_total_ms_p99'])}, "
        f"inference_ms p50 {fmt(o['node_inference_ms_p50'])} p99 {fmt(o['node_inference_ms_p99'])}, "
        f"publishing p50 {fmt(o['publish_ms_p50'])}); node RSS first {fmt(o['rss_first_mb'])}, "
        f"last {fmt(o['rss_last_mb'])}, max {fmt(o['rss_max_mb'])} MB"
    )
    print(
        f"queued behind another: queue_ms p50 {fmt(o['queue_p50_ms'], '.1f')}, p99 "
        f"{fmt(o['queue_p99_ms'], '.1f')}, max {fmt(o['queue_max_ms'], '.1f')} ms (a scan waits for one "
        f"inference at most: inference_ms p99 {fmt(o['node_inference_ms_p99'])}); "
        f"superseded before inference {fmt(o['superseded_before_inference'], 'd')}; "
        f"labelled out of order {o['out_of_order']}"
    )
    print(
        f"CPU seconds over the soak and its drain: node {fmt(o['node_cpu_s'], '.1f')}"
        + (
            ""
            if o["recorder_cpu_s"] is None
            else f", xkd-record {o['recorder_cpu_s']:.1f} (RSS {fmt(o['recorder_rss_mb'])} MB at the end)"
        )
    )
    print(
        "node's own counts (/diagnostics): "
        + ", ".join(f"{k} {v}" for k, v in summary["node_counts"].items())
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="how long to publish")
    parser.add_argument("--rate", type=float, default=10.0, help="scans per second")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--node-param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="a segment_node parameter over the shipped ones, e.g. qos.depth:=5 (repeatable)",
    )
    parser.add_argument(
        "--record",
        type=Path,
        metavar="OUT",
        help="also run xkd-record OUT (a new bag folder) on the node's inputs and outputs during the soak",
    )
    args = parser.parse_args()
    if args.record is not None and args.record.exists():
        parser.error(f"--record: {args.record} exists already; a recording goes to a new folder")

    from xkd_ros.data import load_keyframe
    from xkd_ros.data.messages import frame_to_messages

    frame = load_keyframe(DATA / "nuscenes_demo")
    messages = frame_to_messages(frame, "raw")
    cameras = list(messages.images)
    offsets = [frame.image_stamps[c] - frame.stamp for c in cameras]

    log_path = ROOT / "out/bench_node_soak.node.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    recorded = node_topics(cameras) if args.record is not None else []
    recorder_log = ROOT / "out/bench_node_soak.record.log"
    with domain_environment("bench_node_soak") as env, log_path.open("w") as log:
        node = subprocess.Popen(
            node_command(config_path("nuscenes.rig.yaml"), cameras, offsets, compressed=False)
            + [arg for parameter in args.node_param for arg in ("-p", parameter)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        recorder = None
        try:
            if args.record is not None:
                with recorder_log.open("w") as out:
                    recorder = subprocess.Popen(
                        [str(Path(sys.executable).parent / "xkd-record"), str(args.record), "-t", *recorded],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=ROOT,
                    )
            records = soak(
                env,
                node.pid,
                frame,
                messages,
                args.seconds,
                args.rate,
                recorder.pid if recorder is not None else None,
                recorded,
            )
        finally:
            if recorder is not None:
                interrupt(recorder, RECORDER_STOP_S)  # Ctrl-C: it writes what it holds and closes the bag
            interrupt(node)
    print(f"node log: {log_path}")
    summary = summarise(records, args.seconds)
    print_report(summary)
    if args.record is not None:
        summary["recording"] = recording_summary(args.record)
        r = summary["recording"]
        print(
            f"recording {r['path']}: {r['size_mb']:.0f} MB, {r['messages']} messages (xkd-record's log: "
            f"{recorder_log}); per topic: " + ", ".join(f"{t} {n}" for t, n in r["per_topic"].items())
        )
    write_json(
        args.json,
        {
            "seconds": args.seconds,
            "rate_hz": args.rate,
            "points": len(frame.points),
            "cameras": cameras,
            "ros_domain_id": env["ROS_DOMAIN_ID"],
            "machine": platform.processor() or platform.machine(),
            **summary,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
