"""message_filters for pip-only installs: the Python API of ros2/message_filters, re-implemented over rclpy.

message_filters has no PyPI wheel, so code written for it (``from message_filters import Subscriber,
ApproximateTimeSynchronizer``) has nothing to import on a pip-only install. This module provides the names
that code uses, with upstream's semantics, so that it runs with the import swapped:

- :class:`SimpleFilter`: ``registerCallback(cb, *args)`` / ``signalMessage(*msgs)``, the chaining interface.
- :class:`Subscriber`: a source filter over ``node.create_subscription`` (QoS depth 10 unless given).
- :class:`Cache`: the newest ``cache_size`` messages in stamp order, with the interval queries.
- :class:`TimeSynchronizer`: sets of messages whose stamps are exactly equal.
- :class:`ApproximateTimeSynchronizer`: sets whose stamps lie within ``slop`` of each other
  (``allow_headerless``, ``sync_arrival_time``).

Relation to :mod:`xkd_ros.sync`: both match stamps within a threshold, but the policies differ in what a
missing input does, and upstream's policy is kept for these names (upstream's own tests run unchanged
against this module: test/test_upstream_apis.py). The node's scan-referenced ``Collector`` waits at most a
timeout for each camera and then emits the scan anyway, its missing cameras named (a LiDAR-only set), and
hands out only the newest ready set. ``ApproximateTimeSynchronizer`` is symmetric (no reference input),
emits only complete sets, in every completed order, and drops a set one input never completes: its other
messages age out of the ``queue_size`` queues. Reusing the Collector here would change upstream's results
(it would emit incomplete sets and skip superseded ones), so the two share the idea, not the code;
docs/msgs.md says when to use which, with a measured example (bench/bench_sync_policies.py).

Stamps are compared as integer nanoseconds. ``header.stamp`` may be an ``rclpy.time.Time`` (as upstream's
tests use) or a ``builtin_interfaces/Time`` message. Messages that cannot be stamped (no ``header.stamp``
without ``allow_headerless``) are dropped with a warning on the rclpy logger, as upstream does, and counted
in ``dropped_headerless``.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from typing import Any

import rclpy.logging
from rclpy.clock import ROSClock
from rclpy.duration import Duration
from rclpy.time import Time

__all__ = ["ApproximateTimeSynchronizer", "Cache", "SimpleFilter", "Subscriber", "TimeSynchronizer"]

_HEADERLESS_WARNING = (
    "message_filters: a message without header.stamp was dropped; construct with allow_headerless=True "
    "to stamp such messages with the current ROS time"
)


def _has_stamp(msg: Any) -> bool:
    return hasattr(msg, "header") and hasattr(msg.header, "stamp")


def _as_time(stamp: Any) -> Time:
    """``header.stamp`` as an rclpy Time: an rclpy Time stays as it is (its clock type is kept, so mixing
    clocks still fails as rclpy makes it), a builtin_interfaces/Time message becomes ROS time."""
    if isinstance(stamp, Time):
        return stamp
    return Time.from_msg(stamp)


class SimpleFilter:
    """The filter interface: callbacks registered on a filter receive its output messages.

    A callback registered with extra ``args`` is called as ``cb(*msgs, *args)``; the returned connection id
    indexes ``callbacks`` (upstream code removes a connection with ``callbacks.pop(id)``).
    """

    def __init__(self) -> None:
        self.callbacks: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
        self._next_connection = 0

    def registerCallback(self, cb: Callable[..., Any], *args: Any) -> int:  # noqa: N802 (upstream name)
        """Call ``cb(*msgs, *args)`` for every output of this filter; returns the connection id."""
        connection = self._next_connection
        self._next_connection += 1
        self.callbacks[connection] = (cb, args)
        return connection

    def signalMessage(self, *msg: Any) -> None:  # noqa: N802 (upstream name)
        """Hand ``msg`` to every registered callback, in registration order."""
        for cb, args in list(self.callbacks.values()):
            cb(*msg, *args)


class Subscriber(SimpleFilter):
    """A subscription as the first filter of a chain: ``Subscriber(node, msg_type, topic, qos_profile=10,
    **kwargs)`` takes ``node.create_subscription``'s arguments and passes every message on.

    Attributes it does not define are the subscription's (``sub.topic_name``, ``get_publisher_count()``...).
    """

    def __init__(self, node: Any, msg_type: Any, topic: str, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.node = node
        self.topic = topic
        if not args:
            kwargs.setdefault("qos_profile", 10)
        self.sub = node.create_subscription(msg_type, topic, self.callback, *args, **kwargs)

    def callback(self, msg: Any) -> None:
        """The subscription callback: pass ``msg`` on."""
        self.signalMessage(msg)

    def getTopic(self) -> str:  # noqa: N802 (upstream name)
        """The topic name as given."""
        return self.topic

    def __getattr__(self, key: str) -> Any:
        # Only called for names not found on the filter; "sub" itself missing means __init__ failed.
        if key == "sub":
            raise AttributeError(key)
        return getattr(self.sub, key)


class Cache(SimpleFilter):
    """The newest ``cache_size`` messages of a filter, ordered by stamp, with time queries.

    Every added message is passed on. A message added with an older stamp is inserted in stamp order; past
    ``cache_size`` the oldest stamp goes. With ``allow_headerless`` a message without ``header.stamp`` is
    stamped with the current ROS time (arrival order then decides, so avoid it where stamps exist).
    """

    def __init__(self, f: SimpleFilter, cache_size: int = 1, allow_headerless: bool = False) -> None:
        super().__init__()
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f"Cache cache_size must be an integer >= 1, got {cache_size!r}")
        self.cache_size = cache_size
        self.allow_headerless = allow_headerless
        self.cache_msgs: list[Any] = []
        self.cache_times: list[Time] = []
        self.dropped_headerless = 0
        self.connectInput(f)

    def connectInput(self, f: SimpleFilter) -> None:  # noqa: N802 (upstream name)
        """Take the messages of filter ``f``."""
        self.incoming_connection = f.registerCallback(self.add)

    def add(self, msg: Any) -> None:
        """Cache ``msg`` by its stamp and pass it on."""
        if _has_stamp(msg):
            stamp = _as_time(msg.header.stamp)
        elif self.allow_headerless:
            stamp = ROSClock().now()
        else:
            self.dropped_headerless += 1
            rclpy.logging.get_logger("message_filters_cache").warning(_HEADERLESS_WARNING)
            return
        # After equal stamps, so that equal stamps keep arrival order.
        index = bisect.bisect_right(self.cache_times, stamp)
        self.cache_times.insert(index, stamp)
        self.cache_msgs.insert(index, msg)
        if len(self.cache_msgs) > self.cache_size:
            del self.cache_msgs[0]
            del self.cache_times[0]
        self.signalMessage(msg)

    def getInterval(self, from_stamp: Time, to_stamp: Time) -> list[Any]:  # noqa: N802 (upstream name)
        """The cached messages stamped in ``[from_stamp, to_stamp]``, oldest first."""
        if to_stamp < from_stamp:
            raise ValueError(f"Cache.getInterval: from_stamp {from_stamp} is after to_stamp {to_stamp}")
        return [
            msg
            for msg, time in zip(self.cache_msgs, self.cache_times, strict=True)
            if from_stamp <= time <= to_stamp
        ]

    def getElemAfterTime(self, stamp: Time) -> Any | None:  # noqa: N802 (upstream name)
        """The oldest message stamped at or after ``stamp``, or None."""
        return next(
            (msg for msg, time in zip(self.cache_msgs, self.cache_times, strict=True) if time >= stamp), None
        )

    def getElemBeforeTime(self, stamp: Time) -> Any | None:  # noqa: N802 (upstream name)
        """The newest message stamped at or before ``stamp``, or None."""
        return next((msg for msg, time in reversed(self._pairs()) if time <= stamp), None)

    def _pairs(self) -> list[tuple[Any, Time]]:
        return list(zip(self.cache_msgs, self.cache_times, strict=True))

    def getLastestTime(self) -> Time | None:  # noqa: N802 (upstream's spelling)
        """The newest cached stamp, or None when empty."""
        return self.cache_times[-1] if self.cache_times else None

    def getOldestTime(self) -> Time | None:  # noqa: N802 (upstream name)
        """The oldest cached stamp, or None when empty."""
        return self.cache_times[0] if self.cache_times else None

    def getLast(self) -> Any | None:  # noqa: N802 (upstream name)
        """The message with the newest stamp, or None when empty."""
        return self.cache_msgs[-1] if self.cache_msgs else None


class TimeSynchronizer(SimpleFilter):
    """Sets of one message per input filter with exactly equal stamps: ``cb(msg_1, ..., msg_n)``.

    Each input keeps its newest ``queue_size`` stamps (one message per stamp, the later one wins); a stamp
    that is not completed before it falls out of a queue never makes a set. Callbacks run after the lock is
    released, so a callback may feed this synchroniser again.
    """

    def __init__(self, fs: Sequence[SimpleFilter], queue_size: int) -> None:
        super().__init__()
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"{type(self).__name__} queue_size must be an integer >= 1, got {queue_size!r}")
        self.queue_size = queue_size
        self.lock = threading.Lock()
        self.dropped_headerless = 0
        self.connectInput(fs)

    def connectInput(self, fs: Sequence[SimpleFilter]) -> None:  # noqa: N802 (upstream name)
        """Take the messages of the filters ``fs``, one queue (stamp ns -> message) per filter."""
        self.queues: list[dict[int, Any]] = [{} for _ in fs]
        self.input_connections = [
            f.registerCallback(self.add, queue, index)
            for index, (f, queue) in enumerate(zip(fs, self.queues, strict=True))
        ]

    def add(self, msg: Any, my_queue: dict[int, Any], my_queue_index: int | None = None) -> None:
        """Queue ``msg`` (from the input owning ``my_queue``) and emit every set it completes."""
        if not _has_stamp(msg):
            self._drop_headerless("message_filters_time")
            return
        stamp = _as_time(msg.header.stamp).nanoseconds
        with self.lock:
            self._enqueue(my_queue, stamp, msg)
            complete = set(self.queues[0]).intersection(*self.queues[1:])
            sets = [[queue.pop(t) for queue in self.queues] for t in sorted(complete)]
        for msgs in sets:
            self.signalMessage(*msgs)

    def _enqueue(self, queue: dict[int, Any], stamp: int, msg: Any) -> None:
        queue[stamp] = msg
        while len(queue) > self.queue_size:
            del queue[min(queue)]

    def _drop_headerless(self, logger: str) -> None:
        self.dropped_headerless += 1
        rclpy.logging.get_logger(logger).warning(_HEADERLESS_WARNING)


class ApproximateTimeSynchronizer(TimeSynchronizer):
    """Sets of one message per input whose stamps all lie within ``slop`` seconds: ``cb(msg_1, ..., msg_n)``.

    Upstream's policy: when a message arrives, each other input offers its queued messages within ``slop`` of
    it, nearest first; the first combination (in that order) whose stamps span less than ``slop`` is emitted
    and its messages leave the queues. A set whose input is missing is never emitted; its messages age out
    of the ``queue_size`` queues. ``allow_headerless`` stamps messages without ``header.stamp`` with the
    current ROS time; ``sync_arrival_time`` stamps every message so, ignoring its header (for sources whose
    clocks disagree). The search is depth-first with pruning, which finds the same combination as trying
    every one in order, without trying them all.
    """

    def __init__(
        self,
        fs: Sequence[SimpleFilter],
        queue_size: int,
        slop: float,
        allow_headerless: bool = False,
        sync_arrival_time: bool = False,
    ) -> None:
        super().__init__(fs, queue_size)
        self.slop = Duration(seconds=slop)
        # Upstream requires a span strictly under slop, so slop 0 would never emit: refuse it.
        if self.slop.nanoseconds <= 0:
            raise ValueError(f"ApproximateTimeSynchronizer slop must be > 0 seconds, got {slop}")
        self.allow_headerless = allow_headerless
        self.sync_arrival_time = sync_arrival_time

    def add(self, msg: Any, my_queue: dict[int, Any], my_queue_index: int | None = None) -> None:
        """Queue ``msg`` and emit the set it completes, if any."""
        if self.sync_arrival_time or (self.allow_headerless and not _has_stamp(msg)):
            stamp = ROSClock().now().nanoseconds
        elif _has_stamp(msg):
            stamp = _as_time(msg.header.stamp).nanoseconds
        else:
            self._drop_headerless("message_filters_approx")
            return
        if my_queue_index is None:
            my_queue_index = next(i for i, queue in enumerate(self.queues) if queue is my_queue)
        slop = self.slop.nanoseconds
        with self.lock:
            self._enqueue(my_queue, stamp, msg)
            if stamp not in my_queue:  # older than everything queued: it was pushed out at once
                return
            candidates = []
            for index, queue in enumerate(self.queues):
                if index == my_queue_index:
                    continue
                near = sorted((abs(t - stamp), t) for t in queue if abs(t - stamp) <= slop)
                if not near:
                    return
                candidates.append((index, [t for _, t in near]))
            chosen = self._first_combination(candidates, stamp, slop)
            if chosen is None:
                return
            chosen[my_queue_index] = stamp
            msgs = [queue.pop(chosen[index]) for index, queue in enumerate(self.queues)]
        self.signalMessage(*msgs)

    @staticmethod
    def _first_combination(
        candidates: list[tuple[int, list[int]]], stamp: int, slop: int
    ) -> dict[int, int] | None:
        """The first pick of one stamp per input, in nearest-first lexicographic order, spanning < slop."""
        chosen: dict[int, int] = {}

        def search(depth: int, low: int, high: int) -> bool:
            if depth == len(candidates):
                return True
            index, stamps = candidates[depth]
            for t in stamps:
                lo, hi = min(low, t), max(high, t)
                # The span only grows as inputs are added, so a partial pick at or over slop is final.
                if hi - lo < slop:
                    chosen[index] = t
                    if search(depth + 1, lo, hi):
                        return True
            return False

        return chosen if search(0, stamp, stamp) else None
