"""The training losses against closed forms, brute-force references and their defining properties."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest

torch = pytest.importorskip("torch")

from xkd_ros.train.losses import (  # noqa: E402  (after the skip: torch is the optional `train` extra)
    distillation_loss,
    info_nce,
    lovasz_softmax,
    segmentation_loss,
    superpixel_info_nce,
)


def lovasz_reference(probabilities: list[list[float]], labels: list[int]) -> float:
    """The Lovasz extension by its integral definition, from sets: for each class present, the integral over
    t of Delta({i : error_i >= t}) with Delta(S) = |S| / |foreground u S| (the Jaccard loss of mistakes S)."""
    classes = sorted(set(labels))
    values = []
    for c in classes:
        foreground = {i for i, label in enumerate(labels) if label == c}
        errors = [abs((i in foreground) - row[c]) for i, row in enumerate(probabilities)]
        levels = sorted(set(errors) | {0.0}, reverse=True)
        total = 0.0
        for upper, lower in pairwise(levels):
            mistakes = {i for i, error in enumerate(errors) if error >= upper}
            total += (upper - lower) * len(mistakes) / len(foreground | mistakes)
        values.append(total)
    return sum(values) / len(values)


# ---- Lovasz-softmax ---------------------------------------------------------------------------------------
def test_lovasz_hand_computed_case():
    # class 0: errors (0.2, 0.4), Delta({1}) = 1/2, Delta({0, 1}) = 1 -> 0.4 * 0.5 + 0.2 * 0.5 = 0.3
    # class 1: errors (0.2, 0.4), Delta({1}) = 1,   Delta({0, 1}) = 1 -> 0.4 * 1.0 + 0.2 * 0.0 = 0.4
    probabilities = torch.tensor([[0.8, 0.2], [0.4, 0.6]])
    loss = lovasz_softmax(probabilities, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(0.35, abs=1e-6)


def test_lovasz_is_zero_for_a_perfect_prediction():
    labels = torch.tensor([0, 2, 2, 1, 0])
    assert lovasz_softmax(torch.eye(3)[labels], labels).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("seed", range(5))
def test_lovasz_matches_the_brute_force_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    probabilities = torch.softmax(torch.randn(7, 4, generator=generator) * 2, dim=1)
    labels = torch.randint(0, 3, (7,), generator=generator)  # class 3 never present: left out of the mean
    expected = lovasz_reference(probabilities.tolist(), labels.tolist())
    assert lovasz_softmax(probabilities, labels).item() == pytest.approx(expected, abs=1e-6)


def test_lovasz_ignores_ignore_index_and_has_a_gradient():
    probabilities = torch.softmax(torch.randn(6, 3), dim=1).requires_grad_()
    labels = torch.tensor([0, 1, 2, 255, 1, 255])
    loss = lovasz_softmax(probabilities, labels)
    keep = labels != 255
    torch.testing.assert_close(loss, lovasz_softmax(probabilities[keep], labels[keep]))
    loss.backward()
    assert torch.all(probabilities.grad[~keep] == 0)
    assert probabilities.grad[keep].abs().sum() > 0


# ---- segmentation loss ------------------------------------------------------------------------------------
def test_cross_entropy_part_ignores_255_and_applies_class_weights():
    logits = torch.randn(8, 3)
    labels = torch.tensor([0, 1, 2, 255, 1, 0, 255, 2])
    weights = torch.tensor([1.0, 2.0, 0.5])
    keep = labels != 255
    loss = segmentation_loss(logits, labels, weights, lovasz_weight=0.0)
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep], weight=weights)
    torch.testing.assert_close(loss, expected)
    changed = logits.clone()
    changed[~keep] = 100.0
    torch.testing.assert_close(
        segmentation_loss(changed, labels, weights), segmentation_loss(logits, labels, weights)
    )


def test_segmentation_loss_adds_lovasz_and_survives_an_unlabelled_batch():
    logits = torch.randn(5, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 1, 0])
    cross_entropy = segmentation_loss(logits, labels, lovasz_weight=0.0)
    lovasz = lovasz_softmax(torch.softmax(logits, dim=1), labels)
    torch.testing.assert_close(segmentation_loss(logits, labels, None, 0.5), cross_entropy + 0.5 * lovasz)
    empty = segmentation_loss(logits, torch.full((5,), 255))
    assert empty.item() == 0.0
    empty.backward()
    assert torch.all(logits.grad == 0)


# ---- cross-modal InfoNCE ----------------------------------------------------------------------------------
def embeddings(points: int = 48, cameras: int = 3, dim: int = 16, seed: int = 0):
    """Point embeddings, pixel embeddings that match them in every view (plus noise), random visibility."""
    generator = torch.Generator().manual_seed(seed)
    point = torch.randn(points, dim, generator=generator)
    pixel = point[:, None, :] + 0.2 * torch.randn(points, cameras, dim, generator=generator)
    visible = (torch.rand(points, cameras, generator=generator) < 0.5).float()
    return point, pixel, visible


def test_info_nce_is_lower_for_aligned_than_for_shuffled_embeddings():
    point, pixel, visible = embeddings()
    aligned = info_nce(point, pixel, visible, temperature=0.1)
    shuffled = info_nce(
        point, pixel[torch.randperm(len(pixel), generator=torch.Generator().manual_seed(1))], visible
    )
    assert aligned < shuffled
    assert aligned < math.log(visible.sum().item()) < shuffled  # log(pairs): the loss of a blind guess


def test_info_nce_ignores_invisible_pairs():
    point, pixel, visible = embeddings()
    changed = pixel.clone()
    changed[visible == 0] = torch.randn(int((visible == 0).sum()), pixel.shape[2])
    torch.testing.assert_close(info_nce(point, changed, visible), info_nce(point, pixel, visible))


def test_info_nce_does_not_use_a_points_other_views_as_negatives():
    # two orthogonal points, each seen by both cameras with its exact embedding: nothing left to learn
    point = torch.eye(2, 4)
    pixel = point[:, None, :].expand(2, 2, 4)
    loss = info_nce(point, pixel, torch.ones(2, 2), temperature=0.05)
    assert loss.item() < 1e-6


def test_info_nce_gradient_reaches_both_modalities_and_pairs_are_capped():
    point, pixel, visible = embeddings()
    point.requires_grad_()
    pixel.requires_grad_()
    loss = info_nce(point, pixel, visible, max_pairs=16, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert (point.grad.abs().sum(dim=1) > 0).sum() <= 16
    assert (pixel.grad.abs().sum(dim=2) > 0).sum() == 16
    assert torch.all(pixel.grad[visible == 0] == 0)
    again = info_nce(point, pixel, visible, max_pairs=16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, loss)


def test_info_nce_is_zero_with_a_gradient_when_nothing_is_visible():
    point, pixel, _ = embeddings()
    point.requires_grad_()
    loss = info_nce(point, pixel, torch.zeros(pixel.shape[:2]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(point.grad == 0)


def test_info_nce_on_a_batch_without_cameras():
    """A LiDAR-only rig's batch (M = 0) has no pairs: zero, and backward still runs."""
    point = torch.randn(7, 8, requires_grad=True)
    loss = info_nce(point, torch.zeros(7, 0, 8), torch.zeros(7, 0))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(point.grad == 0)


# ---- distillation -----------------------------------------------------------------------------------------
def test_distillation_is_zero_for_equal_logits_and_positive_otherwise():
    teacher = torch.randn(10, 4)
    assert distillation_loss(teacher.clone(), teacher, temperature=2.0).item() == pytest.approx(0, abs=1e-6)
    student = torch.randn(10, 4, requires_grad=True)
    loss = distillation_loss(student, teacher, temperature=2.0)
    p_teacher = torch.softmax(teacher / 2, dim=1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student / 2, dim=1))).sum(dim=1).mean()
    torch.testing.assert_close(loss, kl * 4)
    assert loss > 0


def test_distillation_detaches_the_teacher_and_respects_the_mask():
    student = torch.randn(6, 3, requires_grad=True)
    teacher = torch.randn(6, 3, requires_grad=True)
    mask = torch.tensor([True, False, True, True, False, False])
    loss = distillation_loss(student, teacher, 1.0, mask)
    torch.testing.assert_close(loss, distillation_loss(student[mask], teacher[mask], 1.0))
    loss.backward()
    assert teacher.grad is None
    assert torch.all(student.grad[~mask] == 0)
    empty = distillation_loss(student, teacher, 1.0, torch.zeros(6, dtype=torch.bool))
    assert empty.item() == 0.0


# ---- superpixel InfoNCE (SLidR) ---------------------------------------------------------------------------
def quadrant_case(match: bool):
    """One frame, two cameras, 8x8 superpixel maps of 4 quadrants (ids 0..3) and a 4x4 embedding map whose
    quadrants carry 4 orthogonal directions; 3 points in each quadrant of camera 0, and a point of quadrant
    1 also seen by camera 1. `match`: a point's embedding is its quadrant's direction, else the next one's."""
    directions = torch.eye(4)
    quadrant = torch.tensor([[0, 1], [2, 3]]).repeat_interleave(4, 0).repeat_interleave(4, 1)
    superpixels = torch.stack([quadrant, quadrant])
    image_embedding = directions[quadrant[::2, ::2]].permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
    centres = {0: (-0.5, -0.5), 1: (0.5, -0.5), 2: (-0.5, 0.5), 3: (0.5, 0.5)}
    uv, owners = [], []
    for q, (u, v) in centres.items():
        for offset in (-0.1, 0.0, 0.1):
            uv.append([[u + offset, v], [0.0, 0.0]])
            owners.append(q)
    uv.append([[0.0, 0.0], [0.5, -0.5]])  # seen by camera 1 only, in its quadrant 1
    owners.append(1)
    point_uv = torch.tensor(uv)
    visible = torch.zeros(len(uv), 2)
    visible[:-1, 0] = 1
    visible[-1, 1] = 1
    owners = torch.tensor(owners)
    points = directions[owners if match else (owners + 1) % 4]
    return points, image_embedding, superpixels, point_uv, visible, torch.zeros(len(uv), dtype=torch.long)


def test_superpixel_info_nce_prefers_matching_pools():
    matched = superpixel_info_nce(*quadrant_case(True), temperature=0.1)
    shuffled = superpixel_info_nce(*quadrant_case(False), temperature=0.1)
    # each pool finds its pair, but the two quadrant-1 superpixels (one per camera, the same direction)
    # are each other's equally good negatives (SLidR's known same-class failure): log 2 for 2 of 5 rows
    assert matched.item() == pytest.approx(2 * math.log(2) / 5, abs=1e-3)
    assert shuffled > 2.0
    # 4 superpixels of camera 0 + 1 of camera 1, each its pooled pair: log(5) at zero similarity everywhere
    points, image, *rest = quadrant_case(True)
    flat = superpixel_info_nce(points * 0 + 1, image * 0 + 1, *rest, temperature=1.0)
    assert flat.item() == pytest.approx(math.log(5), abs=1e-5)


def test_superpixel_info_nce_pools_before_comparing():
    """Points of one superpixel pointing different ways pool to their mean: the loss sees only the mean."""
    points, image, superpixels, uv, visible, frame = quadrant_case(True)
    spread = points.clone()
    spread[0:3] = torch.tensor([[1.0, 0.5, 0, 0], [1.0, -0.5, 0, 0], [1.0, 0, 0, 0]])  # mean: direction 0
    spread[0:3] = torch.nn.functional.normalize(spread[0:3], dim=1) * torch.tensor([[1.0], [1.0], [1.0]])
    pooled = points.clone()
    pooled[0:3] = spread[0:3].mean(0)
    a = superpixel_info_nce(spread, image, superpixels, uv, visible, frame, temperature=0.1)
    b = superpixel_info_nce(pooled, image, superpixels, uv, visible, frame, temperature=0.1)
    assert a.item() == pytest.approx(b.item(), abs=1e-6)


def test_superpixel_info_nce_without_visible_points_is_a_connected_zero():
    points, image, superpixels, uv, visible, frame = quadrant_case(True)
    points.requires_grad_(True)
    loss = superpixel_info_nce(points, image, superpixels, uv, visible * 0, frame)
    loss.backward()
    assert loss.item() == 0
    assert points.grad is not None
