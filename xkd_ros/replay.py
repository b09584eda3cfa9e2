"""`xkd-replay BAG`: `ros2 bag play` for machines without rosbag2.

Publishes every topic of a rosbag2 recording (mcap or sqlite3, read with rosbags) with the recorded timing:
message i goes out at start + (log_time_i - first_log_time) / rate. Messages are published as the recorded
CDR bytes, never deserialised (rclpy's Publisher.publish accepts serialised bytes); a publisher still needs
the message class, so topics whose type has no Python package installed here (e.g. tf2_msgs/TFMessage on
/tf_static with the ROS wheels) are skipped with one warning naming them.

    xkd-replay BAG [--rate R] [--loop] [--clock [HZ]] [--remap FROM:=TO ...] [--topics T ...]
                   [--start-paused] [--qos reliable|best_effort] [--delay S]

--start-paused waits for Enter on stdin before the first message (after --delay). --clock publishes
rosgraph_msgs/Clock on /clock with the bag time (default 100 Hz) for nodes run with use_sim_time. Topics
recorded as transient_local (latched, e.g. /tf_static) are offered transient_local; all others use
--qos with depth 10.

Large messages (images, scans) need a Fast DDS profile with a big shared-memory segment: where
FASTDDS_DEFAULT_PROFILES_FILE is not set and the package's config/fastdds.xml exists, it is used.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["main", "parse_remap"]

NS_PER_S = 1_000_000_000
DEPTH = 10


class ReplayError(RuntimeError):
    """The bag cannot be played; the message names the path and what is wrong."""


def parse_remap(text: str) -> tuple[str, str]:
    """'FROM:=TO' -> (FROM, TO), both absolute topic names."""
    source, sep, target = text.partition(":=")
    if not sep or not source or not target:
        raise argparse.ArgumentTypeError(f"--remap: {text!r} is not FROM:=TO")
    return _absolute(source), _absolute(target)


def _absolute(topic: str) -> str:
    return topic if topic.startswith("/") else f"/{topic}"


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not > 0")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xkd-replay",
        description="Play a rosbag2 recording (mcap or sqlite3) with its original timing, without rosbag2.",
    )
    parser.add_argument("bag", type=Path, help="the rosbag2 folder (or its .mcap / .db3 file)")
    parser.add_argument("--rate", type=_positive, default=1.0, help="speed factor (default 1)")
    parser.add_argument("--loop", action="store_true", help="play the bag again and again")
    parser.add_argument(
        "--clock",
        type=_positive,
        nargs="?",
        const=100.0,
        default=None,
        metavar="HZ",
        help="publish rosgraph_msgs/Clock on /clock from the bag time (default 100 Hz)",
    )
    parser.add_argument(
        "--remap",
        type=parse_remap,
        action="append",
        default=[],
        metavar="FROM:=TO",
        help="publish topic FROM as TO (repeatable)",
    )
    parser.add_argument("--topics", nargs="+", default=None, metavar="T", help="play only these topics")
    parser.add_argument(
        "--start-paused", action="store_true", help="wait for Enter on stdin before the first message"
    )
    parser.add_argument(
        "--qos", choices=("reliable", "best_effort"), default="reliable", help="default reliable"
    )
    parser.add_argument("--delay", type=_non_negative, default=0.0, metavar="S", help="wait S seconds first")
    return parser


# The bag.


@dataclass(frozen=True)
class Topic:
    name: str  # as recorded
    msgtype: str  # e.g. sensor_msgs/msg/PointCloud2
    count: int
    latched: bool


def _bag_path(path: Path) -> Path:
    """The bag folder: `path` itself, or the folder of a .mcap / .db3 file in it."""
    if not path.exists():
        raise ReplayError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix in (".mcap", ".db3") and (path.parent / "metadata.yaml").is_file():
            return path.parent
        raise ReplayError(f"{path}: not a rosbag2 bag (expected a bag folder with metadata.yaml)")
    if not (path / "metadata.yaml").is_file():
        raise ReplayError(f"{path}: not a rosbag2 bag (no metadata.yaml in it)")
    return path


def _open(path: Path):
    from rosbags.rosbag2 import Reader

    try:
        reader = Reader(path)
        reader.open()
    except Exception as error:  # rosbags raises ReaderError and others on bad bags
        raise ReplayError(f"{path}: cannot read the bag: {error}") from error
    return reader


def _latched(connection: Any) -> bool:
    from rosbags.interfaces import QosDurability

    profiles = getattr(connection.ext, "offered_qos_profiles", None) or []
    return any(profile.durability == QosDurability.TRANSIENT_LOCAL for profile in profiles)


def message_class(msgtype: str) -> type | None:
    """The rclpy class of 'pkg/msg/Name', or None where its Python package is not installed."""
    package, _, name = msgtype.rpartition("/")
    try:
        module = importlib.import_module(package.replace("/", "."))
    except ImportError:
        return None
    return getattr(module, name, None)


# Playing.


class _Clock:
    """Bag time now: first_ns + (monotonic - start) * rate, shared with the /clock thread."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.lock = threading.Lock()
        self.first_ns: int | None = None
        self.start = 0.0

    def reset(self, first_ns: int, start: float) -> None:
        with self.lock:
            self.first_ns, self.start = first_ns, start

    def now_ns(self) -> int | None:
        with self.lock:
            if self.first_ns is None:
                return None
            return self.first_ns + int((time.monotonic() - self.start) * self.rate * NS_PER_S)


def _publish_clock(publisher: Any, clock: _Clock, hz: float, stop: threading.Event) -> None:
    from builtin_interfaces.msg import Time
    from rosgraph_msgs.msg import Clock

    while not stop.wait(1.0 / hz):
        ns = clock.now_ns()
        if ns is not None:
            sec, nanosec = divmod(ns, NS_PER_S)
            publisher.publish(Clock(clock=Time(sec=sec, nanosec=nanosec)))


def _sleep_until(deadline: float) -> None:
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))


def play(args: argparse.Namespace) -> int:
    path = _bag_path(args.bag)
    reader = _open(path)
    try:
        return _play(reader, path, args)
    finally:
        reader.close()


def _play(reader: Any, path: Path, args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions

    by_name: dict[str, list[Any]] = {}
    for connection in reader.connections:
        by_name.setdefault(connection.topic, []).append(connection)
    wanted = set(by_name)
    if args.topics is not None:
        wanted = {_absolute(topic) for topic in args.topics}
        absent = sorted(wanted - set(by_name))
        if absent:
            print(f"xkd-replay: warning: {path}: no topics {', '.join(absent)} in the bag", file=sys.stderr)
        wanted &= set(by_name)
    remap = dict(args.remap)
    absent = sorted(set(remap) - set(by_name))
    if absent:
        print(f"xkd-replay: warning: --remap: no topics {', '.join(absent)} in the bag", file=sys.stderr)

    classes: dict[str, type] = {}
    skipped: list[str] = []
    for topic in sorted(wanted):
        msgtype = by_name[topic][0].msgtype
        cls = message_class(msgtype)
        if cls is None:
            skipped.append(f"{topic} ({msgtype})")
        else:
            classes[topic] = cls
    if skipped:
        print(
            f"xkd-replay: warning: skipping topics whose message type has no Python package here: "
            f"{', '.join(skipped)}",
            file=sys.stderr,
        )
    connections = [c for topic in classes for c in by_name[topic]]
    count = sum(c.msgcount for c in connections)
    duration = reader.duration / NS_PER_S if reader.message_count else 0.0
    print(
        f"xkd-replay: {path}: {len(classes)} topics, {count} messages, {duration:.3f} s of recording "
        f"at rate {args.rate:g}" + (" (looping)" if args.loop else ""),
        flush=True,
    )
    if not connections:
        print(f"xkd-replay: {path}: nothing to play", file=sys.stderr)
        return 0

    reliability = ReliabilityPolicy.RELIABLE if args.qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
    # rclpy's SIGINT handler would shut the context down under a publish; Ctrl-C raises KeyboardInterrupt.
    rclpy.init(args=None, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = rclpy.create_node("xkd_replay")
        publishers: dict[int, Any] = {}
        for topic, cls in classes.items():
            latched = any(_latched(c) for c in by_name[topic])
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=1 if latched else DEPTH,
                reliability=ReliabilityPolicy.RELIABLE if latched else reliability,
                durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
            )
            publisher = node.create_publisher(cls, remap.get(topic, topic), qos)
            for connection in by_name[topic]:
                publishers[connection.id] = publisher
        clock = _Clock(args.rate)
        stop = threading.Event()
        clock_thread = None
        if args.clock is not None:
            from rosgraph_msgs.msg import Clock

            clock_publisher = node.create_publisher(Clock, "/clock", DEPTH)
            clock_thread = threading.Thread(
                target=_publish_clock, args=(clock_publisher, clock, args.clock, stop), daemon=True
            )
            clock_thread.start()
        try:
            if args.delay:
                time.sleep(args.delay)
            if args.start_paused:
                print("xkd-replay: paused; press Enter to play", flush=True)
                sys.stdin.readline()
            while True:
                _play_once(reader, connections, publishers, clock)
                if not args.loop:
                    break
        finally:
            stop.set()
            if clock_thread is not None:
                clock_thread.join()
        # Give reliable subscribers a moment to take the last messages before the publishers go.
        time.sleep(0.2)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
    return 0


def _play_once(reader: Any, connections: list[Any], publishers: dict[int, Any], clock: _Clock) -> None:
    start: float | None = None
    first_ns = 0
    for connection, log_ns, raw in reader.messages(connections=connections):
        if start is None:
            start, first_ns = time.monotonic(), log_ns
            clock.reset(first_ns, start)
        _sleep_until(start + (log_ns - first_ns) / NS_PER_S / clock.rate)
        publishers[connection.id].publish(bytes(raw))


def _use_fastdds_profile() -> None:
    """Point Fast DDS at config/fastdds.xml (large messages over shared memory) unless the user chose."""
    if os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        return
    try:
        from xkd_ros.paths import config_path

        profile = config_path("fastdds.xml")
    except Exception:  # no share directory: keep Fast DDS's defaults
        return
    if profile.is_file():
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _use_fastdds_profile()
    try:
        return play(args)
    except ReplayError as error:
        print(f"xkd-replay: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
