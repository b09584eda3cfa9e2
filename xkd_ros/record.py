"""`xkd-record OUT -t TOPIC ...`: `ros2 bag record` for machines without rosbag2, and the recorder behind
`xkd-demo` and `xkd-evaluate --live --record`.

Each topic is subscribed raw (the serialised CDR bytes rclpy receives, never deserialised) with the QoS its
publishers offer (reliable only where all of them are, transient local only where all of them are: a reader
asking for more than a writer offers never matches it) and every message is written with its receive time
(the middleware's reception stamp) into a rosbag2 bag in mcap storage (rosbags' Writer). The bag holds what
the tools that open it need:

- each topic's message definition (from rosbags' ROS 2 Kilted type store, else from the `.msg` files of the
  interface packages in the ament index) in the mcap schema records, so that Foxglove and mcap readers
  decode it without ROS;
- the QoS profiles the publishers offered, in metadata.yaml and in the mcap channel metadata, so that
  `ros2 bag play` offers a latched topic (the node's class markers, /tf_static) transient local again.

    xkd-record OUT -t TOPIC [TOPIC ...] [--all] [--duration S]

Topics are subscribed as their publishers appear (their type and QoS come from the graph), until Ctrl-C or
--duration seconds; then the bag is closed and the messages written per topic are printed, with the topics
that never had a publisher. OUT is a new bag folder (OUT/OUT.mcap + metadata.yaml), never overwritten.

`joined` is how a tool process joins a node's DDS graph (here, in the live listener xkd_ros.evaluate.live and
in the benchmarks): an rclpy context of its own, the environment left as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rosbags.interfaces import (
    Nodetype,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from xkd_ros.replay import MESSAGE_TYPE, ament_prefixes, message_class
from xkd_ros.ros_env import process_environment

__all__ = [
    "BagSink",
    "Follower",
    "RecordError",
    "Recorder",
    "joined",
    "main",
    "reader_policy",
    "replay_offer",
    "rosbags_qos",
]

NS_PER_S = 1_000_000_000
DEPTH = 100  # a reader's queue: the executor may be busy writing images while clouds come in
POLL_S = 0.1  # how often the graph is looked at for the publishers of topics not yet subscribed
# Read from the environment when a DDS participant is created (ROS_DOMAIN_ID goes to rclpy.init).
PARTICIPANT_VARIABLES = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE")


class RecordError(RuntimeError):
    """A topic cannot be recorded, or the bag cannot be written; the text names the topic or the path."""


def rosbags_qos(profile: Any) -> Qos:
    """An rclpy QoSProfile (as the graph reports a publisher's) as rosbags writes it into a bag."""

    def duration(value: Any) -> QosTime:
        return QosTime(*divmod(int(value.nanoseconds), NS_PER_S))

    return Qos(
        QosHistory(int(profile.history)),
        int(profile.depth),
        QosReliability(int(profile.reliability)),
        QosDurability(int(profile.durability)),
        duration(profile.deadline),
        duration(profile.lifespan),
        QosLiveliness(int(profile.liveliness)),
        duration(profile.liveliness_lease_duration),
        bool(profile.avoid_ros_namespace_conventions),
    )


def replay_offer(latched: bool = False) -> Qos:
    """What xkd-replay offers with its default --qos reliable: reliable, volatile, keep last 10; a latched
    topic reliable, transient local, keep last 1. For topics recorded before their publisher is up."""
    zero = QosTime(0, 0)
    return Qos(
        QosHistory.KEEP_LAST,
        1 if latched else 10,
        QosReliability.RELIABLE,
        QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
        zero,
        zero,
        QosLiveliness.AUTOMATIC,
        zero,
        False,
    )


def reader_policy(offered: Sequence[Qos]) -> tuple[bool, bool]:
    """(reliable, transient local) of a reader that matches every one of the `offered` writer profiles
    and asks for as much as all of them give: a reliable reader never matches a best-effort writer, a
    transient-local reader never a volatile one."""
    reliable = bool(offered) and all(q.reliability == QosReliability.RELIABLE for q in offered)
    latched = bool(offered) and all(q.durability == QosDurability.TRANSIENT_LOCAL for q in offered)
    return reliable, latched


def _msg_file(msgtype: str) -> Path | None:
    """share/<pkg>/msg/<Name>.msg of 'pkg/msg/Name' in the first ament prefix that has it."""
    match = MESSAGE_TYPE.fullmatch(msgtype)
    if match is None:
        return None
    package, name = match.groups()
    for prefix in ament_prefixes():
        path = prefix / "share" / package / "msg" / f"{name}.msg"
        if path.is_file():
            return path
    return None


def _nested(fields: Iterable[tuple[str, Any]]) -> Iterable[str]:
    """The message types a type's fields name (arrays and sequences of them included)."""
    for _, (kind, detail) in fields:
        if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            kind, detail = detail[0]
        if kind == Nodetype.NAME:
            yield detail


class BagSink:
    """The writing side, without ROS: a new rosbag2 bag in mcap storage, one connection per topic with its
    message definition and offered QoS profiles, and the messages written per topic."""

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out)
        if self.path.exists():
            raise RecordError(f"{self.path}: exists already; a recording goes to a new folder")
        self.typestore = get_typestore(Stores.ROS2_KILTED)
        self.writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
        try:
            self.writer.open()
        except OSError as error:
            raise RecordError(f"{self.path}: cannot create the bag: {error.strerror or error}") from None
        self.connections: dict[str, Any] = {}
        self.counts: Counter[str] = Counter()

    def _define(self, msgtype: str, topic: str) -> None:
        """Make sure the type store knows `msgtype` and every type it nests, from the ament index's .msg
        files where rosbags' ROS 2 Kilted store lacks them."""
        pending = [msgtype]
        while pending:
            name = pending.pop()
            if name in self.typestore.fielddefs:
                pending += [
                    n for n in _nested(self.typestore.fielddefs[name][1]) if n not in self.typestore.fielddefs
                ]
                continue
            path = _msg_file(name)
            if path is None:
                raise RecordError(
                    f"{topic}: type {msgtype}: no message definition of {name} (neither in rosbags' ROS 2 "
                    "Kilted types nor as a .msg file of an interface package in the ament index)"
                )
            self.typestore.register(get_types_from_msg(path.read_text(), name))
            pending.append(name)

    def add(self, topic: str, msgtype: str, offered: Sequence[Qos]) -> None:
        """A connection for `topic`: its message definition and the QoS profiles its publishers offer."""
        if topic in self.connections:
            return
        self._define(msgtype, topic)
        self.connections[topic] = self.writer.add_connection(
            topic, msgtype, typestore=self.typestore, offered_qos_profiles=list(offered)
        )

    def write(self, topic: str, log_ns: int, data: bytes) -> None:
        self.writer.write(self.connections[topic], log_ns, data)
        self.counts[topic] += 1

    def close(self) -> Counter[str]:
        """Close the bag (writes the mcap summary and metadata.yaml); returns the messages per topic."""
        self.writer.close()
        return self.counts


class Recorder:
    """Raw subscriptions of `node` written to a BagSink (rclpy glue). Callbacks run in the executor that
    spins `node`, which must be the one thread that also calls close()."""

    def __init__(self, node: Any, out: str | Path, depth: int = DEPTH) -> None:
        self.node = node
        self.depth = depth
        self.sink = BagSink(out)
        self.subscriptions: dict[str, Any] = {}

    @property
    def path(self) -> Path:
        return self.sink.path

    @property
    def counts(self) -> Counter[str]:
        return self.sink.counts

    def add(self, topic: str, msgtype: str | None = None, offered: Sequence[Qos] | None = None) -> Any:
        """Subscribe to `topic` raw and record it. Its type and offered QoS come from its publishers in the
        graph, or, for a topic whose publisher is not up yet, from `msgtype` and `offered`. Returns the
        subscription (its get_publisher_count() tells when it is matched)."""
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        if topic in self.subscriptions:
            return self.subscriptions[topic]
        if msgtype is None or offered is None:
            infos = self.node.get_publishers_info_by_topic(topic)
            if not infos:
                raise RecordError(f"{topic}: no publisher in the graph, so no type and QoS to record it with")
            types = sorted({info.topic_type for info in infos})
            if len(types) > 1:
                raise RecordError(f"{topic}: published with {len(types)} types ({', '.join(types)})")
            msgtype = types[0]
            offered = [rosbags_qos(info.qos_profile) for info in infos]
        try:
            cls = message_class(msgtype)
        except ValueError as error:
            raise RecordError(f"{topic}: {error}") from None
        if cls is None:
            raise RecordError(
                f"{topic}: type {msgtype} has no Python message package here (rclpy needs one to subscribe, "
                "even raw)"
            )
        self.sink.add(topic, msgtype, offered)
        reliable, latched = reader_policy(offered)
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=self.depth,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )

        def write(data: bytes, info: Any) -> None:
            received = int(info.get("received_timestamp") or 0)  # 0 where the middleware gives none
            self.sink.write(topic, received or time.time_ns(), data)

        self.subscriptions[topic] = self.node.create_subscription(cls, topic, write, qos, raw=True)
        return self.subscriptions[topic]

    def close(self) -> Counter[str]:
        """Stop recording: destroy the subscriptions, close the bag; the messages written per topic."""
        for subscription in self.subscriptions.values():
            self.node.destroy_subscription(subscription)
        self.subscriptions.clear()
        return self.sink.close()


@contextlib.contextmanager
def joined(env: Mapping[str, str], name: str) -> Iterator[tuple[Any, Any]]:
    """(node, executor) in an rclpy context of its own on the graph of `env`, torn down in the order rclpy
    wants (executor, node, context). ROS_DOMAIN_ID goes to rclpy.init; the participant variables are set in
    os.environ only while the participant is created (ros_env.process_environment), so this process's
    environment is unchanged afterwards. Fast DDS reads its profile file once per process, at the first
    participant: a process that joins graphs with different profiles needs a process per profile."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    context = rclpy.Context()
    domain = env.get("ROS_DOMAIN_ID")
    with process_environment({k: env[k] for k in PARTICIPANT_VARIABLES if k in env}):
        # No rclpy SIGINT handler: it would shut the context down under a spin; Ctrl-C raises
        # KeyboardInterrupt, and the teardown below runs as for any other end.
        rclpy.init(
            context=context,
            domain_id=int(domain) if domain else None,
            signal_handler_options=SignalHandlerOptions.NO,
        )
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


def _graph_topics(node: Any) -> dict[str, list[str]]:
    """Topics with at least one publisher other than `node` itself, and their types."""
    own = {(node.get_namespace().rstrip("/") + "/" + node.get_name())}
    topics = {}
    for topic, types in node.get_topic_names_and_types():
        publishers = node.get_publishers_info_by_topic(topic)
        others = [p for p in publishers if f"{p.node_namespace.rstrip('/')}/{p.node_name}" not in own]
        if others:
            topics[topic] = types
    return topics


def _hidden(topic: str) -> bool:
    """ROS's hidden names: a token that starts with an underscore."""
    return any(part.startswith("_") for part in topic.split("/"))


class Follower:
    """The command's side of a Recorder: subscribes the wanted topics (or, with `every`, all topics but
    hidden ones) once their publishers are in the graph. A wanted topic that cannot be recorded is a
    RecordError; with `every`, a topic of a type not installed here is skipped with a warning."""

    def __init__(self, recorder: Recorder, wanted: Iterable[str], every: bool = False) -> None:
        self.recorder = recorder
        self.wanted = set(wanted)
        self.every = every
        self.refused: set[str] = set()

    def look(self) -> None:
        available = set(_graph_topics(self.recorder.node))
        candidates = {t for t in available if not _hidden(t)} if self.every else self.wanted & available
        for topic in sorted(candidates - set(self.recorder.subscriptions) - self.refused):
            try:
                self.recorder.add(topic)
            except RecordError as error:
                if topic in self.wanted:
                    raise
                self.refused.add(topic)
                print(f"xkd-record: warning: not recorded: {error}", file=sys.stderr)
            else:
                print(f"xkd-record: subscribed to {topic}", flush=True)

    def close(self) -> Counter[str]:
        """Close the bag; print the messages per topic and the wanted topics that never had a publisher."""
        never = sorted(self.wanted - set(self.recorder.subscriptions))
        counts = self.recorder.close()
        for topic in sorted(self.recorder.sink.connections):
            print(f"xkd-record: {topic}: {counts[topic]} messages")
        if never:
            print(f"xkd-record: warning: no publisher ever appeared on {', '.join(never)}", file=sys.stderr)
        print(f"xkd-record: {sum(counts.values())} messages in {self.recorder.path}")
        return counts


def record(node: Any, executor: Any, args: argparse.Namespace) -> Counter[str]:
    """Follow the wanted topics and record until --duration or Ctrl-C; the bag is closed however it ends."""
    follower = Follower(Recorder(node, args.out), args.topics, args.all)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    print(f"xkd-record: recording to {follower.recorder.path} (Ctrl-C to stop)", flush=True)
    next_look = 0.0
    try:
        while deadline is None or time.monotonic() < deadline:
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + POLL_S
                follower.look()
            executor.spin_once(timeout_sec=POLL_S)
    except KeyboardInterrupt:
        pass
    finally:
        counts = follower.close()
    return counts


def _absolute(topic: str) -> str:
    return topic if topic.startswith("/") else "/" + topic


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xkd-record", description="Record ROS 2 topics into a rosbag2 mcap bag, without rosbag2."
    )
    parser.add_argument("out", type=Path, help="the new bag folder (OUT/OUT.mcap and metadata.yaml)")
    parser.add_argument(
        "-t", "--topics", nargs="+", default=[], metavar="TOPIC", help="topics to record (as they appear)"
    )
    parser.add_argument("--all", action="store_true", help="every topic that has a publisher")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    args = parser.parse_args(argv)
    if not args.topics and not args.all:
        parser.error("nothing to record: give -t TOPIC ... or --all")
    if args.duration is not None and not args.duration > 0:
        parser.error(f"--duration: {args.duration:g} is not > 0")
    args.topics = [_absolute(t) for t in args.topics]
    if args.out.exists():
        print(
            f"xkd-record: error: {args.out}: exists already; a recording goes to a new folder",
            file=sys.stderr,
        )
        return 1

    from xkd_ros.paths import config_path

    env = dict(os.environ)
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(config_path("fastdds.xml")))  # large messages
    try:
        with joined(env, "xkd_record") as (node, executor):
            record(node, executor, args)
    except RecordError as error:
        print(f"xkd-record: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the recording started
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
