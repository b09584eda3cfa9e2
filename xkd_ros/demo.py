"""`xkd-demo` (`make demo`): the main job, end to end over real DDS, on the embedded default (ONNX Runtime).

1. a synthetic recording: a drive through the synthetic street, written as a rosbag2 (mcap) with JPEG
   cameras, CameraInfo, /tf_static and a ground-truth label cloud;
2. `segment_node` started through the entry point the launch file uses, with the default model, on the
   ROS_DOMAIN_ID of the environment or else one reserved for the run (xkd_ros.ros_env), printed;
3. once the node is up and this process is matched to its outputs, `xkd-replay` plays the recording over
   DDS (the large-data Fast DDS profile), waiting for the node's subscriptions first (xkd_ros.evaluate.live);
4. this process listens to what the node publishes, pairs each labelled cloud with the ground truth of its
   scan, and prints mIoU, per-class IoU and latency; pictures go to the output folder;
5. the whole session (the replayed inputs and everything the node published) is recorded into one mcap,
   `<out>/session/` (xkd_ros.record), which Foxglove and `ros2 bag play` open; `session.png` is drawn from
   that recording read back (the labelled scan by its rgb colours, in the bird's-eye view and the recorded
   camera images), and `segment.rviz` and `segment.foxglove.json` are the viewer configs of this rig.

The exit status is 1 when any scan of the recording was not labelled; the lost scans are named.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from xkd_ros.classes import load_class_set
from xkd_ros.data.messages import stamp_to_ns
from xkd_ros.data.render import label_text, render_bev, render_frame
from xkd_ros.data.rosbag import BagTopics, write_bag
from xkd_ros.evaluate.live import LiveError, LiveResult, Recording, describe_lost, interrupt, run_live
from xkd_ros.geometry import Rig
from xkd_ros.paths import config_path
from xkd_ros.ros_env import RosEnvironmentError, domain_environment
from xkd_ros.session import SessionError, read_labelled_scan, session_picture
from xkd_ros.viewers import foxglove_layout, rviz_config

NODE = "segment"


def record(out: Path, frames: int, seed: int) -> tuple[Path, list]:
    """A synthetic drive as a bag; returns the bag and the frames (ground truth)."""
    from xkd_ros.data.synthetic import SyntheticGenerator, load_config

    config = load_config(overrides={"sequence": {"frames_per_scene": frames}})
    generator = SyntheticGenerator(config, seed)
    drive = [generator.sample("demo", index).frame for index in range(frames)]
    bag = out / "recording"
    if bag.exists():
        shutil.rmtree(bag)
    return write_bag(drive, bag, storage="mcap", image_format="jpeg"), drive


def node_command(
    rig_path: Path,
    cameras: list[str],
    offsets: list[float],
    compressed: bool = True,
    reliable: bool = True,
    depth: int | None = None,
) -> list[str]:
    """segment_node with the shipped parameters, this rig, these cameras and their timing (image stamp - scan
    stamp), its inputs remapped to the topics of xkd_ros.data.rosbag.BagTopics (what write_bag records).
    `reliable` (qos.reliable) makes its inputs and its labelled clouds reliable; otherwise they keep the
    shipped best-effort sensor-data QoS. `depth` (qos.depth) replaces the shipped input queue of one: on a
    vehicle a busy node should skip stale scans, but an evaluation scores every scan of a recording, so it
    queues as many as the recording has and the node works through them however slow the machine."""
    transport, suffix = ("compressed", "/compressed") if compressed else ("raw", "")
    ros_args = ["--params-file", str(config_path("segment.param.yaml")), "-r", f"__node:={NODE}"]
    parameters = {
        "rig_path": str(rig_path),
        "cameras": "[" + ", ".join(cameras) + "]",  # the order of camera_offsets
        "camera_transport": transport,
        **({"qos.reliable": "true"} if reliable else {}),
        **({"qos.depth": str(depth)} if depth is not None else {}),
        "sync.camera_offsets": "[" + ", ".join(f"{o:.4f}" for o in offsets) + "]",
    }
    for name, value in parameters.items():
        ros_args += ["-p", f"{name}:={value}"]
    ros_args += ["-r", f"/{NODE}/input/pointcloud:=/lidar/points"]
    for camera in cameras:
        ros_args += ["-r", f"/{NODE}/input/{camera}/image{suffix}:=/cameras/{camera}/image_raw{suffix}"]
        ros_args += ["-r", f"/{NODE}/input/{camera}/camera_info:=/cameras/{camera}/camera_info"]
    return [sys.executable, "-m", "xkd_ros.node", "--ros-args", *ros_args]


def run_node(
    recording: Recording,
    cameras: list[str],
    offsets: list[float],
    log: Path,
    timeout: float | None = None,
    session: Path | None = None,
    rviz_config: Path | None = None,
) -> LiveResult:
    """segment_node on the recording's rig, the recording replayed to it, what it published (recorded into
    `session` when given); the node's output goes to `log` (a file: a pipe nobody reads would stall a node
    that logs much)."""
    with domain_environment("xkd-demo", rviz_config) as env, log.open("w") as out:
        node = subprocess.Popen(
            node_command(recording.bag / "rig.yaml", cameras, offsets, depth=len(recording.stamps)),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            return run_live(recording, env, NODE, node_process=node, timeout=timeout, record=session)
        finally:
            interrupt(node)


def write_viewers(rig: Rig, out: Path) -> None:
    """segment.rviz and segment.foxglove.json for the demo's rig and topics: fixed frame the rig's LiDAR
    frame (the frame_id of the node's clouds), the cameras' recorded compressed image topics."""
    topics = BagTopics()
    images = {camera: topics.image(camera, compressed=True) for camera in rig.names}
    (out / "segment.rviz").write_text(rviz_config(rig.lidar_frame, f"/{NODE}", images))
    layout = foxglove_layout(rig.lidar_frame, f"/{NODE}", images)
    (out / "segment.foxglove.json").write_text(json.dumps(layout, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xkd-demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("out/demo"), help="folder for the recording and results"
    )
    parser.add_argument("--frames", type=int, default=16, help="scans in the recording (0.5 s apart)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait at most once the replay starts (default: scaled with the recording)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    bag, drive = record(args.out, args.frames, args.seed)
    cameras = drive[0].rig.names
    offsets = [float(np.mean([f.image_stamps[c] - f.stamp for f in drive])) for c in cameras]
    seconds = time.perf_counter() - started
    print(f"recorded {len(drive)} scans, {len(cameras)} cameras -> {bag} ({seconds:.0f} s)", flush=True)

    rig = Rig.load(bag / "rig.yaml")
    write_viewers(rig, args.out)  # before the run: watch it with them
    node_log = args.out / "node.log"
    session = args.out / "session"
    if session.exists():
        shutil.rmtree(session)
    try:
        recording = Recording.from_bag(bag)
        rviz = args.out / "segment.rviz"
        result = run_node(recording, cameras, offsets, node_log, args.timeout, session, rviz)
    except (LiveError, RosEnvironmentError) as error:
        print(f"xkd-demo: error: {error}; the node's log: {node_log}", file=sys.stderr)
        return 1

    classes = load_class_set("synthetic")
    report = result.report(classes)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    lost = result.lost()
    if not report["scans_labelled"]:
        print(
            f"xkd-demo: error: the node labelled no scan of the recording; its log: {node_log}",
            file=sys.stderr,
        )
        return 1
    matched = sorted(set(result.outputs) & set(result.truth))
    first = next((f for f in drive if stamp_to_ns(f.stamp) == matched[0]), drive[0])
    bev = [
        render_bev(first.xyz, classes.colorize(first.labels), size=450),
        render_bev(first.xyz, classes.colorize(result.outputs[matched[0]]), size=450),
    ]
    label_text(bev[0], "ground truth", origin=(8, 440))
    label_text(bev[1], "segment_node output", origin=(8, 440))
    cv2.imwrite(str(args.out / "bev.png"), np.hstack(bev))
    cv2.imwrite(str(args.out / "frame.png"), render_frame(first))
    try:  # what rviz would show, drawn from the recording read back
        scan = read_labelled_scan(session, f"/{NODE}", index=len(result.outputs) // 2, rig=rig)
    except SessionError as error:
        print(f"xkd-demo: error: {error}", file=sys.stderr)
        return 1
    picture = session_picture(scan, "segment_node output, from the recording")
    cv2.imwrite(str(args.out / "session.png"), picture)

    print(f"segment_node labelled {len(drive) - len(lost)} of {len(drive)} scans replayed over DDS")
    print(
        f"mIoU {100 * report['miou']:.1f} %  ("
        + ", ".join(f"{n} {100 * v:.0f}" for n, v in report["iou"].items() if v is not None)
        + ")"
    )
    latency = report["node_total_ms"]
    if latency:
        p50, p90 = latency["p50"], latency["p90"]
        print(
            f"node processing per scan (pre-processing, inference, labels): p50 {p50:.0f}, p90 {p90:.0f} ms"
        )
    recorded = report.get("session_messages", {})
    print(
        f"session recorded: {session} ({sum(recorded.values())} messages on {len(recorded)} topics; "
        f"Foxglove: open {session / (session.name + '.mcap')} with {args.out / 'segment.foxglove.json'})"
    )
    print(f"pictures and report in {args.out} ({time.perf_counter() - started:.0f} s in all)")
    if lost:
        print(
            f"xkd-demo: error: {describe_lost(lost, len(drive))}; the node's log: {node_log}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
