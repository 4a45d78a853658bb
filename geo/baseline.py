"""A brightness-threshold baseline: the floor any learned model has to clear.

Buildings are taken to be the connected regions brighter than an Otsu threshold of the image's mean
brightness. On real imagery (and on the synthetic scenes, by design) roofs are as often darker
than the ground as brighter, roads are as bright as concrete, and touching buildings merge: this
scores poorly, which is the point of having it. It runs as a method like any other
(models/threshold.py), through the same chipping and dedup.
"""

from __future__ import annotations

import numpy as np
import shapely

from .rasterize import instance_mask
from .vectorise import mask_to_polygon


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that maximises the between-class variance of ``values`` in [0, 1]."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    weights = hist.astype(float) / max(hist.sum(), 1)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(weights)
    mu = np.cumsum(weights * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * w0 - mu) ** 2 / (w0 * (1 - w0))
    return float(centres[np.nanargmax(between)])


def bright_regions(
    brightness: np.ndarray, threshold: float | None = None, min_pixels: int = 20
) -> tuple[np.ndarray, dict[int, float]]:
    """The connected regions brighter than a threshold, as a label map.

    Args:
        brightness: (rows, cols) values in [0, 1].
        threshold: Pixels above it are bright; None takes the Otsu threshold of ``brightness``.
        min_pixels: Regions smaller than this are dropped.

    Returns:
        (label map with region i as i + 1 and 0 elsewhere, each label's mean brightness).
    """
    level = otsu_threshold(brightness) if threshold is None else threshold
    regions = shapely.get_parts(mask_to_polygon(brightness > level))
    regions = regions[shapely.area(regions) >= min_pixels]
    labels = instance_mask(regions, brightness.shape)
    sums = np.bincount(labels.ravel(), weights=brightness.ravel(), minlength=len(regions) + 1)
    counts = np.bincount(labels.ravel(), minlength=len(regions) + 1)
    means = sums[1:] / np.maximum(counts[1:], 1)
    return labels, {i + 1: float(m) for i, m in enumerate(means)}
