"""Fuzzing segment_node's per-scan path in this process: malformed clouds, images and CameraInfos through its
callbacks and its poll (hypothesis, fixed seed, bounded count).

It never raises, and every scan is accounted for: received = too large + refused + queued in the collector;
queued = emitted + dropped (counted by reason) + pending; emitted = labelled + malformed + failed +
superseded before inference (none here: each poll waits for the inference thread). Every
image of an emitted set is used or counted as refused, and a CameraInfo of another size than the rig's is
counted as refused."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inprocess import info, segment_node

pytestmark = [pytest.mark.dds, pytest.mark.timeout(600)]

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_POINTS = 5000
FIELD_NAMES = ("x", "y", "z", "intensity", "ring", "t", "")


@pytest.fixture(scope="module")
def messages(nuscenes_keyframe):
    from xkd_ros.data.messages import frame_to_messages

    return {
        "compressed": frame_to_messages(nuscenes_keyframe, "jpeg"),
        "raw": frame_to_messages(nuscenes_keyframe),
    }


@pytest.fixture(scope="module", params=["compressed", "raw"])
def node(request, module_ros_env):
    """The node with the shipped parameters, a scan ready as soon as it is polled; every set it emits kept."""
    with segment_node(
        "--params-file",
        str(REPO / "config" / "segment.param.yaml"),
        "-p",
        f"camera_transport:={request.param}",
        "-p",
        "sync.timeout:=0.0",
        "-p",
        f"max_points:={MAX_POINTS}",
    ) as node:
        poll = node.labeller.collector.poll
        node.emitted = []

        def keep(now):
            synced = poll(now)
            if synced is not None:
                node.emitted.append(synced)
            return synced

        node.labeller.collector.poll = keep
        node.transport = request.param
        node.stamp = 100.0
        yield node


# ------------------------------------------------------------------ strategies
@st.composite
def clouds(draw):
    """A PointCloud2: mostly plausible (random points, the fields in any order, with others), otherwise broken
    in its layout (fields, sizes, steps, data length), sometimes far larger than max_points."""
    from sensor_msgs.msg import PointCloud2, PointField

    cloud = PointCloud2()
    cloud.is_dense = draw(st.booleans())
    cloud.is_bigendian = False
    if draw(st.integers(0, 2)) < 2:  # a layout that reads: fields packed in a drawn order
        extra = draw(st.lists(st.sampled_from(["ring", "t", "reflectivity"]), unique=True))
        names = draw(st.permutations(["x", "y", "z", "intensity", *extra]))
        dtypes = [np.dtype(np.uint16) if n == "ring" else np.dtype(np.float32) for n in names]
        kinds = {np.dtype(np.uint16): PointField.UINT16, np.dtype(np.float32): PointField.FLOAT32}
        offsets = np.cumsum([0] + [d.itemsize for d in dtypes])
        cloud.fields = [
            PointField(name=n, offset=int(o), datatype=kinds[d], count=1)
            for n, o, d in zip(names, offsets, dtypes, strict=False)
        ]
        cloud.point_step = int(offsets[-1])
        cloud.width = draw(st.integers(0, 3000))
        cloud.height = 1
        cloud.row_step = cloud.width * cloud.point_step
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        points = np.empty(cloud.width, np.dtype({"names": names, "formats": dtypes}))
        for name in names:
            points[name] = (
                rng.uniform(0, 31, cloud.width) if name == "ring" else rng.uniform(-60, 60, cloud.width)
            )
        values = draw(st.sampled_from(["uniform", "uniform", "nan", "huge", "zero"]))
        for axis in ("x", "y", "z"):
            if values == "nan":
                points[axis][rng.random(cloud.width) < 0.2] = np.nan
            elif values == "huge":
                points[axis] *= np.float32(1e30)
            elif values == "zero":
                points[axis] = 0
        cloud.data = points.tobytes()
        return cloud
    cloud.fields = draw(
        st.lists(
            st.builds(
                PointField,
                name=st.sampled_from(FIELD_NAMES),
                offset=st.integers(0, 40),
                datatype=st.integers(0, 9),
                count=st.integers(0, 3),
            ),
            max_size=6,
        )
    )
    cloud.point_step = draw(st.integers(0, 48))
    cloud.width = draw(st.one_of(st.integers(0, 500), st.just(10**6), st.just(2**32 - 1)))
    cloud.height = draw(st.integers(0, 3))
    cloud.row_step = draw(
        st.one_of(st.just(min(cloud.width * cloud.point_step, 2**32 - 1)), st.integers(0, 20000))
    )
    cloud.is_bigendian = draw(st.booleans())
    cloud.data = draw(st.binary(max_size=4000))
    return cloud


def _jpeg(width, height):
    return cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))[1].tobytes()


def _huge_png():
    data = bytearray(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    data[16:24] = (20000).to_bytes(4, "big") * 2
    return bytes(data)


@st.composite
def images(draw, good):
    """An image message for one camera: the keyframe's (good), or a broken, cut, resized or lying one."""
    import copy

    kind = draw(st.sampled_from(["good", "good", "random", "cut", "wrong size", "huge", "corrupt", "binned"]))
    msg = copy.copy(good)
    if hasattr(good, "format"):  # CompressedImage
        original = bytes(good.data)
        if kind == "random":
            msg.data = draw(st.binary(max_size=2000))
        elif kind == "cut":
            msg.data = original[: draw(st.integers(0, len(original) - 1))]
        elif kind == "wrong size":
            msg.data = _jpeg(draw(st.integers(1, 64)), draw(st.integers(1, 64)))
        elif kind == "huge":
            msg.data = _huge_png()
        elif kind == "corrupt":
            data = bytearray(original)
            at = draw(st.integers(0, len(data) - 16))
            data[at : at + 16] = draw(st.binary(min_size=16, max_size=16))
            msg.data = bytes(data)
        elif kind == "binned":
            msg.data = _jpeg(800, 450)
    else:  # Image
        if kind == "random":
            msg.data = draw(st.binary(max_size=2000))
        elif kind in ("cut", "corrupt"):
            msg.data = bytes(good.data)[: draw(st.integers(0, 1000))]
        elif kind in ("wrong size", "huge"):
            msg.width, msg.height = draw(st.integers(0, 20000)), draw(st.integers(0, 20000))
        elif kind == "binned":
            msg.encoding = draw(st.sampled_from(["bgr8", "mono8", "16UC1", "bogus", ""]))
        msg.step = draw(st.sampled_from([msg.step, 0, 3 * msg.width, 10**6]))
    return msg


@st.composite
def camera_infos(draw, good):
    import copy

    msg = copy.deepcopy(good)
    kind = draw(st.sampled_from(["good", "other size", "zero K", "nan", "distortion"]))
    if kind == "other size":
        msg.width, msg.height = draw(st.integers(0, 5000)), draw(st.integers(0, 5000))
    elif kind == "zero K":
        msg.k = [0.0] * 9
    elif kind == "nan":
        msg.k = [float("nan")] * 9
    elif kind == "distortion":
        msg.distortion_model = draw(st.sampled_from(["plumb_bob", "equidistant", "rational_polynomial", "x"]))
        msg.d = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=20))
    return msg


def _stamped(msg, sec, nanosec):
    import copy

    msg = copy.copy(msg)
    header = copy.deepcopy(msg.header)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    msg.header = header
    return msg


def _ledger(node) -> dict[str, int]:
    stats = node.labeller.collector.stats
    counts = dict(node.labeller.counts)
    scans = {key: counts.get(f"scans {key}", 0) for key in ("received", "too large", "refused", "labelled")}
    scans.update(
        {key: counts.get(f"scans {key}", 0) for key in ("malformed", "failed", "superseded before inference")}
    )
    return {
        **scans,
        "queued": stats.scans_received,
        "emitted": stats.sets_emitted,
        "dropped": stats.scans_dropped,
        "pending": node.labeller.collector.pending,
        "images refused": sum(v for k, v in counts.items() if k.endswith("images refused")),
        "infos refused": sum(v for k, v in counts.items() if k.endswith("camera_info refused")),
    }


# ------------------------------------------------------------------ the property
@given(data=st.data())
@SETTINGS
def test_node_survives_and_accounts_for_every_input(node, messages, data):
    frame = messages[node.transport]
    # Mostly forward; a repeated stamp, a small step back, a jump back (a looping bag) now and then.
    node.stamp += data.draw(st.sampled_from([1.0, 1.0, 1.0, 0.5, 0.0, -0.5, -3.0]), label="stamp step")
    sec, nanosec = int(node.stamp), round(node.stamp % 1 * 1e9)
    before = _ledger(node)
    emitted_before = len(node.emitted)

    refused_infos = 0
    for camera in data.draw(
        st.lists(st.sampled_from(node.labeller.cameras), max_size=3, unique=True), label="infos"
    ):
        msg = data.draw(camera_infos(frame.camera_infos[camera]), label=f"{camera} info")
        calibrated = node.labeller.rig[camera].intrinsics
        previous = node.labeller.camera_infos.get(camera)
        node._on_info(camera, msg)
        if (msg.width, msg.height) != (calibrated.width, calibrated.height):
            refused_infos += 1
            assert node.labeller.camera_infos.get(camera) is previous, "a CameraInfo of another size was used"
    sent = data.draw(st.lists(st.sampled_from(node.labeller.cameras), unique=True), label="cameras sent")
    for camera in sent:
        image = data.draw(images(frame.images[camera]), label=camera)
        node._on_image(camera, _stamped(image, sec, nanosec), {})
    cloud = data.draw(clouds(), label="cloud")
    sequence = data.draw(st.one_of(st.none(), st.integers(1, 10**6)), label="sequence")
    node._on_cloud(_stamped(cloud, sec, nanosec), {} if sequence is None else info(sequence, b"fuzz"))
    node._on_poll()
    assert node.labeller.wait_idle(120), "the inference thread is still busy after 120 s"

    after = _ledger(node)
    delta = {key: after[key] - before[key] for key in after}
    assert delta["received"] == 1
    assert after["received"] == after["too large"] + after["refused"] + after["queued"]
    assert after["queued"] == after["emitted"] + after["dropped"] + after["pending"]
    assert after["emitted"] == (
        after["labelled"] + after["malformed"] + after["failed"] + after["superseded before inference"]
    )
    assert delta["infos refused"] >= refused_infos
    if cloud.width * cloud.height > MAX_POINTS:
        assert delta["too large"] == 1
    if delta["labelled"]:
        (synced,) = node.emitted[emitted_before:]
        assert delta["images refused"] == len(synced.images) - node.labeller.last_matched
    values = node.labeller.diagnostic_values()
    assert values["scans received"] == str(after["received"])
