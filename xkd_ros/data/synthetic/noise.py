"""Deterministic value noise from integer hashing: textures and terrain that depend only on world coordinates.

Hash-based rather than a random table so that the same point in the world has the same look from every
camera, every frame and every worker, with no state to share.
"""

from __future__ import annotations

import numpy as np

# Odd 32-bit constants (from xxHash / MurmurHash3) that spread neighbouring lattice coordinates apart.
PRIMES = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D)


def mix32(h: np.ndarray) -> np.ndarray:
    """Avalanche a uint32 array in place (the "lowbias32" finaliser): nearby inputs, unrelated outputs."""
    h ^= h >> 16
    h *= np.uint32(0x7FEB352D)
    h ^= h >> 15
    h *= np.uint32(0x846CA68B)
    h ^= h >> 16
    return h


def axis_hash(cells: np.ndarray, axis: int, seed: int) -> np.ndarray:
    """Hash of integer coordinates along one axis; axes are combined by xor and mixed again."""
    h = cells.astype(np.int32).view(np.uint32) * np.uint32(PRIMES[axis])
    h += np.uint32((seed * 0x27D4EB2F + axis * 0x165667B1) & 0xFFFFFFFF)
    return mix32(h)


def to_unit(h: np.ndarray) -> np.ndarray:
    return (h >> 8).astype(np.float32) * np.float32(1.0 / (1 << 24))


def hash01(cells: np.ndarray, seed: int) -> np.ndarray:
    """A uniform float32 in [0, 1) per row of integer lattice coordinates (n, d), d <= 3."""
    cells = np.asarray(cells)
    h = np.zeros(len(cells), dtype=np.uint32)
    for axis in range(cells.shape[1]):
        h ^= axis_hash(cells[:, axis], axis, seed)
    return to_unit(mix32(h))


def value_noise(coords: np.ndarray, seed: int) -> np.ndarray:
    """Smooth noise in [0, 1) at points (n, d), d <= 3: hashed lattice values, smoothstep-interpolated."""
    coords = np.asarray(coords, dtype=np.float32)
    base = np.floor(coords)
    frac = coords - base
    weight = frac * frac * (3 - 2 * frac)
    base = base.astype(np.int32)
    dims = coords.shape[1]
    # Per axis the hashes of the lower and upper lattice line; each corner xors one of each.
    lines = [(axis_hash(base[:, a], a, seed), axis_hash(base[:, a] + 1, a, seed)) for a in range(dims)]
    corners = []
    for corner in range(1 << dims):
        h = lines[0][corner & 1].copy()
        for axis in range(1, dims):
            h ^= lines[axis][(corner >> axis) & 1]
        corners.append(to_unit(mix32(h)))
    for axis in range(dims):  # interpolate pairs of corners along x, then y, then z
        w = weight[:, axis]
        corners = [low + w * (high - low) for low, high in zip(corners[0::2], corners[1::2], strict=True)]
    return corners[0]
