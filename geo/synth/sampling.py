"""Random draws the layout makes thousands of times: weighted choices and colours."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .palette import TREE_GREENS, Colour, Palette


def weighted(rng: np.random.Generator, weights: Sequence[float]) -> int:
    """An index drawn with probability proportional to ``weights``."""
    # Generator.choice with p= costs tens of microseconds, and layout draws thousands.
    x = rng.random() * sum(weights)
    for i, w in enumerate(weights):
        x -= w
        if x < 0.0:
            return i
    return len(weights) - 1


def pick(palette: Palette, rng: np.random.Generator) -> Colour:
    """A colour of ``palette``, drawn by the entries' weights."""
    return palette[weighted(rng, [entry.weight for entry in palette])].colour


def jitter(colour: Colour, rng: np.random.Generator, amount: float) -> Colour:
    """``colour`` scaled by up to ``amount`` either way and tinted slightly, for variety."""
    scale = rng.uniform(1.0 - amount, 1.0 + amount)
    c = np.clip(np.array(colour) * scale + rng.uniform(-0.02, 0.02, 3), 0.03, 1.0)
    return (float(c[0]), float(c[1]), float(c[2]))


def tree_colour(rng: np.random.Generator) -> Colour:
    """One of the tree greens."""
    return TREE_GREENS[int(rng.integers(len(TREE_GREENS)))]
