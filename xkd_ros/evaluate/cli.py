"""`xkd-evaluate`: a model scored on labelled frames, offline, or a running segment_node scored live.

Offline (the default): the model segments the frames `open_frames` reads with the same `Segmenter` call as
the node, fusion and LiDAR-only side by side, with no DDS, so the result is deterministic (scoring in
xkd_ros.evaluate.scoring); report.json, report.md and the pictures go to --out (xkd_ros.evaluate.report).
`--map-to <class set>` scores the model on frames labelled in another class set through its class map.

`--live`: the bag is replayed over DDS to a segment_node already running, and what it published is scored
against the bag's label topic (the listener is xkd_ros.evaluate.live, imported only then); live_report.json
goes to --out, and `--record OUT` records that session (the replayed inputs and all the node published)
into one mcap bag OUT. The exit status is 1 when a scan was not labelled.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from xkd_ros.classes import load_class_set
from xkd_ros.data import open_frames
from xkd_ros.evaluate.report import write_live_report, write_report
from xkd_ros.evaluate.scoring import ClassMapping, evaluate
from xkd_ros.pipeline import Segmenter


def main(argv: list[str] | None = None) -> int:
    """xkd-evaluate (offline): per-class IoU, mIoU and latency of a model on labelled frames."""
    parser = argparse.ArgumentParser(prog="xkd-evaluate", description=main.__doc__)
    parser.add_argument("data", type=Path, help="anything open_frames reads (a synthetic split, a bag, ...)")
    parser.add_argument(
        "--model", type=Path, default=None, help="an .onnx model (default: the shipped one for the backend)"
    )
    parser.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch"))
    parser.add_argument("--split", default=None, help="split of a synthetic data set (e.g. val)")
    parser.add_argument(
        "--map-to",
        default=None,
        metavar="CLASS_SET",
        help="score on frames labelled in this class set (e.g. semantickitti) through the model's class map",
    )
    parser.add_argument("--max-frames", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/eval"))
    parser.add_argument(
        "--live",
        action="store_true",
        help="live mode: replay `data` (a bag with a label topic) while a running segment_node labels it",
    )
    parser.add_argument("--node", default="segment", help="live mode: the node's name (its output topics)")
    parser.add_argument("--rate", type=float, default=1.0, help="live mode: replay speed factor (default 1)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="live mode: seconds to wait at most once the replay starts (default: scaled with the recording)",
    )
    parser.add_argument(
        "--record",
        type=Path,
        default=None,
        metavar="OUT",
        help="live mode: record the session (inputs and all the node published) into the new mcap bag OUT",
    )
    args = parser.parse_args(argv)
    if not args.rate > 0:
        parser.error(f"--rate: {args.rate:g} is not > 0")
    from xkd_ros.paths import default_model

    if args.record is not None and not args.live:
        parser.error("--record: only with --live (it records a live session)")
    if args.record is not None and args.record.exists():
        parser.error(f"--record: {args.record} exists already; a recording goes to a new folder")
    if args.live:
        return _live(args)
    model = args.model or default_model(args.backend)
    frames = open_frames(args.data, **({"split": args.split} if args.split else {}))
    if args.max_frames:
        frames = frames[: args.max_frames]
    segmenter = Segmenter.from_model(model, backend=args.backend, threads=args.threads)
    mapping = None
    if args.map_to:
        try:
            mapping = ClassMapping.between(segmenter.classes, load_class_set(args.map_to))
        except (ValueError, FileNotFoundError) as error:
            parser.error(f"--map-to: {error}")
    try:
        results = evaluate(frames, segmenter, mapping=mapping)
    except ValueError as error:
        print(f"xkd-evaluate: error: {error}", file=sys.stderr)
        return 1
    report = write_report(results, segmenter, frames, args.out, str(model), mapping)
    summary = ", ".join(f"{mode} {100 * r['miou']:.1f}" for mode, r in report["modes"].items())
    print(f"{len(frames)} frames: mIoU {summary}; report in {args.out}")
    return 0


def _live(args: argparse.Namespace) -> int:
    """xkd-evaluate --live: replay the bag to the running node and score what it published. The node runs
    already, so this joins its graph as the environment says (ROS_DOMAIN_ID, discovery range), adding only
    the large-data Fast DDS profile where none is set. Exit status 1 when a scan was not labelled."""
    from xkd_ros.data.rosbag import RosbagError
    from xkd_ros.evaluate.live import LiveError, Recording, describe_lost, run_live
    from xkd_ros.paths import config_path

    env = dict(os.environ)
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(config_path("fastdds.xml")))
    try:
        recording = Recording.from_bag(args.data)
        if recording.label_topic is None:
            raise LiveError(f"{args.data}: no label topic in the bag, nothing to score the labels against")
        result = run_live(recording, env, args.node, rate=args.rate, timeout=args.timeout, record=args.record)
    except (LiveError, RosbagError) as error:
        print(f"xkd-evaluate: error: {error}", file=sys.stderr)
        return 1
    report = result.report(load_class_set(recording.classes))
    write_live_report(report, args.out)
    recorded = report["scans_recorded"]
    print(f"{report['scans_labelled']} of {recorded} scans labelled: mIoU {100 * report['miou']:.1f} %")
    if args.record is not None:
        messages = report["session_messages"]
        print(
            f"session recorded: {args.record} ({sum(messages.values())} messages on {len(messages)} topics)"
        )
    lost = result.lost()
    if lost:
        print(f"xkd-evaluate: error: {describe_lost(lost, recorded)}", file=sys.stderr)
        return 1
    return 0
