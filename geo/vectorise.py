"""Instance masks to polygons.

Each instance is polygonised from its own crop (rasterio.features.shapes), never from a whole
tile, so the work grows with the number and size of buildings only.
"""

from __future__ import annotations

import numpy as np
import shapely
from rasterio.features import shapes
from rasterio.transform import Affine


def mask_to_polygon(mask: np.ndarray, row: int = 0, col: int = 0) -> shapely.Geometry:
    """The outline of a boolean mask crop, in the pixel coordinates of the chip it came from.

    Holes are kept. A mask in several pieces gives a MultiPolygon of its pieces.

    Args:
        mask: Boolean (rows, cols) crop.
        row: Chip row of the crop's top-left pixel.
        col: Chip column of the crop's top-left pixel.

    Returns:
        A Polygon or MultiPolygon (empty when the mask is empty).
    """
    data = np.ascontiguousarray(mask, dtype=np.uint8)
    pieces = [
        shapely.geometry.shape(geom)
        for geom, value in shapes(data, mask=data.astype(bool), transform=Affine.translation(col, row))
        if value == 1
    ]
    if not pieces:
        return shapely.Polygon()
    return pieces[0] if len(pieces) == 1 else shapely.MultiPolygon(pieces)


def masks_to_polygons(instances: list, simplify_px: float = 0.0) -> np.ndarray:
    """Polygons of many instances (anything with mask, row and col attributes).

    Args:
        instances: The instances of one chip.
        simplify_px: Douglas-Peucker tolerance in pixels; 0 keeps the pixel staircase.

    Returns:
        Array of polygons, one per instance, in chip pixel coordinates.
    """
    polygons = np.array([mask_to_polygon(i.mask, i.row, i.col) for i in instances], dtype=object)
    if simplify_px > 0 and len(polygons):
        polygons = shapely.make_valid(shapely.simplify(polygons, simplify_px, preserve_topology=True))
    return polygons
