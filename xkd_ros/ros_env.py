"""The DDS environment of the tools that start ROS processes (demo, live evaluation, tests); no rclpy here.

Two processes on one machine that pick the same ROS_DOMAIN_ID hear each other's topics, and Linux hands out
ephemeral ports from 32768 up, where Fast DDS puts the unicast ports of domains above 101 (7400 + 250 x id):
so an ID is taken from 0-101 and reserved for as long as it is used, by holding a TCP port bound on the
loopback address (the idea of ros-domain-coordinator, which ROS 2's own tests use). A bound
port is released by the kernel when its holder dies, so a crashed run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = [
    "DOMAIN_IDS",
    "MAX_DOMAIN_ID",
    "DomainUnavailableError",
    "RosEnvironmentError",
    "domain_environment",
    "process_environment",
    "reserve_domain_id",
    "ros_environment",
]

DOMAIN_IDS = range(1, 102)  # 0 is every ROS user's default: leave it to them
MAX_DOMAIN_ID = (
    232  # the highest a user may set: its Fast DDS ports still fit (ROS 2 docs, "The ROS_DOMAIN_ID")
)
_PORT_BASE = 32768 - 102  # below the ephemeral range; the same base for every xkd_ros process


class RosEnvironmentError(RuntimeError):
    """The DDS environment cannot be set up: a ROS_DOMAIN_ID that is not one, or none left to reserve."""


class DomainUnavailableError(RosEnvironmentError):
    """Every ROS_DOMAIN_ID in DOMAIN_IDS is reserved by another process."""


@contextlib.contextmanager
def reserve_domain_id() -> Iterator[int]:
    """A ROS_DOMAIN_ID no other xkd_ros process holds while the block runs.

    Starts at a random ID so that concurrent runs do not all contend for the first free one."""
    ids = list(DOMAIN_IDS)
    start = random.randrange(len(ids))
    for domain_id in ids[start:] + ids[:start]:
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            holder.bind(("127.0.0.1", _PORT_BASE + domain_id))
        except OSError:
            holder.close()
            continue
        try:
            yield domain_id
        finally:
            holder.close()
        return
    raise DomainUnavailableError(f"every ROS_DOMAIN_ID in {DOMAIN_IDS.start}-{DOMAIN_IDS.stop - 1} is in use")


def ros_environment(
    domain_id: int, base: Mapping[str, str] | None = None, fastdds_profile: Path | None = None
) -> dict[str, str]:
    """`base` (default os.environ) with this domain, discovery on this machine only, and the large-data
    Fast DDS profile (config/fastdds.xml) unless the user chose one. A new dict: os.environ is untouched."""
    env = dict(os.environ if base is None else base)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_LOCALHOST_ONLY", None)  # ignored by Kilted, and contradicts the line above on older ROS
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in env:
        if fastdds_profile is None:
            from xkd_ros.paths import config_path

            fastdds_profile = config_path("fastdds.xml")
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(fastdds_profile)
    return env


@contextlib.contextmanager
def domain_environment(
    announce: str | None = None, rviz_config: Path | None = None
) -> Iterator[dict[str, str]]:
    """The DDS environment for the processes of one run (`ros_environment`): on the user's ROS_DOMAIN_ID if
    one is set, else on one reserved for the block, so that two runs never share a domain. `announce` (a
    program name) prints the domain, for watching the run in rviz (with `rviz_config`, the run's config)."""
    given = os.environ.get("ROS_DOMAIN_ID", "").strip()
    with contextlib.ExitStack() as stack:
        if given:
            try:
                domain_id = int(given)
            except ValueError:
                domain_id = -1
            if not 0 <= domain_id <= MAX_DOMAIN_ID:
                raise RosEnvironmentError(
                    f"ROS_DOMAIN_ID {given!r} is not a whole number in 0-{MAX_DOMAIN_ID}"
                )
            how = "from the environment"
        else:
            domain_id = stack.enter_context(reserve_domain_id())
            how = "reserved for this run"
        env = ros_environment(domain_id)
        if announce:
            print(
                f"{announce}: ROS_DOMAIN_ID {domain_id} ({how}), discovery on this machine only; watch with "
                f"ROS_DOMAIN_ID={domain_id} ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST rviz2"
                + (f" -d {rviz_config}" if rviz_config else ""),
                flush=True,
            )
        yield env


@contextlib.contextmanager
def process_environment(values: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `values` for the duration of the block, restored afterwards.

    Fast DDS reads FASTDDS_DEFAULT_PROFILES_FILE and rcl reads ROS_AUTOMATIC_DISCOVERY_RANGE from the
    environment of the process when a context's DDS participant is created (rclpy.init and the first node),
    and never again: so a process can join a DDS graph with a given environment by holding it only around
    that creation, instead of changing os.environ for good (and for every later test in the process)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
