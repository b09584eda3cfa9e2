"""What every message reader checks of a size or offset field: hand-made and deserialised messages (rosbags,
rclpy without ROS_PYTHON_CHECK_FIELDS) are not type-checked, so a width may be -1, 2.5 or None."""

from __future__ import annotations

import operator


def whole_number(value: object) -> int | None:
    """`value` as a non-negative int, or None where it is not one (each reader names the field its way)."""
    try:
        number = operator.index(value)
    except TypeError:
        return None
    return number if number >= 0 else None
