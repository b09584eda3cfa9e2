"""The training objectives: cross-modal InfoNCE, pixel- or superpixel-level (pretraining), cross-entropy +
Lovasz-softmax (few-label fine-tuning) and the distillation KL (fused -> LiDAR head, 2-D teacher -> 3-D).
Each returns a scalar that is zero, with a gradient path, when there is nothing to learn from, so a step on
an empty batch still runs."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional


def _zero(*tensors: Tensor) -> Tensor:
    """A zero connected to every input's graph: backward() works and DDP sees all parameters used."""
    return sum(tensor.sum() for tensor in tensors) * 0.0


def info_nce(
    point_embedding: Tensor,
    pixel_embedding: Tensor,
    point_visible: Tensor,
    temperature: float = 0.07,
    max_pairs: int = 4096,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Symmetric point-pixel InfoNCE over the visible (point, view) pairs (SLidR / ScaLR).

    point_embedding (N, E), pixel_embedding (N, M, E), point_visible (N, M). Every (point, view) pair a
    camera sees is one sample: its positive is the same point's feature in that view, its negatives the
    other sampled points' features. A point seen by two cameras appears in two pairs; those pairs are
    removed from each other's negatives (they are the same point, not a wrong match). At most `max_pairs`
    pairs are drawn at random, as the similarity matrix is max_pairs^2. Embeddings are L2-normalised here
    (again), so raw features work too.
    """
    point_ids, view_ids = torch.nonzero(point_visible > 0, as_tuple=True)
    if point_ids.numel() == 0:
        return _zero(point_embedding, pixel_embedding)
    if point_ids.numel() > max_pairs:
        keep = torch.randperm(point_ids.numel(), generator=generator, device=point_ids.device)[:max_pairs]
        point_ids, view_ids = point_ids[keep], view_ids[keep]
    points = functional.normalize(point_embedding[point_ids], dim=1)
    pixels = functional.normalize(pixel_embedding[point_ids, view_ids], dim=1)
    logits = points @ pixels.T / temperature
    same_point = point_ids[:, None] == point_ids[None, :]
    same_point.fill_diagonal_(False)
    logits = logits.masked_fill(same_point, float("-inf"))
    targets = torch.arange(point_ids.numel(), device=logits.device)
    return (functional.cross_entropy(logits, targets) + functional.cross_entropy(logits.T, targets)) / 2


def lovasz_softmax(probabilities: Tensor, labels: Tensor, ignore_index: int = 255) -> Tensor:
    """Lovasz-softmax loss (Berman et al. 2018), averaged over the classes present in `labels`.

    probabilities (N, K) softmax outputs, labels (N,). For each class the per-point errors |fg - p| are
    sorted in decreasing order and dotted with the gradient of the Jaccard loss along that order: the
    Lovasz extension of 1 - IoU, a tight convex surrogate of the per-class IoU the benchmarks report.
    All classes are done at once (one sort of the (N, K) error matrix).
    """
    valid = labels != ignore_index
    probabilities, labels = probabilities[valid], labels[valid]
    if labels.numel() == 0:
        return _zero(probabilities)
    foreground = functional.one_hot(labels, probabilities.shape[1]).to(probabilities.dtype)
    errors, order = torch.sort((foreground - probabilities).abs(), dim=0, descending=True)
    foreground_sorted = torch.gather(foreground, 0, order)
    total = foreground_sorted.sum(dim=0)
    intersection = total - foreground_sorted.cumsum(dim=0)
    union = total + (1.0 - foreground_sorted).cumsum(dim=0)
    jaccard = 1.0 - intersection / union
    gradient = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], dim=0)
    per_class = (errors * gradient).sum(dim=0)
    present = total > 0
    return per_class[present].mean()


def segmentation_loss(
    logits: Tensor,
    labels: Tensor,
    class_weights: Tensor | None = None,
    lovasz_weight: float = 1.0,
    ignore_index: int = 255,
) -> Tensor:
    """Weighted cross-entropy + lovasz_weight * Lovasz-softmax, both ignoring `ignore_index` points.

    Cross-entropy learns every point; Lovasz optimises IoU directly, which the rare classes of a few-label
    set need (the 2DPASS / FRNet recipe).
    """
    valid = labels != ignore_index
    if not bool(valid.any()):
        return _zero(logits)
    cross_entropy = functional.cross_entropy(logits, labels, weight=class_weights, ignore_index=ignore_index)
    if lovasz_weight == 0:
        return cross_entropy
    return cross_entropy + lovasz_weight * lovasz_softmax(torch.softmax(logits, dim=1), labels, ignore_index)


def distillation_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0, mask: Tensor | None = None
) -> Tensor:
    """KL(teacher || student) of the temperature-softened distributions, times T^2 (Hinton et al.: keeps
    the gradient scale independent of T), averaged over the points (only those in `mask` if given).

    The teacher is detached: distillation moves the LiDAR-only student towards the fused head, never back.
    """
    if mask is not None:
        student_logits, teacher_logits = student_logits[mask], teacher_logits[mask]
    if student_logits.shape[0] == 0:
        return _zero(student_logits)
    teacher = functional.log_softmax(teacher_logits.detach() / temperature, dim=1)
    student = functional.log_softmax(student_logits / temperature, dim=1)
    kl = functional.kl_div(student, teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def superpixel_info_nce(
    point_embedding: Tensor,
    image_embedding: Tensor,
    superpixels: Tensor,
    point_uv: Tensor,
    point_visible: Tensor,
    point_frame: Tensor,
    temperature: float = 0.07,
    max_superpixels: int = 4096,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SLidR's superpixel-driven InfoNCE: symmetric, between superpixel-pooled point and pixel embeddings.

    point_embedding (N, E); image_embedding (F*M, E, h', w') the pixel projection of every image's feature
    map; superpixels (F*M, h, w) ids at the network image size (resized to h' x w' by nearest here);
    point_uv (N, M, 2), point_visible (N, M), point_frame (N,) as in the batch. A superpixel's point
    embedding is the mean over the (point, camera) pairs that fall in it - a point seen by two cameras counts
    in a superpixel of each -, its pixel embedding the mean over its pixels; superpixels without a point
    take no part, the other superpixels of the batch are the negatives. At most `max_superpixels` are drawn.
    """
    from xkd_ros.train.superpixels import point_superpixels

    point_ids, rows, local = point_superpixels(superpixels, point_uv, point_visible, point_frame)
    if point_ids.numel() == 0:
        return _zero(point_embedding, image_embedding)
    count = int(superpixels.max()) + 1  # ids per image: (image row, id) -> row * count + id
    chosen, pair_group = torch.unique(rows * count + local, return_inverse=True)
    groups, dim = chosen.numel(), point_embedding.shape[1]
    points = point_embedding.new_zeros(groups, dim).index_add(0, pair_group, point_embedding[point_ids])
    points = points / torch.bincount(pair_group, minlength=groups).clamp_min(1)[:, None]
    images, _, height, width = image_embedding.shape
    ids = functional.interpolate(superpixels[:, None].float(), size=(height, width), mode="nearest")
    pixel_key = (torch.arange(images, device=ids.device)[:, None, None] * count + ids[:, 0].long()).flatten()
    pixel_group = torch.searchsorted(chosen, pixel_key).clamp_max(groups - 1)
    used = chosen[pixel_group] == pixel_key
    flat = image_embedding.permute(0, 2, 3, 1).reshape(-1, dim)[used]
    pixel_group = pixel_group[used]
    pixels = image_embedding.new_zeros(groups, dim).index_add(0, pixel_group, flat)
    pixel_count = torch.bincount(pixel_group, minlength=groups)
    keep = torch.nonzero(pixel_count > 0).flatten()  # a superpixel too small for the feature map drops out
    if keep.numel() > max_superpixels:
        keep = keep[torch.randperm(keep.numel(), generator=generator, device=keep.device)[:max_superpixels]]
    if keep.numel() == 0:
        return _zero(point_embedding, image_embedding)
    points = functional.normalize(points[keep], dim=1)
    pixels = functional.normalize(pixels[keep] / pixel_count[keep, None], dim=1)
    logits = points @ pixels.T / temperature
    targets = torch.arange(keep.numel(), device=logits.device)
    return (functional.cross_entropy(logits, targets) + functional.cross_entropy(logits.T, targets)) / 2
