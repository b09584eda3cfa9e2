"""Segmenter (the one call of the node, the evaluator and the demo) on the real frames; the labeled cloud."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from std_msgs.msg import Header

from xkd_ros.data.classes import IGNORE_COLOR, IGNORE_INDEX
from xkd_ros.msgs import create_labeled_cloud, pack_rgb, read_points, unpack_rgb
from xkd_ros.pipeline import METADATA_KEY, Segmenter, sha256
from xkd_ros.preprocess import prepare_frame

MODEL = REPO / "models/xkd_synthetic.onnx"
TIMINGS = ("preprocess_ms", "inference_ms", "postprocess_ms", "total_ms")


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter.from_model(MODEL, threads=2)


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
    assert fused.labels.max() < segmenter.classes.num_classes
    assert np.all((fused.confidence > 0) & (fused.confidence <= 1 + 1e-6))
    assert fused.cameras_used == segmenter.preprocess.cameras
    inputs = prepare_frame(nuscenes_keyframe, segmenter.preprocess)
    np.testing.assert_array_equal(fused.seen, inputs.point_visible.max(axis=1) > 0)
    assert 0.4 < fused.seen.mean() < 0.8
    assert set(fused.timings) == set(TIMINGS)
    parts = sum(fused.timings[k] for k in TIMINGS[:3])
    assert all(fused.timings[k] >= 0 for k in TIMINGS)
    assert fused.timings["total_ms"] == pytest.approx(parts, rel=1e-9)


def test_jpeg_decoded_at_half_size_labels_like_the_full_image(segmenter, nuscenes_keyframe, fused):
    """What the node does with 1600x900 CompressedImages (decode_reduction 2): the labels stay those of
    the full-size images but for a few points on class borders."""
    from xkd_ros.data.messages import frame_to_messages, rgb_from_image
    from xkd_ros.preprocess import decode_reduction

    frame, messages = nuscenes_keyframe, frame_to_messages(nuscenes_keyframe, "jpeg")
    rig = frame.compensated_rig()
    full = {c: rgb_from_image(m) for c, m in messages.images.items()}
    half = {
        c: rgb_from_image(m, decode_reduction(rig[c].intrinsics, segmenter.preprocess))
        for c, m in messages.images.items()
    }
    assert {image.shape for image in half.values()} == {(450, 800, 3)}
    labels_full = segmenter.segment(frame.points, frame.channels, full, rig).labels
    labels_half = segmenter.segment(frame.points, frame.channels, half, rig).labels
    assert (labels_half == labels_full).mean() > 0.98
    assert (labels_full == fused.labels).mean() > 0.98  # JPEG itself changes as little


def test_invalid_points_are_ignored_with_zero_confidence(segmenter, nuscenes_keyframe, fused):
    frame = nuscenes_keyframe
    points = with_nan_points(frame, ([3, 10], [5]))
    result = segmenter.segment(points, frame.channels, frame.images, frame.compensated_rig())
    invalid = np.zeros(len(points), dtype=bool)
    invalid[[3, 5, 10]] = True
    assert np.all(result.labels[invalid] == IGNORE_INDEX)
    assert np.all(result.confidence[invalid] == 0)
    assert not result.seen[invalid].any()
    assert np.all(result.confidence[~invalid] > 0)


def test_lidar_only_is_the_lidar_head(segmenter, nuscenes_keyframe, fused):
    result = segmenter.segment_frame(nuscenes_keyframe, lidar_only=True)
    assert not result.seen.any()
    assert result.cameras_used == ()
    inputs = prepare_frame(nuscenes_keyframe, segmenter.preprocess)
    inputs.images[:] = 0
    inputs.point_visible[:] = 0
    logits = segmenter.backend.infer(inputs.as_dict())["lidar_logits"]
    np.testing.assert_array_equal(result.labels, logits.argmax(axis=1))
    # the fused head differs somewhere on seen points, and LiDAR-only points agree
    assert (result.labels != fused.labels)[fused.seen].any()
    np.testing.assert_array_equal(result.labels[~fused.seen], fused.labels[~fused.seen])


def test_missing_cameras_fall_back_to_lidar_only(segmenter, nuscenes_keyframe, fused):
    frame = nuscenes_keyframe
    kept = ("CAM_FRONT", "CAM_BACK", "CAM_BACK_LEFT")
    images = {c: frame.images[c] for c in reversed(kept)}
    result = segmenter.segment(frame.points, frame.channels, images, frame.compensated_rig())
    assert result.cameras_used == kept  # in the model's order
    assert 0 < result.seen.sum() < fused.seen.sum()
    assert not (result.seen & ~fused.seen).any()
    np.testing.assert_array_equal(result.labels[~fused.seen], fused.labels[~fused.seen])


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


def test_unknown_camera_is_ignored(segmenter, rellis_frame):
    result = segmenter.segment_frame(rellis_frame)
    assert result.cameras_used == ()
    assert not result.seen.any()
    valid = result.labels != IGNORE_INDEX
    assert 0 < valid.sum() < len(rellis_frame.points)  # the Ouster's no-return points are all zero
    assert np.all(result.confidence[~valid] == 0)
    assert result.labels[valid].max() < segmenter.classes.num_classes


def test_metadata_key_matches_the_exporter():
    from xkd_ros import export

    assert export.METADATA_KEY == METADATA_KEY


def test_no_torch_on_the_onnxruntime_path():
    code = (
        "import sys; from xkd_ros.pipeline import Segmenter; from xkd_ros.msgs import create_labeled_cloud; "
        f"Segmenter.from_model({str(MODEL)!r}); assert 'torch' not in sys.modules"
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
    header = Header(frame_id="lidar")
    cloud = create_labeled_cloud(header, xyz, intensity, labels, fused.confidence, segmenter.classes.colors)
    assert (cloud.width, cloud.height, cloud.point_step, cloud.is_dense) == (len(xyz), 1, 28, False)
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "intensity", "label", "confidence", "rgb"]
    points = read_points(cloud)
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


def test_the_default_model_matches_its_model_card(segmenter):
    assert segmenter.model_check == "sha256 matches its model card xkd_synthetic.md"


def test_a_damaged_model_is_refused_naming_the_file_and_both_digests(tmp_path):
    """400 bytes of weights flipped: the file still loads and runs, publishing whatever the damage makes."""
    model, card = tmp_path / MODEL.name, tmp_path / MODEL.with_suffix(".md").name
    content = bytearray(MODEL.read_bytes())
    middle = len(content) // 2
    content[middle : middle + 400] = bytes(b ^ 0xFF for b in content[middle : middle + 400])
    model.write_bytes(bytes(content))
    card.write_text(MODEL.with_suffix(".md").read_text())
    good, bad = sha256(MODEL), sha256(model)
    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(model))}: sha256 {bad} differs from {good} .*{card.name}"
    ):
        Segmenter.from_model(model)


def test_a_model_without_a_card_loads_with_a_note(tmp_path):
    (tmp_path / "mine.onnx").write_bytes(MODEL.read_bytes())
    assert Segmenter.from_model(tmp_path / "mine.onnx").model_check == (
        "no model card mine.md beside it: sha256 not verified"
    )


def with_metadata(tmp_path, edit):
    """A copy of the default model (no card) with its xkd_ros metadata changed by `edit(dict)`."""
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(MODEL)
    (prop,) = [p for p in graph.metadata_props if p.key == METADATA_KEY]
    meta = json.loads(prop.value)
    edit(meta)
    prop.value = json.dumps(meta)
    path = tmp_path / "edited.onnx"
    onnx.save(graph, path)
    return path


def drop_a_camera(meta):
    meta["preprocess"]["cameras"] = meta["preprocess"]["cameras"][:5]
    meta["model_config"]["num_cameras"] = 5


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            drop_a_camera,
            "the number of preprocess.cameras is 5 in the metadata, the graph's input 'images' takes 6",
        ),
        (
            lambda meta: meta["preprocess"].update(range_height=64),
            "preprocess.range_height is 64 in the metadata, the graph's input 'range_image' takes 32",
        ),
        (
            lambda meta: meta["preprocess"].update(range_width=1024),
            "preprocess.range_width is 1024 in the metadata, the graph's input 'range_image' takes 512",
        ),
        (
            lambda meta: meta["preprocess"].update(image_width=480),
            "preprocess.image_width is 480 in the metadata, the graph's input 'images' takes 240",
        ),
        (
            lambda meta: meta["model_config"].update(num_cameras=5),
            "model_config.num_cameras is 5, preprocess.cameras lists 6",
        ),
        (
            lambda meta: (meta.update(classes="nuscenes"), meta["model_config"].update(num_classes=16)),
            "model_config.num_classes is 16, the graph's output 'fused_logits' has 14 classes",
        ),
        (lambda meta: meta.update(inputs=meta["inputs"][:3]), "the metadata lists inputs"),
    ],
)
def test_metadata_that_disagrees_with_the_graph_is_refused_naming_both(tmp_path, edit, message):
    path = with_metadata(tmp_path, edit)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: .*{re.escape(message)}"):
        Segmenter.from_model(path)


def test_the_class_set_of_a_model_is_a_name_not_a_path(tmp_path):
    copy = tmp_path / "synthetic.yaml"
    copy.write_text((REPO / "config/classes/synthetic.yaml").read_text())
    path = with_metadata(tmp_path, lambda meta: meta.update(classes=str(copy)))
    with pytest.raises(ValueError, match=r"metadata classes: class set .* not a class set name"):
        Segmenter.from_model(path)
