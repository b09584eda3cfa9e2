"""`xkd-replay BAG`: `ros2 bag play` for machines without rosbag2.

Publishes every topic of a rosbag2 recording (mcap or sqlite3, read with rosbags) with the recorded timing:
message i goes out at start + (log_time_i - first_log_time) / rate. Messages are published as the recorded
CDR bytes, never deserialised (rclpy's Publisher.publish accepts serialised bytes); a publisher still needs
the message class, so topics whose type has no Python package installed here (e.g. tf2_msgs/TFMessage on
/tf_static with the ROS wheels) are skipped with one warning naming them.

    xkd-replay BAG [--rate R] [--loop] [--clock [HZ]] [--remap FROM:=TO ...] [--topics T ...]
                   [--start-paused] [--qos reliable|best_effort] [--delay S]
                   [--wait-for-subscribers [N]] [--wait-timeout S]

Messages sent before a subscriber matched are lost to it, so --wait-for-subscribers N holds the first
message until every played topic (its name after --remap; /clock with --clock) has N matched subscriptions,
or fails naming the topics still unmatched after --wait-timeout seconds. After the last message it waits
(at most --wait-timeout seconds) until every reliable subscriber acknowledged everything, so that leaving
does not take the last messages with it; what stays unacknowledged is named in a warning. --start-paused
waits for Enter on stdin before the first message (after the subscribers and --delay). --clock publishes
rosgraph_msgs/Clock on /clock with the bag time (default 100 Hz) for nodes run with use_sim_time. Topics
recorded as transient_local (latched, e.g. /tf_static) are offered transient_local; all others use --qos
with depth 10.

A bag is data, not code: a message type is imported only when its name is `pkg/msg/Name` and the ament index
registers `pkg` as a ROS interface package with that message; any other name is refused as corrupt. A bag
that cannot be read (a truncated mcap, a corrupt sqlite3 file, a metadata.yaml whose files, storage or
message counts do not match the storage) is one line `xkd-replay: error: BAG: ...` and exit status 1, also
when the damage is found in the middle of playing.

Large messages (images, scans) need a Fast DDS profile with a big shared-memory segment: where
FASTDDS_DEFAULT_PROFILES_FILE is not set and the package's config/fastdds.xml exists, it is used.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from xkd_ros.ros_env import process_environment

__all__ = ["MESSAGE_TYPE", "ReplayError", "ament_prefixes", "main", "message_class", "parse_remap"]

NS_PER_S = 1_000_000_000
DEPTH = 10
POLL_S = 0.02  # how often the matched subscriptions are counted while waiting
# pkg/msg/Name with identifier characters: the only message type names that are looked up at all.
MESSAGE_TYPE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)/msg/([A-Za-z_][A-Za-z0-9_]*)")


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


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
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
    parser.add_argument(
        "--wait-for-subscribers",
        type=_count,
        nargs="?",
        const=1,
        default=0,
        metavar="N",
        help="before the first message, wait until every played topic has N matched subscribers (default 1)",
    )
    parser.add_argument(
        "--wait-timeout",
        type=_positive,
        default=60.0,
        metavar="S",
        help="longest wait for subscribers to match, and for them to acknowledge the last messages (60)",
    )
    return parser


# The bag.


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
    except Exception as error:  # rosbags raises ReaderError, and others (sqlite, yaml) on bad bags
        raise ReplayError(f"{path}: cannot read the bag: {_first_line(error)}") from None
    return reader


def _first_line(error: Exception) -> str:
    """An error's first line: a YAML parser's message goes on with the offending text and a caret."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _latched(connection: Any) -> bool:
    from rosbags.interfaces import QosDurability

    profiles = getattr(connection.ext, "offered_qos_profiles", None) or []
    return any(profile.durability == QosDurability.TRANSIENT_LOCAL for profile in profiles)


def ament_prefixes() -> list[Path]:
    """Where ament indexes live: AMENT_PREFIX_PATH (a sourced ROS install or colcon workspace), then this
    Python's prefix (the PyPI ROS wheels install their index in <venv>/share/ament_index)."""
    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return [*prefixes, Path(sys.prefix)]


def is_interface(package: str, name: str) -> bool:
    """Whether the ament index registers `package` as a ROS interface package with message `name` (the
    resource rosidl_interfaces/<package> lists its interface files, msg/<Name>.idl and .msg)."""
    files = {f"msg/{name}.idl", f"msg/{name}.msg"}
    for prefix in ament_prefixes():
        resource = prefix / "share" / "ament_index" / "resource_index" / "rosidl_interfaces" / package
        try:
            if files & set(resource.read_text().split()):
                return True
        except OSError:
            continue
    return False


def message_class(msgtype: str) -> type | None:
    """The rclpy class of 'pkg/msg/Name', or None where no ROS interface package here has it.

    A bag names its types, so nothing is imported on its word alone: only `pkg/msg/Name` names (identifier
    characters) are looked up, and `pkg.msg` is imported only when the ament index registers `pkg` as an
    interface package with that message. Raises ValueError for any other name."""
    match = MESSAGE_TYPE.fullmatch(msgtype)
    if match is None:
        raise ValueError(f"{msgtype!r} is not a message type (pkg/msg/Name)")
    package, name = match.groups()
    if not is_interface(package, name):
        return None
    try:
        module = importlib.import_module(f"{package}.msg")
    except ImportError:
        return None
    cls = getattr(module, name, None)
    return cls if isinstance(cls, type) else None


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


def _message_classes(path: Path, by_name: dict[str, list[Any]], wanted: set[str]) -> dict[str, type]:
    """The class of every wanted topic whose type is installed here; the others are named in a warning. A
    type name that is not a message type is a corrupt bag."""
    for topic, connections in sorted(by_name.items()):
        for connection in connections:
            if MESSAGE_TYPE.fullmatch(connection.msgtype) is None:
                raise ReplayError(
                    f"{path}: topic {topic}: {connection.msgtype!r} is not a message type (pkg/msg/Name)"
                )
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
    return classes


def _play(reader: Any, path: Path, args: argparse.Namespace) -> int:
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

    classes = _message_classes(path, by_name, wanted)
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
    with _ros_node() as node:
        publishers = _publishers(node, classes, by_name, remap, args.qos)
        clock = _Clock(args.rate)
        stop = threading.Event()
        clock_thread = None
        waited = _unique(publishers)
        if args.clock is not None:
            from rosgraph_msgs.msg import Clock

            clock_publisher = node.create_publisher(Clock, "/clock", DEPTH)
            waited.append(clock_publisher)
            clock_thread = threading.Thread(
                target=_publish_clock, args=(clock_publisher, clock, args.clock, stop), daemon=True
            )
        if args.wait_for_subscribers:
            _wait_for_subscribers(path, waited, args.wait_for_subscribers, args.wait_timeout)
        if clock_thread is not None:
            clock_thread.start()
        try:
            if args.delay:
                time.sleep(args.delay)
            if args.start_paused:
                print("xkd-replay: paused; press Enter to play", flush=True)
                sys.stdin.readline()
            played = _play_once(reader, path, connections, publishers, clock)
            _check_counts(path, connections, played)
            while args.loop:
                _play_once(reader, path, connections, publishers, clock)
        finally:
            stop.set()
            if clock_thread is not None:
                clock_thread.join()
        _wait_for_acks(path, publishers, args.wait_timeout)
    return 0


@contextlib.contextmanager
def _ros_node() -> Iterator[Any]:
    """A node `xkd_replay` in the default context, with the large-data Fast DDS profile (config/fastdds.xml)
    unless FASTDDS_DEFAULT_PROFILES_FILE is set; os.environ is as it was afterwards."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    overrides = {}
    if not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        profile = _fastdds_profile()
        if profile is not None:
            overrides["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    node = None
    try:
        with process_environment(overrides):
            # No arguments: rcl would read FROM:=TO in our own command line as its own (deprecated) remap
            # rules. No SIGINT handler: it would shut the context down under a publish; Ctrl-C raises
            # KeyboardInterrupt instead.
            rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
            node = rclpy.create_node("xkd_replay")
        yield node
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


def _fastdds_profile() -> Path | None:
    """config/fastdds.xml of the package (large messages over shared memory), or None without one."""
    try:
        from xkd_ros.paths import config_path

        profile = config_path("fastdds.xml")
    except Exception:  # no share directory: keep Fast DDS's defaults
        return None
    return profile if profile.is_file() else None


def _publishers(
    node: Any, classes: dict[str, type], by_name: dict[str, list[Any]], remap: dict[str, str], qos_name: str
) -> dict[int, Any]:
    """One publisher per played topic (under its remapped name), keyed by the ids of its connections."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    reliability = ReliabilityPolicy.RELIABLE if qos_name == "reliable" else ReliabilityPolicy.BEST_EFFORT
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
    return publishers


def _unique(publishers: dict[int, Any]) -> list[Any]:
    return list({id(p): p for p in publishers.values()}.values())


def _wait_for_subscribers(path: Path, publishers: list[Any], wanted: int, timeout: float) -> None:
    """Block until every publisher has `wanted` matched subscriptions; ReplayError naming the topics that
    have fewer after `timeout` seconds. Matching is DDS discovery, done by its own threads: no spinning."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    waiting = publishers
    while True:
        waiting = [p for p in waiting if p.get_subscription_count() < wanted]
        if not waiting:
            break
        if time.monotonic() >= deadline:
            names = ", ".join(sorted(p.topic_name for p in waiting))
            what = "no subscriber" if wanted == 1 else f"fewer than {wanted} subscribers"
            raise ReplayError(f"{path}: {what} matched on {names} within {timeout:g} s")
        time.sleep(POLL_S)
    print(
        f"xkd-replay: {wanted} subscriber(s) matched on every topic after {time.monotonic() - started:.1f} s",
        flush=True,
    )


def _wait_for_acks(path: Path, publishers: dict[int, Any], timeout: float) -> None:
    """Wait (at most `timeout` s in all) until every reliable subscriber acknowledged all messages, so that
    leaving does not take the last ones with it; warn naming the topics still unacknowledged."""
    from rclpy.duration import Duration

    deadline = time.monotonic() + timeout
    unacked = []
    for publisher in _unique(publishers):
        left = max(deadline - time.monotonic(), 0.0)
        if not publisher.wait_for_all_acked(Duration(nanoseconds=int(left * NS_PER_S))):
            unacked.append(publisher.topic_name)
    if unacked:
        print(
            f"xkd-replay: warning: {path}: not acknowledged by every subscriber within {timeout:g} s: "
            f"{', '.join(sorted(unacked))}",
            file=sys.stderr,
        )


def _play_once(
    reader: Any, path: Path, connections: list[Any], publishers: dict[int, Any], clock: _Clock
) -> Counter:
    """One pass over the bag with the recorded timing; returns the messages played per connection id. A
    message that cannot be read is a ReplayError saying how far the play got."""
    start: float | None = None
    first_ns = 0
    played: Counter = Counter()
    messages = reader.messages(connections=connections)
    while True:
        try:
            connection, log_ns, raw = next(messages)
        except StopIteration:
            return played
        except Exception as error:  # rosbags, sqlite (apsw), mcap decoding: the storage is damaged
            total = sum(played.values())
            raise ReplayError(
                f"{path}: cannot read message {total + 1} (after {total} played): {_first_line(error)}"
            ) from None
        if start is None:
            start, first_ns = time.monotonic(), log_ns
            clock.reset(first_ns, start)
        _sleep_until(start + (log_ns - first_ns) / NS_PER_S / clock.rate)
        publishers[connection.id].publish(bytes(raw))
        played[connection.id] += 1


def _check_counts(path: Path, connections: list[Any], played: Counter) -> None:
    """metadata.yaml's message count per topic against what the storage held: a bag whose metadata lies
    (or whose storage lost messages, as a damaged mcap chunk does silently) is an error, not a short play."""
    said: Counter = Counter()
    held: Counter = Counter()
    for connection in connections:
        said[connection.topic] += connection.msgcount
        held[connection.topic] += played[connection.id]
    wrong = [
        f"{said[t]} messages on {t}, the storage holds {held[t]}" for t in sorted(said) if said[t] != held[t]
    ]
    if wrong:
        raise ReplayError(f"{path}: metadata.yaml says {'; '.join(wrong)}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return play(args)
    except ReplayError as error:
        print(f"xkd-replay: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
