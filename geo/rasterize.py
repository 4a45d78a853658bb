"""Polygons to instance-id masks."""

from __future__ import annotations

import numpy as np
import shapely
from rasterio.features import rasterize


def instance_mask(pixel_polygons: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Burn polygons in pixel coordinates into a mask where building i has value i + 1.

    Larger buildings are burnt first, so where labels overlap the smaller building stays visible
    rather than vanishing under its neighbour.

    Args:
        pixel_polygons: Array of polygons in pixel coordinates (x right, y down); empty ones are skipped.
        shape: (rows, cols) of the mask.

    Returns:
        int32 array, 0 for background.
    """
    polygons = np.asarray(pixel_polygons, dtype=object)
    mask = np.zeros(shape, dtype=np.int32)
    if polygons.size == 0:
        return mask
    order = np.argsort(-shapely.area(polygons), kind="stable")
    shapes = [(polygons[i], int(i) + 1) for i in order if not shapely.is_empty(polygons[i])]
    if shapes:
        rasterize(shapes, out=mask, dtype=np.int32)
    return mask
