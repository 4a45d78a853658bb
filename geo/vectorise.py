"""Instance masks to polygons.

Each instance is polygonised from its own crop (rasterio.features.shapes), never from a whole
tile, so the work grows with the number and size of buildings only.
"""

from __future__ import annotations

import warnings
from typing import cast

import numpy as np
import shapely
from pyproj import CRS, Transformer
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import shapes
from rasterio.transform import Affine

from .labels import apply_affine
from .regularise import regularise

# Masks are traced in pixel coordinates on purpose, and rasterio warns whenever that transform is
# the identity (a crop at the chip's origin). Set once here rather than around each call, as
# worker threads trace concurrently and catch_warnings is not thread-safe.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module="rasterio.features")


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
    # rasterio's shapes gives GeoJSON polygons, so each piece is a Polygon.
    pieces = [
        cast(shapely.Polygon, shapely.geometry.shape(geom))
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


def to_metric(pixel_polygons: np.ndarray, transform: Affine, crs: CRS, metric: CRS) -> np.ndarray:
    """Pixel polygons placed on the map by ``transform`` (into ``crs``), then into ``metric``."""
    on_map = apply_affine(pixel_polygons, transform)
    if CRS.from_user_input(crs) == CRS.from_user_input(metric):
        return on_map
    transformer = Transformer.from_crs(crs, metric, always_xy=True)
    return shapely.transform(on_map, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


def tidy_outlines(
    polygons: np.ndarray, *, min_area_m2: float, simplify_m: float, regularise_outlines: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Outlines in a metric CRS made fit to publish: one valid polygon each, holes kept.

    Simplified with a tolerance in metres, optionally squared (see regularise), reduced to their
    largest part, and dropped when smaller than ``min_area_m2`` (slivers).

    Returns:
        The kept polygons and their indexes in ``polygons``.
    """
    if len(polygons) == 0:
        return polygons, np.empty(0, dtype=int)
    out = shapely.simplify(polygons, simplify_m, preserve_topology=True) if simplify_m > 0 else polygons
    if regularise_outlines:
        out = regularise(out)
    out = np.array([largest_polygon(g) for g in shapely.make_valid(out)], dtype=object)
    keep = np.flatnonzero(shapely.area(out) >= max(min_area_m2, 1e-9))
    return out[keep], keep


def largest_polygon(geometry: shapely.Geometry) -> shapely.Geometry:
    """The largest polygon of any geometry (an empty polygon when it has none)."""
    parts = [p for p in shapely.get_parts(geometry) if isinstance(p, shapely.Polygon) and p.area > 0]
    if not parts:
        return shapely.Polygon()
    return max(parts, key=lambda p: p.area)
