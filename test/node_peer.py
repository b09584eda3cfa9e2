"""The test side of a segment_node running in a subprocess (test_node.py, test_node_rigs.py): spin an rclpy
executor until a condition holds while the node stays alive, with the node's log in every failure, and wait
until every topic between the two is matched (a hand-shake, never a sleep)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["spin_until", "wait_matched"]


def spin_until(
    executor: Any,
    process: subprocess.Popen,
    log: Path,
    condition: Callable[[], bool],
    timeout: float,
    what: str | Callable[[], str],
) -> None:
    """Spin until `condition()`; AssertionError naming `what` (a callable: evaluated at the failure) and the
    log's tail when `timeout` seconds pass or the node process dies."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"node died: {log.read_text()[-3000:]}"
        if time.monotonic() >= deadline:
            named = what() if callable(what) else what
            raise AssertionError(f"timed out waiting for {named}; log: {log.read_text()[-3000:]}")
        executor.spin_once(timeout_sec=0.05)


def wait_matched(
    executor: Any,
    process: subprocess.Popen,
    log: Path,
    publishers: Mapping[str, Any],
    subscriptions: Mapping[str, Any],
    timeout: float,
) -> None:
    """Every input of the node matched to our `publishers`, its outputs to our `subscriptions` (by name)."""

    def unmatched() -> list[str]:
        return [n for n, p in publishers.items() if p.get_subscription_count() == 0] + [
            n for n, s in subscriptions.items() if s.get_publisher_count() == 0
        ]

    spin_until(
        executor,
        process,
        log,
        lambda: not unmatched(),
        timeout,
        lambda: f"the node's topics to match (unmatched: {unmatched()})",
    )
