"""The network: config, shapes, per-frame sampling, fusion masking, pretrained loading and ONNX export."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tiny_model import TINY_MODEL  # noqa: E402  (imports torch)

from xkd_ros.model import (  # noqa: E402  (after the skip: torch is the optional `train` extra)
    FusionModel,
    ImageEncoder,
    LidarOnlyModel,
    ModelConfig,
    SegmentationExport,
    ViewFusion,
    build_model,
    export_onnx,
    gather_pixels,
    sample_views,
)
from xkd_ros.preprocess import fusion_slots  # noqa: E402

TINY = {"num_classes": 5, **TINY_MODEL}
RANGE_SIZE, IMAGE_SIZE = (8, 64), (32, 48)


def tiny_config(**changes) -> ModelConfig:
    return ModelConfig.from_dict({**TINY, **changes})


def make_inputs(
    config: ModelConfig, point_counts: list[int], seed: int = 0, cameras: int = 2, rows: int = RANGE_SIZE[0]
) -> dict:
    """Random inputs in xkd_ros.preprocess layout for frames of the given point counts, `cameras` cameras
    and `rows` range-image rows."""
    generator = torch.Generator().manual_seed(seed)
    frames, points = len(point_counts), sum(point_counts)
    (height, width), (image_height, image_width) = (rows, RANGE_SIZE[1]), IMAGE_SIZE
    batch = torch.repeat_interleave(torch.arange(frames), torch.tensor(point_counts))
    inputs = {
        "range_image": torch.rand(frames, 6, height, width, generator=generator) * 40,
        "point_features": torch.rand(points, 5, generator=generator) * 40,
        "point_index": torch.stack(
            [
                batch,
                torch.randint(0, height, (points,), generator=generator),
                torch.randint(0, width, (points,), generator=generator),
            ],
            dim=1,
        ),
        "images": torch.randn(frames * cameras, 3, image_height, image_width, generator=generator),
        "point_uv": torch.rand(points, cameras, 2, generator=generator) * 2.4 - 1.2,
        "point_visible": (torch.rand(points, cameras, generator=generator) < 0.5).float(),
    }
    if frames > 1:
        inputs["point_batch_sizes"] = torch.tensor(point_counts)
    return inputs


def one_frame(inputs: dict) -> dict:
    """A one-frame batch as xkd_ros.preprocess gives a single frame: no batch axis or batch column, with
    the compact camera inputs of an exported graph (NetworkInputs.feed) beside the dense ones."""
    slots = fusion_slots(inputs["point_uv"].numpy(), inputs["point_visible"].numpy())
    return {
        **inputs,
        "range_image": inputs["range_image"][0],
        "point_index": inputs["point_index"][:, 1:],
        **{name: torch.from_numpy(array) for name, array in slots.items()},
    }


def deployed(model, inputs: dict) -> tuple:
    """Label and confidence as the dense model gives them (training's forward): the fused head's softmax
    where a camera sees the point, the LiDAR-only head's elsewhere."""
    with torch.no_grad():
        outputs = model(inputs)
    probabilities = outputs["lidar_logits"].softmax(1)
    if "fused_logits" in outputs:
        seen = inputs["point_visible"].sum(dim=1, keepdim=True) > 0
        probabilities = torch.where(seen, outputs["fused_logits"].softmax(1), probabilities)
    confidence, label = probabilities.max(dim=1)
    return label, confidence, probabilities


def test_config_round_trip_and_errors():
    config = tiny_config(fusion="attention")
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert isinstance(config.to_dict()["range_strides"][0], list)
    with pytest.raises(ValueError, match=r"unknown keys \['depth', 'widht'\]"):
        ModelConfig.from_dict({"widht": 3, "depth": 2})
    with pytest.raises(ValueError, match="fusion 'sum'"):
        ModelConfig(fusion="sum")
    with pytest.raises(ValueError, match="range_strides has 1 entries"):
        ModelConfig(range_strides=((1, 2),))
    with pytest.raises(ValueError, match="feature_dim must be >= 1"):
        ModelConfig(feature_dim=0)


@pytest.mark.parametrize("fusion", ["gated", "attention"])
def test_fusion_forward_shapes_and_embeddings(fusion):
    torch.manual_seed(0)
    config = tiny_config(fusion=fusion)
    model = build_model(config)
    assert isinstance(model, FusionModel)
    inputs = make_inputs(config, [30, 20])
    outputs = model(inputs)
    assert set(outputs) == {"fused_logits", "lidar_logits"}
    assert outputs["fused_logits"].shape == outputs["lidar_logits"].shape == (50, 5)
    outputs = model(inputs, embeddings=True)
    assert outputs["point_embedding"].shape == (50, 6)
    assert outputs["pixel_embedding"].shape == (50, 2, 6)
    norms = torch.linalg.vector_norm(outputs["pixel_embedding"], dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    loss = sum(value.square().mean() for value in outputs.values())
    loss.backward()
    for branch in (model.range_branch, model.image_branch, model.fusion):
        assert all(p.grad is not None for p in branch.parameters())


def test_batch_needs_point_batch_sizes_and_matching_images():
    config = tiny_config()
    model = build_model(config)
    inputs = make_inputs(config, [10, 10])
    with pytest.raises(ValueError, match="point_batch_sizes"):
        model({key: value for key, value in inputs.items() if key != "point_batch_sizes"})
    with pytest.raises(
        ValueError, match=r"images: 3 rows for 2 frames of 2 cameras \(point_uv\); expected 4"
    ):
        model({**inputs, "images": inputs["images"][:3]})
    with pytest.raises(ValueError, match="point_batch_sizes has 3 entries for 2 frames"):
        model({**inputs, "point_batch_sizes": torch.tensor([10, 5, 5])})


def test_lidar_only_model_is_the_fusion_models_student():
    config = tiny_config(use_images=False)
    model = build_model(config)
    assert isinstance(model, LidarOnlyModel)
    assert not any(name.startswith("image_branch") for name in model.state_dict())
    fusion = build_model(tiny_config())
    missing, _ = model.load_state_dict(fusion.state_dict(), strict=False)
    assert missing == []
    inputs = make_inputs(config, [12])
    model.eval(), fusion.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(inputs)["lidar_logits"], fusion(inputs)["lidar_logits"])


def test_gather_pixels_reads_each_points_pixel():
    feature_map = torch.randn(2, 3, 4, 5)
    point_index = torch.tensor([[0, 0, 0], [1, 3, 4], [1, 2, 1], [0, 3, 2]])
    expected = torch.stack([feature_map[b, :, r, c] for b, r, c in point_index.tolist()])
    torch.testing.assert_close(gather_pixels(feature_map, point_index), expected)


@pytest.mark.parametrize("train", [False, True])
def test_range_branch_is_the_plain_cenet_head_and_point_fusion(train):
    """RangeBranch.forward reorders linear steps for speed; its values and gradients are the plain
    formulation's: the neck over the concatenated upsampled scales, then upsampling, the gather, and fuse
    over the concatenated pixel and point features."""
    from torch.nn import functional

    torch.manual_seed(0)
    config = tiny_config(range_widths=[8, 12, 16, 20], range_strides=[[1, 2], [2, 2], [2, 2]])
    branch = build_model(config).range_branch.train(train)
    inputs = make_inputs(config, [300, 200], rows=16)
    args = inputs["range_image"], inputs["point_features"], inputs["point_index"]

    def plain(range_image, point_features, point_index):
        x, scales = branch.stem(branch.input_norm(range_image)), []
        for layer in branch.stages:
            x = layer(x)
            scales.append(x)
        size = scales[0].shape[-2:]
        pyramid = [scales[0], *(functional.interpolate(s, size=size, mode="bilinear") for s in scales[1:])]
        feature_map = branch.neck(torch.cat(pyramid, dim=1))
        feature_map = functional.interpolate(feature_map, size=range_image.shape[-2:], mode="bilinear")
        pixel_features = gather_pixels(feature_map, point_index)
        return branch.fuse(torch.cat([pixel_features, branch.point_mlp(point_features)], dim=1))

    with torch.random.fork_rng():  # the same BatchNorm batch statistics in both (train mode)
        got = branch(*args)
    want = plain(*args)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    weights = torch.randn(got.shape)
    first = torch.autograd.grad((got * weights).sum(), [branch.neck[0].weight, branch.fuse[0][0].weight])
    second = torch.autograd.grad((want * weights).sum(), [branch.neck[0].weight, branch.fuse[0][0].weight])
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_sample_views_uses_each_frames_own_cameras():
    # frame 0's two cameras hold 1 and 2 everywhere, frame 1's hold 3 and 4
    image_features = torch.arange(1.0, 5.0).view(4, 1, 1, 1).expand(4, 2, 6, 8)
    point_uv = torch.zeros(5, 2, 2)  # the image centre
    sampled = sample_views(image_features, point_uv, [2, 3])
    assert sampled.shape == (5, 2, 2)
    expected = torch.tensor([[1.0, 2.0]] * 2 + [[3.0, 4.0]] * 3)
    torch.testing.assert_close(sampled[:, :, 0], expected)
    beyond_edge = sample_views(image_features[:2], torch.full((1, 2, 2), 1.05), None)
    torch.testing.assert_close(
        beyond_edge[0, :, 0], torch.tensor([1.0, 2.0])
    )  # border padding: the edge value


@pytest.mark.parametrize("fusion", ["gated", "attention"])
def test_view_fusion_keeps_unseen_points_and_ignores_invisible_views(fusion):
    torch.manual_seed(0)
    config = tiny_config(fusion=fusion)
    fusion_module = ViewFusion(config).eval()
    f3 = torch.randn(4, config.feature_dim)
    views = torch.randn(4, 2, config.image_feature_dim)
    visible = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    fused = fusion_module(f3, views, visible)
    torch.testing.assert_close(fused[0], f3[0])
    assert not torch.allclose(fused[1:], f3[1:])
    changed = views.clone()
    changed[1, 1] += 100.0  # a view that does not see point 1
    torch.testing.assert_close(fusion_module(f3, changed, visible)[1], fused[1])


def test_load_pretrained_resnet_layout(tmp_path):
    resnet = tiny_config(image_widths=[8, 8, 16, 32], image_blocks=[2, 2, 2], image_stem_kernel=7)
    source = ImageEncoder(resnet)
    weights = {f"module.{key}": value for key, value in source.state_dict().items()}
    weights["module.fc.weight"] = torch.zeros(10, 32)
    torch.save({"state_dict": weights}, tmp_path / "resnet.pth")

    target = ImageEncoder(resnet)
    report = target.load_pretrained(tmp_path / "resnet.pth")
    assert report.shape_mismatches == report.missing == ()
    assert report.unused == ("fc.weight",)
    torch.testing.assert_close(target.layer3[1].conv2.weight, source.layer3[1].conv2.weight)

    shallower = ImageEncoder(tiny_config(image_widths=[8, 8, 16, 32]))  # 3x3 stem, one block per layer
    report = shallower.load_pretrained(tmp_path / "resnet.pth")
    assert report.shape_mismatches == ("conv1.weight: file (8, 3, 7, 7) vs encoder (8, 3, 3, 3)",)
    assert "layer1.0.conv2.weight" in report.loaded
    assert "layer1.1.conv1.weight" in report.unused
    assert "loaded" in str(report)
    torch.save({"other": torch.zeros(3)}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match="no tensor fits"):
        shallower.load_pretrained(tmp_path / "foreign.pth")


@pytest.mark.parametrize("fusion", ["gated", "attention"])
def test_segmentation_export_is_the_dense_model_on_the_visible_pairs_only(fusion):
    """The deployed graph fuses only the points some camera sees, at those cameras, and runs each head on
    its own points: the labels and confidences of the dense model (every point at every camera)."""
    torch.manual_seed(0)
    config = tiny_config(fusion=fusion)
    model = build_model(config).eval()
    wrapper = SegmentationExport(model).eval()
    batch = make_inputs(config, [200], cameras=3)
    batch["point_visible"][:, 2] = 0  # a camera that sees nothing, and points seen by one, two or no camera
    batch["point_visible"][:20] = 0
    inputs = one_frame(batch)
    assert 0 < len(inputs["fused_index"]) < 200
    assert inputs["fused_view"].shape[1] == 2
    with torch.no_grad():
        label, confidence, logits = wrapper(*(inputs[name] for name in wrapper.input_names))
    want_label, want_confidence, probabilities = deployed(model, batch)
    torch.testing.assert_close(confidence, want_confidence, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits.softmax(1), probabilities, rtol=0, atol=1e-6)
    assert label.dtype == torch.int64
    assert torch.equal(label, want_label)


def test_old_checkpoints_model_config_loads_without_num_cameras():
    """Checkpoints made before rig-agnostic models record num_cameras; the weights never depended on it."""
    old = {**tiny_config().to_dict(), "num_cameras": 6}
    assert ModelConfig.from_dict(old) == tiny_config()
    assert "num_cameras" not in tiny_config().to_dict()


@pytest.mark.parametrize("fusion", ["gated", "attention"])
@pytest.mark.parametrize(("cameras", "rows"), [(0, 16), (1, 32), (3, 8), (8, 64)])
def test_fusion_model_takes_any_camera_count_and_range_height(fusion, cameras, rows):
    torch.manual_seed(0)
    config = tiny_config(fusion=fusion)
    model = build_model(config).eval()
    inputs = make_inputs(config, [30, 20], cameras=cameras, rows=rows)
    with torch.no_grad():
        outputs = model(inputs, embeddings=True)
    assert outputs["fused_logits"].shape == outputs["lidar_logits"].shape == (50, 5)
    assert outputs["pixel_embedding"].shape == (50, cameras, 6)
    assert all(torch.isfinite(value).all() for value in outputs.values())
    # a point no camera sees takes the fused head on f3 alone: as if there were no cameras at all
    unseen = inputs["point_visible"].sum(dim=1) == 0
    no_cameras = make_inputs(config, [30, 20], cameras=0, rows=rows)
    with torch.no_grad():
        alone = model({**inputs, **{k: no_cameras[k] for k in ("images", "point_uv", "point_visible")}})
    torch.testing.assert_close(alone["lidar_logits"], outputs["lidar_logits"])
    torch.testing.assert_close(alone["fused_logits"][unseen], outputs["fused_logits"][unseen])
    if cameras == 0:
        with torch.no_grad():
            f3 = model.range_branch(inputs["range_image"], inputs["point_features"], inputs["point_index"])
        torch.testing.assert_close(outputs["fused_logits"], model.fused_head(f3))


def test_no_image_branch_runs_without_cameras():
    model = build_model(tiny_config()).eval()
    calls = []
    model.image_branch.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        model(make_inputs(tiny_config(), [10], cameras=0))
        assert calls == []
        model(make_inputs(tiny_config(), [10], cameras=1))
        assert calls == [1]


@pytest.mark.parametrize("fusion", ["gated", "attention"])
def test_cameras_are_bound_by_position_through_one_shared_branch(fusion):
    """Reordering a frame's cameras (images, uv and visibility together) changes nothing, and a camera that
    sees none of the points adds nothing: no weight belongs to a camera slot."""
    torch.manual_seed(0)
    config = tiny_config(fusion=fusion)
    model = build_model(config).eval()
    batch = make_inputs(config, [40], cameras=3)
    inputs = one_frame(batch)
    order = [2, 0, 1]
    reordered = one_frame(
        {
            **batch,
            "images": batch["images"][order],
            "point_uv": batch["point_uv"][:, order],
            "point_visible": batch["point_visible"][:, order],
        }
    )
    extra = make_inputs(config, [40], cameras=4, seed=5)
    blind = one_frame(
        {
            **batch,
            "images": torch.cat([batch["images"], extra["images"][:1]]),
            "point_uv": torch.cat([batch["point_uv"], extra["point_uv"][:, :1]], 1),
            "point_visible": torch.cat([batch["point_visible"], torch.zeros(40, 1)], 1),
        }
    )
    wrapper = SegmentationExport(model).eval()
    with torch.no_grad():
        expected = wrapper(*(inputs[name] for name in wrapper.input_names))
        for variant in (reordered, blind):
            got = wrapper(*(variant[name] for name in wrapper.input_names))
            for want, have in zip(expected[1:], got[1:], strict=True):
                torch.testing.assert_close(have, want)


@pytest.fixture(scope="module", params=[True, False], ids=["fusion", "lidar_only"])
def exported(request, tmp_path_factory):
    """A tiny model (realistic BatchNorm statistics) and its ONNX export, traced at 2 cameras, 16 rows."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    config = tiny_config(use_images=request.param)
    model = build_model(config)
    with torch.no_grad():  # realistic BatchNorm statistics instead of the initial (0, 1)
        model.train()(make_inputs(config, [60], seed=1))
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    export_onnx(model, one_frame(make_inputs(config, [50], seed=2, cameras=2, rows=16)), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return model, session, path


def test_onnx_export_has_dynamic_points_cameras_and_rows(exported):
    onnx = pytest.importorskip("onnx")
    model, _, path = exported
    shapes = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in onnx.load(path).graph.input
    }
    expected = {
        "range_image": [6, "H", RANGE_SIZE[1]],
        "point_features": ["N", 5],
        "point_index": ["N", 2],
        "images": ["M", 3, *IMAGE_SIZE],
        "fused_index": ["S"],
        "fused_uv": ["S", "V", 2],
        "fused_view": ["S", "V"],
        "fused_visible": ["S", "V"],
        "lidar_index": ["U"],
        "output_source": ["N"],
    }
    assert shapes == {name: expected[name] for name in SegmentationExport(model).input_names}


# M = 0: ONNX Runtime runs the zero-size image batch (the fused feature is f3, the LiDAR head labels);
# the ends of what xkd-export declares (MAX_CAMERAS, RANGE_ROWS) included.
@pytest.mark.parametrize(("cameras", "rows"), [(0, 16), (1, 32), (4, 64), (8, 128), (0, 8), (8, 256)])
def test_onnx_export_matches_torch_for_any_rig(exported, cameras, rows):
    model, session, _ = exported
    wrapper = SegmentationExport(model).eval()
    assert [i.name for i in session.get_inputs()] == list(wrapper.input_names)
    assert [o.name for o in session.get_outputs()] == list(wrapper.output_names)
    for points in (37, 301):
        batch = make_inputs(model.config, [points], seed=points, cameras=cameras, rows=rows)
        inputs = one_frame(batch)
        outputs = session.run(None, {name: inputs[name].numpy() for name in wrapper.input_names})
        with torch.no_grad():
            expected = wrapper(*(inputs[name] for name in wrapper.input_names))
        assert outputs[0].shape == (points,)
        assert outputs[0].dtype == np.int64
        for name, got, want in zip(wrapper.output_names[1:], outputs[1:], expected[1:], strict=True):
            assert np.abs(got - want.numpy()).max() < 1e-3, name
        _, _, probabilities = deployed(model, batch)  # the dense model: every point at every camera
        np.testing.assert_allclose(outputs[1], probabilities.max(1).values.numpy(), rtol=0, atol=1e-5)
        top2 = probabilities.topk(2).values  # labels agree wherever the choice is not a near-tie
        clear = (top2[:, 0] - top2[:, 1] > 1e-4).numpy()
        assert np.array_equal(outputs[0][clear], probabilities.argmax(1).numpy()[clear])


def test_gather_views_is_grid_sample_with_border_padding():
    """The gathers an exported model samples with give grid_sample's values and gradients, across frames, at
    the image border and outside it (border padding), for the coordinates preprocess writes."""
    from torch.nn import functional

    from xkd_ros.model import gather_views, sample_views

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(12, 8, 17, 30, dtype=torch.float64, generator=generator)
    uv = torch.rand(1000, 6, 2, dtype=torch.float64, generator=generator) * 2.4 - 1.2
    uv[:10], uv[10:20] = 1.0, -1.0
    sizes = [400, 600]

    def reference(features, uv):
        views = []
        for frame, points in enumerate(uv.split(sizes)):
            grid = points.transpose(0, 1).unsqueeze(1)
            values = functional.grid_sample(
                features[6 * frame : 6 * frame + 6],
                grid,
                "bilinear",
                padding_mode="border",
                align_corners=False,
            )
            views.append(values.squeeze(2).permute(2, 0, 1))
        return torch.cat(views)

    mine = features.clone().requires_grad_()
    theirs = features.clone().requires_grad_()
    sampled, expected = gather_views(mine, uv, sizes), reference(theirs, uv)
    torch.testing.assert_close(sampled, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(gather_views(features[:6], uv[:400], None), expected[:400], rtol=0, atol=1e-12)
    torch.testing.assert_close(sample_views(features, uv, sizes), expected, rtol=0, atol=0)  # eager
    weights = torch.randn(sampled.shape, dtype=torch.float64, generator=generator)
    (sampled * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(mine.grad, theirs.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("best.pt", "the model would overwrite the checkpoint"),
        ("best.md", "the model cannot be a .md file"),
        (".", "is a directory; give the .onnx file to write, e.g. "),
    ],
)
def test_xkd_export_refuses_an_out_that_would_destroy_the_checkpoint(tmp_path, capsys, out, message):
    from tiny_model import tiny_checkpoint

    from xkd_ros.export import main as xkd_export

    checkpoint = tiny_checkpoint(tmp_path / "best.pt")
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    with pytest.raises(SystemExit) as exit_:
        xkd_export([str(checkpoint), "--out", str(tmp_path / out)])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before  # nothing written


def test_xkd_export_refuses_a_card_that_would_overwrite_the_checkpoint(tmp_path, capsys):
    from tiny_model import tiny_checkpoint

    from xkd_ros.export import main as xkd_export

    checkpoint = tiny_checkpoint(tmp_path / "best.md")  # an odd name, but the card of best.onnx is best.md
    with pytest.raises(SystemExit):
        xkd_export([str(checkpoint), "--out", str(tmp_path / "best.onnx")])
    assert "the model card would overwrite the checkpoint" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best.md"]


def test_xkd_export_of_a_file_that_is_no_checkpoint_is_one_line(tmp_path, capsys):
    from xkd_ros.export import main as xkd_export

    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(SystemExit) as exit_:
        xkd_export([str(tmp_path / "notes.pt"), "--out", str(tmp_path / "model.onnx")])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.startswith(
        f"xkd-export: error: {tmp_path / 'notes.pt'}: not a readable checkpoint"
    )
