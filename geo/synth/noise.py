"""Value noise that is a pure function of a key and global coordinates.

Any window of the scene regenerates exactly the values its neighbours use, which is what makes
textures continuous across tile seams and lets the layout sample its zoning fields anywhere.
"""

from __future__ import annotations

import numpy as np


def _hash_unit(key: np.uint64, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Uniform values in [0, 1) that depend only on ``key`` and the integer lattice point."""
    z = (iy.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (
        ix.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    )
    z ^= key
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _interpolation(coords: np.ndarray, cell: float) -> tuple[np.ndarray, int]:
    """Matrix that interpolates a lattice of spacing ``cell`` at ``coords``, and its first index."""
    g = coords / cell
    i0 = np.floor(g).astype(np.int64)
    f = g - i0
    f = f * f * (3.0 - 2.0 * f)  # smoothstep hides the lattice's grid lines
    lo = int(i0.min())
    weights = np.zeros((coords.size, int(i0.max()) - lo + 2), dtype=np.float32)
    rows = np.arange(coords.size)
    weights[rows, i0 - lo] = 1.0 - f
    weights[rows, i0 - lo + 1] = f
    return weights, lo


def value_noise(key: np.uint64, ys: np.ndarray, xs: np.ndarray, cell: float) -> np.ndarray:
    """Value noise in [0, 1) with lattice spacing ``cell`` on the grid ``ys`` x ``xs``."""
    wy, y0 = _interpolation(ys, cell)
    wx, x0 = _interpolation(xs, cell)
    lattice = _hash_unit(
        key,
        np.arange(y0, y0 + wy.shape[1])[:, None],
        np.arange(x0, x0 + wx.shape[1])[None, :],
    ).astype(np.float32)
    return wy @ lattice @ wx.T
