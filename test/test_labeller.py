"""ScanLabeller, segment_node's work without ROS: fed hand-made messages and told the time, with a stand-in
Segmenter (no model), what each input did is known when the call returns: no graph, no executor, no sleep."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
from sensor_msgs.msg import Image

from xkd_ros.data.messages import header_at, point_fields
from xkd_ros.geometry import Rig
from xkd_ros.labeller import CLOUD_TOPIC, STAGES, LabelledScan, ScanLabeller
from xkd_ros.msgs import create_cloud, read_points
from xkd_ros.parameters import ParameterError, validate_parameters
from xkd_ros.paths import config_path
from xkd_ros.pipeline import Segmentation

CAMERA = "CAM_FRONT"
IMAGE_TOPIC = f"~/input/{CAMERA}/image"
POINTS = 200


class FakeSegmenter:
    """Labels every point 1, fusing the cameras it was given an image of."""

    classes = SimpleNamespace(
        name="fake", names=("road", "car"), colors=np.array([[128, 64, 128], [0, 0, 255]], np.uint8)
    )

    def check_rig(self, rig: Rig) -> str:
        return f"cameras {list(rig.names)}"

    def prepare(self, points, channels, images, rig):
        return SimpleNamespace(points=len(points), cameras=tuple(images))

    def infer(self, prepared) -> Segmentation:
        n = prepared.points
        return Segmentation(
            labels=np.ones(n, np.uint8),
            confidence=np.full(n, 0.9, np.float32),
            seen=np.full(n, bool(prepared.cameras)),
            cameras_used=prepared.cameras,
            timings={f"{stage}_ms": 1.0 for stage in STAGES},
        )


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _labeller(clock: Clock, **overrides) -> tuple[ScanLabeller, list[LabelledScan], list[str]]:
    params = validate_parameters({"cameras": [CAMERA], "pipeline.overlap": False, **overrides})
    published: list[LabelledScan] = []
    lines: list[str] = []
    rig = Rig.load(config_path("nuscenes.rig.yaml"))
    labeller = ScanLabeller(
        params, FakeSegmenter(), rig, publish=published.append, warn=lines.append, clock=clock
    )
    lines.clear()  # what the start-up said (mount height) is not what these tests look at
    return labeller, published, lines


def _cloud(stamp: float, points: int = POINTS):
    fields = point_fields(("x", "y", "z", "intensity"))
    rows = np.zeros(points, dtype=[(f.name, np.float32) for f in fields])
    rows["x"] = np.linspace(2.0, 40.0, points)
    rows["y"], rows["z"] = 1.0, -1.0
    rows["intensity"] = np.linspace(0.0, 100.0, points)
    return create_cloud(header_at(stamp, "LIDAR_TOP"), fields, rows)


def _image(stamp: float, data: bytes | None = None) -> Image:
    width, height = 1600, 900
    data = bytes(width * height * 3) if data is None else data
    return Image(
        header=header_at(stamp, CAMERA),
        width=width,
        height=height,
        encoding="rgb8",
        step=3 * width,
        data=data,
    )


def test_a_malformed_image_is_counted_and_the_scan_still_labelled():
    clock = Clock()
    labeller, published, lines = _labeller(clock)
    labeller.add_image(CAMERA, _image(5.0, data=b"\0" * 100), clock.now, {})
    labeller.add_scan(_cloud(5.0), clock.now, {})
    labeller.poll(clock.now)
    assert labeller.counts[f"{CAMERA} images refused"] == 1
    assert [line for line in lines if line.startswith(f"{IMAGE_TOPIC}: malformed image, camera left out")]
    (scan,) = published
    assert scan.segmentation.cameras_used == ()
    assert read_points(scan.cloud)["label"].tolist() == [1] * POINTS
    assert scan.cloud.header.stamp.sec == 5
    assert set(scan.timings) == {"decode", "queue", *STAGES}
    values = labeller.diagnostic_values()
    assert values["scans labelled"] == "1"
    assert values[f"{CAMERA} images refused"] == "1"
    assert values["cameras matched (last scan)"] == "0/1"
    assert labeller.status() == ("WARN", f"cameras missing: {CAMERA}")
    # The next scan with a good image fuses it.
    labeller.add_image(CAMERA, _image(6.0), clock.now, {})
    labeller.add_scan(_cloud(6.0), clock.now, {})
    labeller.poll(clock.now)
    assert published[-1].segmentation.cameras_used == (CAMERA,)
    assert labeller.status() == ("OK", "all cameras matched")


def test_a_runtime_sync_change_applies_to_the_next_scan():
    """sync.timeout 10 s: a scan without its image waits; set to 0, the next such scan is labelled at the
    first poll (the waiting one, superseded, counted by the collector), and debug.publish false is what that
    scan carries."""
    clock = Clock()
    labeller, published, lines = _labeller(clock, **{"sync.timeout": 10.0})
    labeller.add_scan(_cloud(1.0), clock.now, {})
    clock.now += 1.0
    labeller.poll(clock.now)
    assert (published, labeller.collector.pending) == ([], 1)
    labeller.reconfigure(
        validate_parameters({"cameras": [CAMERA], "sync.timeout": 0.0, "debug.publish": False})
    )
    assert labeller.collector.config.timeout == 0.0
    labeller.add_scan(_cloud(2.0), clock.now, {})
    labeller.poll(clock.now)
    (scan,) = published
    assert scan.cloud.header.stamp.sec == 2
    assert scan.debug is False
    values = labeller.diagnostic_values()
    assert values["sync: scans_superseded"] == "1"
    assert values["scans pending"] == "0"
    assert [line for line in lines if line.startswith(f"{CLOUD_TOPIC}: 1 scan(s) skipped")]


def test_sync_settings_that_do_not_fit_the_cameras_are_refused():
    labeller, _, _ = _labeller(Clock())
    config = labeller.collector.config
    with pytest.raises(ParameterError, match=r"'sync\.camera_offsets': 2 offsets for the 1 cameras"):
        labeller.sync_config(validate_parameters({"sync.camera_offsets": [0.0, 0.1]}))
    assert labeller.collector.config is config


def test_faults_are_counted_each_and_said_once_per_throttle_window():
    clock = Clock()
    labeller, published, lines = _labeller(clock, cameras=[])
    cut = _cloud(1.0)
    cut.data = bytes(cut.data[: len(cut.data) // 2])
    for stamp in (1.0, 2.0, 3.0):
        cut.header = header_at(stamp, "LIDAR_TOP")
        labeller.add_scan(cut, clock.now, {})
        labeller.poll(clock.now)
        clock.now += 2.0  # 0, 2, 4 s: inside the 5 s window
    clock.now += 1.0
    cut.header = header_at(4.0, "LIDAR_TOP")
    labeller.add_scan(cut, clock.now, {})
    labeller.poll(clock.now)
    assert labeller.counts["scans malformed"] == 4
    assert len([line for line in lines if "malformed PointCloud2" in line]) == 2
    assert published == []


def test_oversized_scans_and_sequence_gaps_are_counted():
    clock = Clock()
    labeller, published, lines = _labeller(clock, cameras=[], max_points=100)
    labeller.add_scan(
        _cloud(1.0), clock.now, {"publication_sequence_number": 1, "publisher_gid": {"data": b"p"}}
    )
    labeller.add_scan(
        _cloud(2.0), clock.now, {"publication_sequence_number": 4, "publisher_gid": {"data": b"p"}}
    )
    labeller.poll(clock.now)
    assert labeller.counts["scans too large"] == 2
    assert labeller.counts["scans lost in transport"] == 2
    assert labeller.collector.stats.scans_received == 0  # refused before the collector
    assert any("2 message(s) published but not received" in line for line in lines)
    assert published == []


def test_status_says_when_no_scan_came_for_a_second():
    clock = Clock()
    labeller, _, _ = _labeller(clock, cameras=[])
    assert labeller.status() == ("ERROR", "no scan for > 1 s")
    labeller.add_scan(_cloud(1.0), clock.now, {})
    labeller.poll(clock.now)
    assert labeller.status(clock.now + 0.5)[0] == "OK"
    assert "LiDAR-only" in labeller.status(clock.now + 0.5)[1]
    assert labeller.status(clock.now + 1.5) == ("ERROR", "no scan for > 1 s")


def test_with_the_overlap_the_inference_thread_publishes_and_stops_when_closed():
    clock = Clock()
    labeller, published, _ = _labeller(clock, cameras=[], **{"pipeline.overlap": True})
    try:
        assert labeller.pipeline().startswith("overlapped")
        labeller.add_scan(_cloud(1.0), clock.now, {})
        labeller.poll(clock.now)
        assert labeller.wait_idle(60), "the inference thread is still busy after 60 s"
        assert len(published) == 1
        assert labeller.counts["scans labelled"] == 1
    finally:
        assert labeller.close(60) == (True, 0)
    assert "inference" not in {thread.name for thread in threading.enumerate()}


def test_a_scan_failing_at_shutdown_is_lost_not_a_fault():
    clock = Clock()
    params = validate_parameters({"cameras": [], "pipeline.overlap": False})
    rig = Rig.load(config_path("nuscenes.rig.yaml"))

    def publish(scan):
        raise RuntimeError("context is not valid")

    labeller = ScanLabeller(
        params, FakeSegmenter(), rig, publish=publish, warn=lambda text: None, alive=lambda: False
    )
    labeller.add_scan(_cloud(1.0), clock.now, {})
    labeller.poll(clock.now)
    assert labeller.counts["scans failed"] == 0
    assert labeller.close(1) == (True, 1)
