"""SegmentNode in this process, fed through its callbacks and its poll: no other process, no discovery and no
executor, so what each input did is known when the call returns and `node.labeller.wait_idle()` has seen the
inference thread finish (test_node.py, test_fuzz_node.py)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import rclpy

from xkd_ros.node import SegmentNode

__all__ = ["Log", "info", "restamped", "segment_node"]


class Log:
    """Stands in for the node's logger: the lines it was given, by level."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def warning(self, text: str) -> None:
        self.lines.append(("warning", text))

    def info(self, text: str) -> None:
        self.lines.append(("info", text))

    def error(self, text: str) -> None:
        self.lines.append(("error", text))

    def warnings(self, *parts: str) -> list[str]:
        """Warning lines holding every one of `parts`."""
        return [text for level, text in self.lines if level == "warning" and all(p in text for p in parts)]


@contextlib.contextmanager
def segment_node(*ros_args: str) -> Iterator[SegmentNode]:
    """A SegmentNode in an rclpy context of its own (on the domain the caller's ros_env reserved), built with
    `ros_args` (e.g. "-p", "sync.timeout:=0.0"), its log lines recorded in `node.log`."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = None
    try:
        node = SegmentNode(context=context, cli_args=["--ros-args", *ros_args] if ros_args else None)
        node.log = Log()
        node.get_logger = lambda: node.log
        yield node
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.shutdown(context=context)


def restamped(msg: Any, shift: int) -> Any:
    """A shallow copy of `msg` (its data shared) with its stamp `shift` whole seconds later: a frame's
    messages moved together keep their relative timing."""
    msg = copy.copy(msg)
    header = copy.deepcopy(msg.header)
    header.stamp.sec += shift
    msg.header = header
    return msg


def info(sequence: int, publisher: bytes = b"p") -> dict:
    """The MessageInfo rclpy hands a subscription callback, for publisher `publisher`'s message `sequence`."""
    return {"publication_sequence_number": sequence, "publisher_gid": {"data": publisher}}
