"""A brightness-threshold baseline: the floor any learned model has to clear.

Buildings are taken to be the connected regions brighter than an Otsu threshold of the image's mean
brightness. On real imagery (and on the synthetic scenes, by design) roofs are as often darker
than the ground as brighter, roads are as bright as concrete, and touching buildings merge: this
scores poorly, which is the point of having it.
"""

from __future__ import annotations

import numpy as np
import shapely

from .raster import normalise
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


def threshold_buildings(image: np.ndarray, min_pixels: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Bright connected regions of a tile as building proposals.

    Args:
        image: (bands, rows, cols) pixels of any dtype.
        min_pixels: Regions smaller than this are dropped.

    Returns:
        (polygons in pixel coordinates, scores): the score is the region's mean brightness.
    """
    brightness = normalise(image).mean(axis=0)
    bright = brightness > otsu_threshold(brightness)
    polygons = shapely.get_parts(mask_to_polygon(bright))
    polygons = polygons[shapely.area(polygons) >= min_pixels]
    if polygons.size == 0:
        return polygons, np.empty(0)
    ids = instance_mask(polygons, brightness.shape)
    sums = np.bincount(ids.ravel(), weights=brightness.ravel(), minlength=len(polygons) + 1)
    counts = np.bincount(ids.ravel(), minlength=len(polygons) + 1)
    return polygons, sums[1:] / np.maximum(counts[1:], 1)
