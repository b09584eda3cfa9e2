"""SLIC superpixels of the network-size camera images, for SLidR's superpixel-pooled contrastive pairs.

Pixel-level pairs make every other pixel a negative, also those of the same object; pooling point and pixel
embeddings over a superpixel (a patch of one colour, mostly one object) first makes the pairs object-level,
as SLidR (Sautier et al. 2022) does. SLidR's compactness (6), on the image the network sees
(normalisation undone), once per frame: the ids are cached with the pre-processed frame. The smoothing is
SLidR's sigma 3 scaled from its full-size images to the network's ~240 columns (0.5): at 3 a strip along
every colour edge blurs into one superpixel that straddles both objects.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from xkd_ros.preprocess import PreprocessConfig

COMPACTNESS = 6.0
SIGMA = 0.5


def slic_superpixels(images: np.ndarray, segments: int, preprocess: PreprocessConfig) -> np.ndarray:
    """(M, h, w) int32 SLIC ids (0..) of the M ImageNet-normalised network images (M, 3, h, w)."""
    from skimage.segmentation import slic

    mean = np.asarray(preprocess.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(preprocess.std, dtype=np.float32)[:, None, None]
    ids = np.zeros((len(images), *images.shape[2:]), dtype=np.int32)
    for camera, image in enumerate(images):
        rgb = np.clip(image * std + mean, 0, 1).transpose(1, 2, 0)
        ids[camera] = slic(
            rgb, n_segments=segments, compactness=COMPACTNESS, sigma=SIGMA, start_label=0, channel_axis=-1
        )
    return ids


def point_superpixels(
    superpixels: Tensor, point_uv: Tensor, point_visible: Tensor, point_frame: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The superpixel of every (point, camera) pair a camera sees.

    superpixels (F*M, h, w) ids, point_uv (N, M, 2) grid_sample coordinates, point_visible (N, M),
    point_frame (N,) the frame of each point. Returns point_ids, image_rows (frame * M + camera) and the
    superpixel ids of the visible pairs: a point seen by two cameras is in a superpixel of each.
    """
    point_ids, views = torch.nonzero(point_visible > 0, as_tuple=True)
    rows = point_frame[point_ids] * point_uv.shape[1] + views
    height, width = superpixels.shape[1:]
    uv = point_uv[point_ids, views]
    col = ((uv[:, 0] + 1) / 2 * width).floor().long().clamp(0, width - 1)
    row = ((uv[:, 1] + 1) / 2 * height).floor().long().clamp(0, height - 1)
    return point_ids, rows, superpixels[rows, row, col].long()
