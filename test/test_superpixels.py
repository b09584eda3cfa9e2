"""SLIC superpixels of the network images and the superpixel of every (point, camera) pair."""

import numpy as np
import torch

from xkd_ros.preprocess import PreprocessConfig
from xkd_ros.train.superpixels import point_superpixels, slic_superpixels

PREPROCESS = PreprocessConfig(range_width=128, image_width=96, image_height=56)


def normalised(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 -> (3, h, w) as preprocess feeds the network."""
    mean, std = np.array(PREPROCESS.mean), np.array(PREPROCESS.std)
    return ((rgb / 255.0 - mean) / std).transpose(2, 0, 1).astype(np.float32)


def test_superpixels_follow_colour_edges_and_are_counted_per_image():
    left_right = np.zeros((56, 96, 3), np.uint8)
    left_right[:, :40] = (200, 30, 30)
    left_right[:, 40:] = (30, 30, 200)
    y, x = np.mgrid[0:56, 0:96]
    gradient = np.stack([x * 2.5, y * 4, 255 - x * 2], -1).astype(np.uint8)
    ids = slic_superpixels(np.stack([normalised(left_right), normalised(gradient)]), 20, PREPROCESS)
    assert ids.shape == (2, 56, 96)
    assert ids.dtype == np.int32
    assert not set(np.unique(ids[0][:, :40])) & set(np.unique(ids[0][:, 40:]))  # none straddles the edge
    assert 10 <= len(np.unique(ids[1])) <= 30  # about the asked-for count
    assert ids.min() == 0


def test_every_visible_pair_lands_in_the_superpixel_under_its_pixel():
    superpixels = torch.arange(2 * 4 * 6).reshape(2, 4, 6)  # one id per pixel: the pixel itself
    point_uv = torch.tensor(
        [
            [[-1 + 1 / 6, -1 + 1 / 4], [0.0, 0.0]],  # camera 0, pixel (0, 0); not seen by camera 1
            [[0.99, 0.99], [-0.99, 0.99]],  # camera 0 pixel (3, 5) and camera 1 pixel (3, 0)
            [[0.0, 0.0], [0.0, 0.0]],  # seen by none
        ]
    )
    visible = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    points, rows, ids = point_superpixels(superpixels, point_uv, visible, torch.zeros(3, dtype=torch.long))
    assert points.tolist() == [0, 1, 1]  # the point seen twice is in a superpixel of each camera
    assert rows.tolist() == [0, 0, 1]
    assert ids.tolist() == [0, 3 * 6 + 5, 24 + 3 * 6]
    # with two frames of one camera each, the second frame's points read the second map
    points, rows, ids = point_superpixels(
        superpixels, point_uv[:2, :1], visible[:2, :1], torch.tensor([0, 1])
    )
    assert rows.tolist() == [0, 1]
    assert ids.tolist() == [0, 24 + 3 * 6 + 5]
