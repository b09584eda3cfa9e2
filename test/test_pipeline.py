"""Segmenter (the one call of the node, the evaluator and the demo) on the real frames; the labeled cloud.

The model is a tiny one exported here (test/tiny_model.py): what is tested is the wiring around any model,
on any rig, not the shipped model's accuracy (test_default_model.py)."""

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from std_msgs.msg import Header
from tiny_model import tiny_model

from xkd_ros.classes import IGNORE_COLOR, IGNORE_INDEX
from xkd_ros.geometry import LidarProfile, Rig
from xkd_ros.inference.metadata import MAX_CAMERAS, METADATA_KEY, check_model_card, sha256
from xkd_ros.msgs import create_labeled_cloud, pack_rgb, read_points, unpack_rgb
from xkd_ros.pipeline import Segmenter
from xkd_ros.preprocess import prepare, prepare_frame

SHIPPED = REPO / "models/xkd_synthetic.onnx"
TIMINGS = ("preprocess_ms", "inference_ms", "postprocess_ms", "total_ms")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return tiny_model(folder), tiny_model(folder, use_images=False)


@pytest.fixture(scope="module")
def model(models):
    return models[0]


@pytest.fixture(scope="module")
def segmenter(model):
    return Segmenter.from_model(model, threads=2)


def renamed(rig, names):
    """`rig` with its cameras renamed (old name -> new), calibration and order kept."""
    return rig.with_cameras([dataclasses.replace(c, name=names.get(c.name, c.name)) for c in rig])


@pytest.fixture(scope="module")
def fused(segmenter, nuscenes_keyframe):
    return segmenter.segment_frame(nuscenes_keyframe)


def with_nan_points(frame, rows):
    """The frame's scan with `rows` made NaN and all-zero (no-return) points, as organised clouds carry."""
    points = frame.points.copy()
    points[rows[0], :3] = np.nan
    points[rows[1], :3] = 0
    return points


def test_segments_the_real_keyframe(segmenter, nuscenes_keyframe, fused):
    n = len(nuscenes_keyframe.points)
    assert fused.labels.shape == fused.confidence.shape == fused.seen.shape == (n,)
    assert (fused.labels.dtype, fused.confidence.dtype, fused.seen.dtype) == (np.uint8, np.float32, bool)
    inputs = prepare_frame(nuscenes_keyframe, segmenter.preprocess)
    valid = inputs.point_valid  # the ego vehicle's returns within lidar.min_range are IGNORE
    assert 0.5 < valid.mean() < 1
    assert np.all(fused.labels[~valid] == IGNORE_INDEX)
    assert fused.labels[valid].max() < segmenter.classes.num_classes
    assert np.all((fused.confidence[valid] > 0) & (fused.confidence[valid] <= 1 + 1e-6))
    assert fused.cameras_used == tuple(nuscenes_keyframe.rig.names)  # every camera, in the rig's order
    np.testing.assert_array_equal(fused.seen, inputs.point_visible.max(axis=1) > 0)
    assert 0.4 < fused.seen.mean() < 0.8
    assert set(fused.timings) == set(TIMINGS)
    parts = sum(fused.timings[k] for k in TIMINGS[:3])
    assert all(fused.timings[k] >= 0 for k in TIMINGS)
    assert fused.timings["total_ms"] == pytest.approx(parts, rel=1e-9)


def test_jpeg_decoded_at_half_size_labels_like_the_full_image(segmenter, nuscenes_keyframe, fused):
    """What the node does with 1600x900 CompressedImages (decoded at a reduced scale, decode_reduction):
    the labels stay those of the full-size images but for a few points on class borders."""
    from xkd_ros.data.messages import frame_to_messages, rgb_from_image
    from xkd_ros.preprocess import decode_reduction

    frame, messages = nuscenes_keyframe, frame_to_messages(nuscenes_keyframe, "jpeg")
    rig = frame.compensated_rig()
    full = {c: rgb_from_image(m) for c, m in messages.images.items()}
    reduction = decode_reduction(rig["CAM_FRONT"].intrinsics, segmenter.preprocess)
    half = {c: rgb_from_image(m, reduction) for c, m in messages.images.items()}
    assert reduction > 1
    assert {image.shape for image in half.values()} == {(900 // reduction, 1600 // reduction, 3)}
    labels_full = segmenter.segment(frame.points, frame.channels, full, rig).labels
    labels_half = segmenter.segment(frame.points, frame.channels, half, rig).labels
    assert (labels_half == labels_full).mean() > 0.98
    assert (labels_full == fused.labels).mean() > 0.98  # JPEG itself changes as little


def test_invalid_points_are_ignored_with_zero_confidence(segmenter, nuscenes_keyframe, fused):
    frame = nuscenes_keyframe
    points = with_nan_points(frame, ([3, 10], [5]))
    result = segmenter.segment(points, frame.channels, frame.images, frame.compensated_rig())
    invalid = np.linalg.norm(frame.xyz, axis=1) <= frame.rig.lidar.min_range  # the ego vehicle's returns
    assert invalid.any()
    invalid[[3, 5, 10]] = True
    assert np.all(result.labels[invalid] == IGNORE_INDEX)
    assert np.all(result.confidence[invalid] == 0)
    assert not result.seen[invalid].any()
    assert np.all(result.confidence[~invalid] > 0)


def test_lidar_only_is_the_lidar_head(segmenter, nuscenes_keyframe, fused):
    """No images (lidar_only, or a rig without cameras): the graph runs with M = 0 and labels every point
    with the LiDAR-only head, which does not depend on the images at all."""
    frame = nuscenes_keyframe
    result = segmenter.segment_frame(frame, lidar_only=True)
    assert not result.seen.any()
    assert result.cameras_used == ()
    inputs = prepare(frame.points, frame.channels, {}, frame.compensated_rig(), segmenter.preprocess)
    logits = segmenter.backend.infer(inputs.feed(segmenter.backend.input_names))["logits"]
    valid = inputs.point_valid
    np.testing.assert_array_equal(result.labels[valid], logits.argmax(axis=1)[valid])
    no_cameras = frame.compensated_rig().with_cameras([])
    alone = segmenter.segment(frame.points, frame.channels, {}, no_cameras)
    np.testing.assert_array_equal(alone.labels, result.labels)
    np.testing.assert_array_equal(alone.confidence, result.confidence)
    # the fused head differs somewhere on seen points, and LiDAR-only points agree
    assert (result.labels != fused.labels)[fused.seen].any()
    np.testing.assert_array_equal(result.labels[~fused.seen], fused.labels[~fused.seen])


def test_missing_cameras_are_left_out_in_rig_order(segmenter, nuscenes_keyframe, fused):
    frame = nuscenes_keyframe
    kept = ("CAM_FRONT", "CAM_BACK", "CAM_BACK_LEFT")
    images = {c: frame.images[c] for c in reversed(kept)}
    result = segmenter.segment(frame.points, frame.channels, images, frame.compensated_rig())
    assert result.cameras_used == kept  # in the rig's order, whatever the dict's
    assert 0 < result.seen.sum() < fused.seen.sum()
    assert not (result.seen & ~fused.seen).any()
    np.testing.assert_array_equal(result.labels[~fused.seen], fused.labels[~fused.seen])


def test_a_camera_of_any_name_is_fused(segmenter, nuscenes_keyframe):
    """Issue 11: one camera named image_2 was silently ignored (0 points fused) because the model knew
    only CAM_* names. Cameras are bound by their place in the rig: a renamed camera fuses the same."""
    frame = nuscenes_keyframe
    rig = frame.compensated_rig()
    front = segmenter.segment(frame.points, frame.channels, {"CAM_FRONT": frame.images["CAM_FRONT"]}, rig)
    kitti = renamed(rig.with_cameras([rig["CAM_FRONT"]]), {"CAM_FRONT": "image_2"})
    result = segmenter.segment(frame.points, frame.channels, {"image_2": frame.images["CAM_FRONT"]}, kitti)
    assert result.cameras_used == ("image_2",)
    assert result.seen.sum() == front.seen.sum() > 2000  # SOURCE.md: 3067 points in CAM_FRONT
    np.testing.assert_array_equal(result.labels, front.labels)
    np.testing.assert_array_equal(result.confidence, front.confidence)


def test_the_rellis_camera_is_fused(segmenter, rellis_frame):
    """The RELLIS-3D rig's one camera (not a CAM_* name) was ignored before: now its points are fused."""
    result = segmenter.segment_frame(rellis_frame)
    assert result.cameras_used == tuple(rellis_frame.rig.names) == ("pylon_camera",)
    assert result.seen.any()
    valid = result.labels != IGNORE_INDEX
    assert 0 < valid.sum() < len(rellis_frame.points)  # the Ouster's no-return points are all zero
    assert np.all(result.confidence[~valid] == 0)
    assert result.labels[valid].max() < segmenter.classes.num_classes


@pytest.mark.parametrize("beams", [16, 64, 128])
def test_any_beam_count(segmenter, nuscenes_keyframe, beams):
    """The range image takes the rig's beam count as its height; the same model labels it."""
    frame = nuscenes_keyframe
    rig = frame.compensated_rig()
    profile = LidarProfile(beams=beams, fov_up_deg=11.33, fov_down_deg=-31.33, sensor="")
    rig = Rig.from_cameras(list(rig), rig.lidar_frame, profile)
    keep = [frame.channels.index(c) for c in ("x", "y", "z", "intensity")]  # no ring: rows by elevation
    result = segmenter.segment(frame.points[:, keep], ("x", "y", "z", "intensity"), frame.images, rig)
    inputs = prepare(
        frame.points[:, keep], ("x", "y", "z", "intensity"), frame.images, rig, segmenter.preprocess
    )
    assert inputs.range_image.shape[1] == beams
    assert result.labels.shape == (len(frame.points),)
    assert result.labels[inputs.point_valid].max() < segmenter.classes.num_classes
    assert 0.4 < result.seen.mean() < 0.8


def test_channel_order_does_not_matter(segmenter, nuscenes_keyframe, fused):
    frame = nuscenes_keyframe
    order = [4, 3, 2, 1, 0]
    channels = [frame.channels[i] for i in order]
    result = segmenter.segment(frame.points[:, order], channels, frame.images, frame.compensated_rig())
    np.testing.assert_array_equal(result.labels, fused.labels)


def test_bad_input_names_the_camera_or_field(segmenter, nuscenes_keyframe):
    frame, rig = nuscenes_keyframe, nuscenes_keyframe.compensated_rig()
    images = dict(frame.images, CAM_BACK=frame.images["CAM_BACK"][:-2])
    with pytest.raises(ValueError, match="CAM_BACK"):
        segmenter.segment(frame.points, frame.channels, images, rig)
    with pytest.raises(ValueError, match="CAM_BACK"):  # also when the images are not used
        segmenter.segment(frame.points, frame.channels, images, rig, lidar_only=True)
    with pytest.raises(ValueError, match="CAM_UNDER"):
        segmenter.segment(frame.points, frame.channels, {"CAM_UNDER": images["CAM_FRONT"]}, rig)
    with pytest.raises(ValueError, match="intensity"):
        segmenter.segment(frame.points[:, :3], ("x", "y", "z"), {}, rig)


@pytest.mark.parametrize("cameras", [(), ("CAM_BACK",), None])
def test_torch_and_onnx_runtime_agree_for_any_camera_count(model, segmenter, nuscenes_keyframe, cameras):
    """The checkpoint behind the exported model (torch backend, eager) and the graph, at M = 0, 1 and 6."""
    from xkd_ros.inference import create_backend

    frame = nuscenes_keyframe
    images = frame.images if cameras is None else {c: frame.images[c] for c in cameras}
    inputs = prepare(frame.points, frame.channels, images, frame.compensated_rig(), segmenter.preprocess)
    assert len(inputs.cameras) == (6 if cameras is None else len(cameras))
    feed = inputs.feed(segmenter.backend.input_names)
    got = segmenter.backend.infer(feed)
    want = create_backend("torch", model.with_suffix(".pt")).infer(feed)
    for name in ("confidence", "logits"):
        assert np.abs(got[name] - want[name]).max() < 1e-3, name


def test_check_rig_says_what_the_model_does_with_the_rig(segmenter, models, nuscenes_keyframe, rellis_frame):
    rig = nuscenes_keyframe.rig
    assert segmenter.check_rig(rig) == (
        "6 cameras fused in rig order: CAM_FRONT, CAM_FRONT_RIGHT, CAM_FRONT_LEFT, CAM_BACK, CAM_BACK_LEFT, "
        "CAM_BACK_RIGHT; 32-beam range image (velodyne_hdl32e)"
    )
    assert segmenter.check_rig(rellis_frame.rig) == (
        "1 camera fused in rig order: pylon_camera; 64-beam range image (ouster_os1_64)"
    )
    beams = "32-beam range image (velodyne_hdl32e)"
    assert segmenter.check_rig(rig.with_cameras([])) == (
        f"LiDAR-only: no cameras, the LiDAR-only head labels every point; {beams}"
    )
    assert Segmenter.from_model(models[1]).check_rig(rig.with_cameras([])) == (
        f"LiDAR-only: the model takes no images, the LiDAR-only head labels every point; {beams}"
    )


def test_check_rig_refuses_what_the_model_cannot_take(segmenter, models, nuscenes_keyframe):
    rig = nuscenes_keyframe.rig
    nine = rig.with_cameras(list(rig) + [dataclasses.replace(rig[c], name=f"{c}_2") for c in rig.names[:3]])
    message = (
        r"^cameras: the rig has 9 cameras \[.*'CAM_FRONT_LEFT_2'\], the model fuses at most 8; choose at"
    )
    with pytest.raises(ValueError, match=message):
        segmenter.check_rig(nine)
    with pytest.raises(
        ValueError, match=r"^cameras: the model is LiDAR-only .*\['CAM_FRONT', .*cameras: \[\]"
    ):
        Segmenter.from_model(models[1]).check_rig(rig)
    for beams in (4, 300):
        wide = Rig.from_cameras(list(rig), rig.lidar_frame, LidarProfile(beams=beams, sensor=""))
        with pytest.raises(
            ValueError, match=rf"^lidar.beams: {beams} \(custom profile\) is outside the 8..256 "
        ):
            segmenter.check_rig(wide)


def test_segment_refuses_more_images_than_the_model_fuses(segmenter, nuscenes_keyframe):
    frame = nuscenes_keyframe
    rig = frame.compensated_rig()
    extra = [dataclasses.replace(rig[c], name=f"{c}_2") for c in rig.names[:3]]
    images = {**frame.images, **{c.name: frame.images[c.name[:-2]] for c in extra}}
    with pytest.raises(ValueError, match="cameras: the rig has 9 cameras"):
        segmenter.segment(frame.points, frame.channels, images, rig.with_cameras(list(rig) + extra))
    # the same rig with at most 8 images is fine: only the cameras with an image are fused
    del images["CAM_BACK_RIGHT"]
    result = segmenter.segment(frame.points, frame.channels, images, rig.with_cameras(list(rig) + extra))
    assert len(result.cameras_used) == MAX_CAMERAS
    assert result.cameras_used[-3:] == ("CAM_FRONT_2", "CAM_FRONT_RIGHT_2", "CAM_FRONT_LEFT_2")


def test_a_lidar_only_model_ignores_images(models, nuscenes_keyframe):
    segmenter = Segmenter.from_model(models[1])
    result = segmenter.segment_frame(nuscenes_keyframe)
    assert result.cameras_used == ()
    assert not result.seen.any()
    assert segmenter.max_cameras == 0


def test_metadata_key_matches_the_exporter():
    from xkd_ros import export

    assert export.METADATA_KEY == METADATA_KEY


def test_no_torch_on_the_onnxruntime_path(model):
    code = (
        "import sys; from xkd_ros.pipeline import Segmenter; from xkd_ros.msgs import create_labeled_cloud; "
        f"Segmenter.from_model({str(model)!r}); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_pack_rgb_is_rviz_rgb8():
    packed = pack_rgb(np.array([[255, 0, 0], [1, 2, 3]], dtype=np.uint8))
    assert packed.dtype == np.float32
    assert packed.view(np.uint32).tolist() == [0x00FF0000, 0x00010203]
    colors = np.random.default_rng(0).integers(0, 256, (100, 3), dtype=np.uint8)
    np.testing.assert_array_equal(unpack_rgb(pack_rgb(colors)), colors)


def test_labeled_cloud_round_trip(segmenter, nuscenes_keyframe, fused):
    frame = nuscenes_keyframe
    xyz, intensity = frame.xyz.copy(), frame.channel("intensity")
    xyz[7] = np.nan
    labels = fused.labels.copy()
    labels[7] = IGNORE_INDEX
    header, colors = Header(frame_id="lidar"), segmenter.classes.colors
    cloud = create_labeled_cloud(header, xyz, intensity, labels, fused.confidence, colors, fused.seen)
    assert (cloud.width, cloud.height, cloud.point_step, cloud.is_dense) == (len(xyz), 1, 28, False)
    assert [f.name for f in cloud.fields] == [
        "x", "y", "z", "intensity", "label", "fused", "confidence", "rgb"
    ]  # fmt: skip
    points = read_points(cloud)
    np.testing.assert_array_equal(points["fused"], fused.seen)
    np.testing.assert_array_equal(np.column_stack([points["x"], points["y"], points["z"]]), xyz)
    np.testing.assert_array_equal(points["intensity"], intensity)
    np.testing.assert_array_equal(points["label"], labels)
    np.testing.assert_array_equal(points["confidence"], fused.confidence)
    expected = segmenter.classes.colorize(labels)
    np.testing.assert_array_equal(unpack_rgb(points["rgb"]), expected)
    assert unpack_rgb(points["rgb"][7:8]).tolist() == [list(IGNORE_COLOR)]


def test_labeled_cloud_checks_its_inputs():
    header, xyz, colors = Header(), np.zeros((3, 3), np.float32), np.zeros((2, 3), np.uint8)
    confidence = np.ones(3, np.float32)
    cloud = create_labeled_cloud(header, xyz, None, np.array([0, 1, 255], np.uint8), confidence, colors)
    assert read_points(cloud)["intensity"].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="labels"):
        create_labeled_cloud(header, xyz, None, np.array([0, 2, 255], np.uint8), confidence, colors)
    with pytest.raises(ValueError, match="confidence"):
        create_labeled_cloud(header, xyz, None, np.zeros(3, np.uint8), confidence[:2], colors)


# A model is checked at load: against its model card, and its metadata against its graph.


def test_the_default_model_matches_its_model_card():
    assert check_model_card(SHIPPED) == "sha256 matches its model card xkd_synthetic.md"


def test_an_exported_model_matches_its_model_card(segmenter):
    assert segmenter.model_check == "sha256 matches its model card tiny.md"


def test_a_damaged_model_is_refused_naming_the_file_and_both_digests(model, tmp_path):
    """400 bytes of weights flipped: the file still loads and runs, publishing whatever the damage makes."""
    damaged, card = tmp_path / model.name, tmp_path / model.with_suffix(".md").name
    content = bytearray(model.read_bytes())
    middle = len(content) // 2
    content[middle : middle + 400] = bytes(b ^ 0xFF for b in content[middle : middle + 400])
    damaged.write_bytes(bytes(content))
    card.write_text(model.with_suffix(".md").read_text())
    good, bad = sha256(model), sha256(damaged)
    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(damaged))}: sha256 {bad} differs from {good} .*{card.name}"
    ):
        Segmenter.from_model(damaged)


def test_a_model_without_a_card_loads_with_a_note(model, tmp_path):
    (tmp_path / "mine.onnx").write_bytes(model.read_bytes())
    assert Segmenter.from_model(tmp_path / "mine.onnx").model_check == (
        "no model card mine.md beside it: sha256 not verified"
    )


def with_metadata(model, tmp_path, edit, graph_edit=None):
    """A copy of `model` (no card) with its xkd_ros metadata changed by `edit(dict)` (and its graph by
    `graph_edit(onnx.ModelProto)`)."""
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(model)
    (prop,) = [p for p in graph.metadata_props if p.key == METADATA_KEY]
    meta = json.loads(prop.value)
    edit(meta)
    prop.value = json.dumps(meta)
    if graph_edit is not None:
        graph_edit(graph)
    path = tmp_path / "edited.onnx"
    onnx.save(graph, path)
    return path


def fix_axis(name, axis, size):
    """A graph edit: input `name`'s `axis` fixed to `size`, as a model exported for one rig had it."""

    def edit(graph):
        (graph_input,) = [i for i in graph.graph.input if i.name == name]
        graph_input.type.tensor_type.shape.dim[axis].dim_value = size

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda meta: meta["preprocess"].update(range_width=1024),
            "preprocess.range_width is 1024 in the metadata, the graph's input 'range_image' takes 128",
        ),
        (
            lambda meta: meta["preprocess"].update(image_width=480),
            "preprocess.image_width is 480 in the metadata, the graph's input 'images' takes 96",
        ),
        (
            lambda meta: (meta.update(classes="nuscenes"), meta["model_config"].update(num_classes=16)),
            "model_config.num_classes is 16, the graph's output 'logits' has 14 classes",
        ),
        (lambda meta: meta.update(inputs=meta["inputs"][:3]), "the metadata lists inputs"),
        (lambda meta: meta.update(max_cameras="8"), "metadata max_cameras: expected a whole number >= 0"),
        (lambda meta: meta.update(range_rows=[64, 8]), "metadata range_rows: expected [lowest, highest]"),
    ],
)
def test_metadata_that_disagrees_with_the_graph_is_refused_naming_both(model, tmp_path, edit, message):
    path = with_metadata(model, tmp_path, edit)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: .*{re.escape(message)}"):
        Segmenter.from_model(path)


@pytest.mark.parametrize(
    ("edit", "graph_edit", "message"),
    [
        (
            lambda meta: [meta.pop(key) for key in ("max_cameras", "range_rows")],
            None,
            "its metadata has no max_cameras / range_rows: exported for one rig",
        ),
        (lambda meta: None, fix_axis("images", 0, 6), "the graph's input 'images' takes exactly 6 cameras"),
        (
            lambda meta: None,
            fix_axis("fused_uv", 1, 6),
            "the graph's input 'fused_uv' takes exactly 6 camera slots",
        ),
        (
            lambda meta: None,
            fix_axis("range_image", 1, 32),
            "the graph's input 'range_image' takes exactly 32 range-image rows",
        ),
    ],
)
def test_a_model_exported_for_one_rig_is_refused_with_what_to_do(model, tmp_path, edit, graph_edit, message):
    path = with_metadata(model, tmp_path, edit, graph_edit)
    with pytest.raises(
        ValueError, match=f"^{re.escape(str(path))}: {re.escape(message)}.*re-export it with xkd-export$"
    ):
        Segmenter.from_model(path)


def test_the_class_set_of_a_model_is_a_name_not_a_path(model, tmp_path):
    copy = tmp_path / "synthetic.yaml"
    copy.write_text((REPO / "config/classes/synthetic.yaml").read_text())
    path = with_metadata(model, tmp_path, lambda meta: meta.update(classes=str(copy)))
    with pytest.raises(ValueError, match=r"metadata classes: class set .* not a class set name"):
        Segmenter.from_model(path)
