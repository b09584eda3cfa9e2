"""pipeline.overlap: scan N+1 decoded and pre-processed while scan N is in inference, with a queue of one
between them. NewestWorker alone (no ROS), then segment_node in this process with an inference held on a
gate: scans prepared faster than it infers never pile up; each waiting one is replaced by the newer one and
counted, the labelled clouds are the newest scans, and the node shuts down cleanly. No timing is asserted:
the gates order the threads."""

from __future__ import annotations

import threading

import pytest
from conftest import REPO
from inprocess import restamped, segment_node

from xkd_ros.overlap import NewestWorker

CLOUD = "~/input/pointcloud"
SUPERSEDED = "scans superseded before inference"
GATE_S = 120.0  # how long a test waits on a gate before failing: never reached unless something hangs
IN_PROCESS = (
    "--params-file",
    str(REPO / "config" / "segment.param.yaml"),
    "-p",
    "camera_transport:=compressed",
    "-p",
    "sync.timeout:=0.0",
)


class Gated:
    """A work function that records its items and holds each until released."""

    def __init__(self) -> None:
        self.done: list[tuple[int, float]] = []
        self.entered = threading.Semaphore(0)
        self.release = threading.Semaphore(0)

    def __call__(self, item: int, queued_ms: float) -> None:
        self.entered.release()
        assert self.release.acquire(timeout=GATE_S), "never released"
        if item < 0:
            raise ValueError(f"item {item}")
        self.done.append((item, queued_ms))

    def wait_entered(self) -> None:
        assert self.entered.acquire(timeout=GATE_S), "the worker did not take an item"


# ------------------------------------------------------------------ NewestWorker, no ROS
def test_items_put_while_the_worker_is_busy_leave_only_the_newest():
    work, errors = Gated(), []
    worker = NewestWorker(work, errors.append)
    try:
        assert worker.put(0) is False
        work.wait_entered()  # 0 is in work: what comes now waits in the slot
        assert worker.put(1) is False
        assert worker.put(2) is True  # replaces 1
        assert worker.put(3) is True  # replaces 2
        assert worker.superseded == 2
        work.release.release()
        work.wait_entered()
        work.release.release()
        assert worker.idle(GATE_S)
        assert [item for item, _ in work.done] == [0, 3]
        assert all(queued_ms >= 0 for _, queued_ms in work.done)
        assert errors == []
    finally:
        worker.stop(GATE_S)


def test_a_put_that_waits_replaces_nothing():
    """put(wait=True), the hand-off of a node that wants every scan (qos.depth > 1): it returns once the
    worker has taken the waiting item, so each item is worked on in turn."""
    work = Gated()
    worker = NewestWorker(work, lambda error: None)
    try:
        worker.put(0)
        work.wait_entered()
        worker.put(1)  # waits in the slot while 0 is in work
        putter = threading.Thread(target=worker.put, args=(2, True))
        putter.start()  # blocked until the worker takes 1
        work.release.release()
        work.wait_entered()  # 0 done, 1 taken: the waiting put of 2 goes in
        work.release.release()
        work.wait_entered()  # 1 done, 2 taken
        work.release.release()
        putter.join(GATE_S)
        assert not putter.is_alive()
        assert worker.idle(GATE_S)
        assert [item for item, _ in work.done] == [0, 1, 2]
        assert worker.superseded == 0
    finally:
        worker.stop(GATE_S)


def test_an_error_in_the_work_is_reported_and_the_worker_goes_on():
    work, errors = Gated(), []
    worker = NewestWorker(work, errors.append)
    try:
        worker.put(-1)
        work.wait_entered()
        work.release.release()
        assert worker.idle(GATE_S)
        worker.put(5)
        work.wait_entered()
        work.release.release()
        assert worker.idle(GATE_S)
        assert [str(e) for e in errors] == ["item -1"]
        assert [item for item, _ in work.done] == [5]
    finally:
        worker.stop(GATE_S)


def test_stop_finishes_the_item_in_work_and_discards_the_waiting_one():
    work = Gated()
    worker = NewestWorker(work, lambda error: None, name="gated")
    worker.put(0)
    work.wait_entered()
    worker.put(1)
    stopper = threading.Thread(target=worker.stop, args=(GATE_S,))
    stopper.start()
    work.release.release()  # the item in work completes; the waiting one is not started
    stopper.join(GATE_S)
    assert not stopper.is_alive()
    assert worker.stop(GATE_S) is True
    assert [item for item, _ in work.done] == [0]
    assert worker.discarded_at_stop == 1
    assert worker.put(2) is False  # refused after stop, counted
    assert worker.discarded_at_stop == 2
    assert "gated" not in {thread.name for thread in threading.enumerate()}


# ------------------------------------------------------------------ segment_node in this process
@pytest.fixture(scope="module")
def frame_messages(nuscenes_keyframe):
    from xkd_ros.data.messages import frame_to_messages

    return frame_to_messages(nuscenes_keyframe, "jpeg")


def _send(node, messages, shift: int) -> None:
    """A frame into the node's callbacks, then a poll: decoded and prepared on this thread, handed to the
    inference thread (no wait for it)."""
    for camera in node.labeller.cameras:
        node._on_image(camera, restamped(messages.images[camera], shift), {})
    node._on_cloud(restamped(messages.cloud, shift), {})
    node._on_poll()


@pytest.mark.dds
@pytest.mark.timeout(300)
def test_scans_prepared_faster_than_inference_do_not_pile_up(ros_env, frame_messages):
    inferring = {"threads": set(), "gate": Gated()}
    inference_threads = {t for t in threading.enumerate() if t.name == "inference"}
    with segment_node(*IN_PROCESS) as node:
        assert node.labeller.diagnostic_values()["pipeline"].startswith("overlapped")
        real_infer = node.labeller.segmenter.infer
        gate = inferring["gate"]

        def slow_infer(prepared):
            inferring["threads"].add(threading.current_thread().name)
            gate(0, 0.0)  # held until the test releases it: inference slower than the scans
            return real_infer(prepared)

        node.labeller.segmenter.infer = slow_infer
        published = []
        publish = node.cloud_pub.publish
        node.cloud_pub.publish = lambda msg: published.append(msg.header.stamp.sec) or publish(msg)
        base = frame_messages.cloud.header.stamp.sec

        _send(node, frame_messages, 1)
        gate.wait_entered()  # scan 1 is in inference
        for shift in (2, 3, 4):  # prepared meanwhile: 2 waits, 3 replaces it, 4 replaces 3
            _send(node, frame_messages, shift)
        assert node.labeller.counts[SUPERSEDED] == 2
        assert node.labeller.counts["scans labelled"] == 0
        gate.release.release()
        gate.wait_entered()  # the newest, scan 4, is taken next
        gate.release.release()
        assert node.labeller.wait_idle(GATE_S)

        assert [sec - base for sec in published] == [1, 4]
        values = node.labeller.diagnostic_values()
        assert values["scans superseded before inference"] == "2"
        assert values["scans labelled"] == "2"
        assert values["scans failed"] == "0"
        assert node.log.warnings(CLOUD, "dropped for a newer one before inference")
        assert inferring["threads"] == {"inference"}  # not the thread that polled (this one)
    # destroy_node ended the inference thread
    assert {t for t in threading.enumerate() if t.name == "inference"} == inference_threads


@pytest.mark.dds
@pytest.mark.timeout(300)
def test_context_shutdown_during_inference_waits_for_the_scan(ros_env, frame_messages):
    """The context shut down while a scan is in inference (as at Ctrl-C): the context's clean-up destroys
    the node, whose destroy_node waits for the inference thread (the scan is published, nothing counted as
    failed) and ends it."""
    import rclpy
    from inprocess import Log

    from xkd_ros.node import SegmentNode

    context = rclpy.Context()
    rclpy.init(context=context)
    node = SegmentNode(context=context, cli_args=["--ros-args", *IN_PROCESS])
    try:
        node.log = Log()
        node.get_logger = lambda: node.log
        real_infer, gate = node.labeller.segmenter.infer, Gated()
        node.labeller.segmenter.infer = lambda prepared: gate(0, 0.0) or real_infer(prepared)
        worker = node.labeller.worker
        real_stop = worker.stop

        def stop(timeout):  # the inference ends while destroy_node waits for it
            gate.release.release()
            return real_stop(timeout)

        worker.stop = stop
        _send(node, frame_messages, 1)
        gate.wait_entered()
        context.try_shutdown()  # destroys the node first (rclpy.Context._cleanup), then rcl's context
        assert node.labeller.counts["scans labelled"] == 1
        assert node.labeller.counts["scans failed"] == 0
        assert not node.log.warnings("scan not labelled")
    finally:
        node.destroy_node()
        context.try_shutdown()
    assert "inference" not in {t.name for t in threading.enumerate()}


@pytest.mark.dds
@pytest.mark.timeout(300)
def test_a_deeper_input_queue_gets_every_scan_labelled(ros_env, frame_messages):
    """qos.depth > 1 (an evaluation working through a recording): the poll waits for the inference thread
    rather than replacing the scan waiting for it."""
    with segment_node(*IN_PROCESS, "-p", "qos.depth:=5") as node:
        real_infer, gate = node.labeller.segmenter.infer, Gated()
        node.labeller.segmenter.infer = lambda prepared: gate(0, 0.0) or real_infer(prepared)
        _send(node, frame_messages, 1)
        gate.wait_entered()  # scan 1 in inference
        _send(node, frame_messages, 2)  # scan 2 waits for it
        third = threading.Thread(target=_send, args=(node, frame_messages, 3))
        third.start()  # scan 3's poll waits until scan 2 is taken
        gate.release.release()
        gate.wait_entered()
        gate.release.release()
        gate.wait_entered()
        gate.release.release()
        third.join(GATE_S)
        assert not third.is_alive()
        assert node.labeller.wait_idle(GATE_S)
        assert node.labeller.counts["scans labelled"] == 3
        assert node.labeller.counts[SUPERSEDED] == 0
        assert "waits for the inference thread" in node.labeller.diagnostic_values()["pipeline"]


@pytest.mark.dds
@pytest.mark.timeout(300)
def test_without_overlap_the_poll_labels_the_scan_itself(ros_env, frame_messages):
    with segment_node(*IN_PROCESS, "-p", "pipeline.overlap:=false") as node:
        _send(node, frame_messages, 1)  # no wait: the poll returned after publishing
        assert node.labeller.counts["scans labelled"] == 1
        assert "sequential" in node.labeller.diagnostic_values()["pipeline"]
        assert "inference" not in {t.name for t in threading.enumerate()}
