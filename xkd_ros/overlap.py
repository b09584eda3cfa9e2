"""`NewestWorker`: a thread of its own that works on the newest item handed to it, through a queue of one.

segment_node prepares scan N+1 (decode, pre-processing: numpy and OpenCV on the executor's thread) while
scan N is in inference on this worker (ONNX Runtime releases the GIL). Between them is one slot, not a
queue: an item put while another still waits replaces it, and the replaced one is counted (`superseded`),
so a node slower than its input labels the newest scan and its latency never builds up behind a backlog.
A caller that wants every item instead (an evaluation working through a recording) waits for the slot to
be free: the queue stays one deep and the wait holds the producer back. Plain threading, no ROS: what the
node does with an item is the `work` callable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["NewestWorker"]

T = TypeVar("T")


class NewestWorker(Generic[T]):
    """Runs `work(item, queued_ms)` on a daemon thread for the newest item `put`, one at a time.

    `queued_ms` is how long the item waited in the slot for the worker (about 0 when the worker was idle,
    at most one `work` call otherwise). An exception `work` raises is given to `on_error` (segment_node
    counts and logs it) and the worker goes on with the next item.
    """

    def __init__(
        self,
        work: Callable[[T, float], None],
        on_error: Callable[[BaseException], None],
        name: str = "worker",
    ) -> None:
        self._work = work
        self._on_error = on_error
        self._changed = threading.Condition()
        self._slot: tuple[T, float] | None = None  # the waiting item and when it was put (perf_counter)
        self._busy = False
        self._stopping = False
        self.superseded = 0  # items replaced in the slot by a newer one before the worker took them
        self.discarded_at_stop = 0  # an item still waiting when `stop` was called
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: T, wait: bool = False) -> bool:
        """Hand `item` to the worker; returns True when it replaced an item still waiting (counted in
        `superseded`). With `wait`, first wait until the worker has taken the waiting item: nothing is
        replaced. After `stop` the item is refused (False, counted in `discarded_at_stop`). The item's
        `queued_ms` counts from this call."""
        put_at = time.perf_counter()
        with self._changed:
            if wait:
                self._changed.wait_for(lambda: self._slot is None or self._stopping)
            if self._stopping:
                self.discarded_at_stop += 1
                return False
            replaced = self._slot is not None
            self.superseded += replaced
            self._slot = (item, put_at)
            self._changed.notify_all()
        return replaced

    def idle(self, timeout: float | None = None) -> bool:
        """Wait until no item waits and none is being worked on (False if `timeout` seconds passed first):
        for callers that need to know what a `put` led to (tests)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._slot is None and not self._busy, timeout)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop taking items and end the thread once the item in `work` (if any) is done; an item still
        waiting is discarded (counted). Returns whether the thread ended within `timeout` seconds."""
        with self._changed:
            self._stopping = True
            if self._slot is not None:
                self.discarded_at_stop += 1
                self._slot = None
            self._changed.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._slot is not None or self._stopping)
                if self._stopping or self._slot is None:
                    return
                (item, put_at), self._slot = self._slot, None
                self._busy = True
            try:
                self._work(item, 1e3 * (time.perf_counter() - put_at))
            except Exception as error:  # one item failed, not the worker
                self._on_error(error)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()
