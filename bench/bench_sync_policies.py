"""Sets emitted by the node's Collector vs message_filters' ApproximateTimeSynchronizer on one stream.

A synthetic rig: a LiDAR at 10 Hz and six cameras stamped within a few ms of each scan, each arriving 20-60
ms after its stamp; one camera drops a share of its frames. Both policies see the same messages in the same
arrival order (the Collector also polled every 10 ms, as the node's timer does). Prints, per policy, the sets
emitted, how many were complete, and how many scans produced no output at all (docs/msgs.md quotes it).

    python bench/bench_sync_policies.py [--scans 100] [--cameras 6] [--drop 0.2] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, field

from rclpy.time import Time

from xkd_ros.message_filters import ApproximateTimeSynchronizer, SimpleFilter
from xkd_ros.sync import Collector, SyncConfig

PERIOD = 0.1  # s, 10 Hz
SLOP = 0.05  # s: ApproximateTimeSynchronizer's slop = the Collector's match_threshold
TIMEOUT = 0.1  # s: how long the Collector waits for a late camera
QUEUE = 10


@dataclass
class Header:
    stamp: Time


@dataclass
class Msg:
    """A stand-in for a stamped sensor message: which source, which scan it belongs to."""

    source: str
    index: int
    header: Header = field(repr=False)


def stream(scans: int, cameras: list[str], drop: float, seed: int) -> list[tuple[float, Msg]]:
    """(arrival time, message) in arrival order; the last camera drops ``drop`` of its frames."""
    rng = random.Random(seed)
    events = []
    for index in range(scans):
        stamp = 1.0 + index * PERIOD
        events.append((stamp + 0.005, Msg("lidar", index, Header(Time(seconds=stamp)))))
        for camera in cameras:
            if camera == cameras[-1] and rng.random() < drop:
                continue
            image_stamp = stamp + rng.uniform(-0.005, 0.005)
            arrival = image_stamp + rng.uniform(0.02, 0.06)
            events.append((arrival, Msg(camera, index, Header(Time(seconds=image_stamp)))))
    events.sort(key=lambda event: event[0])
    return events


def run_collector(events: list[tuple[float, Msg]], cameras: list[str]) -> list[tuple[int, int]]:
    """(scan index, cameras matched) per emitted set."""
    collector = Collector(SyncConfig(cameras=tuple(cameras), match_threshold=SLOP, timeout=TIMEOUT))
    sets = []

    def poll(now: float) -> None:
        while (synced := collector.poll(now)) is not None:
            sets.append((synced.scan.index, len(synced.images)))

    tick = events[0][0]
    for arrival, msg in events:
        while tick < arrival:  # the node's poll timer
            poll(tick)
            tick += 0.01
        stamp = msg.header.stamp.nanoseconds * 1e-9
        if msg.source == "lidar":
            collector.add_scan(stamp, msg, arrival)
        else:
            collector.add_image(msg.source, stamp, msg, arrival)
        poll(arrival)
    poll(events[-1][0] + TIMEOUT + 0.01)
    return sets


def run_approximate(events: list[tuple[float, Msg]], cameras: list[str]) -> list[tuple[int, int]]:
    """(scan index, cameras matched) per emitted set."""
    inputs = {name: SimpleFilter() for name in ["lidar", *cameras]}
    sync = ApproximateTimeSynchronizer(list(inputs.values()), QUEUE, SLOP)
    sets = []
    sync.registerCallback(lambda scan, *images: sets.append((scan.index, len(images))))
    for _, msg in events:
        inputs[msg.source].signalMessage(msg)
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=100)
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--drop", type=float, default=0.2, help="share of frames the last camera drops")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cameras = [f"cam{i}" for i in range(args.cameras)]
    events = stream(args.scans, cameras, args.drop, args.seed)
    dropped = args.scans - sum(msg.source == cameras[-1] for _, msg in events)
    print(f"{args.scans} scans at 10 Hz, {args.cameras} cameras, {cameras[-1]} dropped {dropped} frames")
    print("policy                        sets  complete  LiDAR+fewer cameras  scans without output")
    for name, sets in (
        ("Collector (xkd_ros.sync)", run_collector(events, cameras)),
        ("ApproximateTimeSynchronizer", run_approximate(events, cameras)),
    ):
        complete = sum(matched == args.cameras for _, matched in sets)
        silent = args.scans - len({index for index, _ in sets})
        print(f"{name:<28} {len(sets):>5} {complete:>9} {len(sets) - complete:>20} {silent:>21}")


if __name__ == "__main__":
    main()
