"""Instance masks to polygons.

All the instances of a chip are traced in one call of rasterio.features.shapes: their crops are
laid side by side, one empty column apart, on a label canvas (instance i as i + 1), so that the
work grows with the number and size of buildings, never with the chip's area, and GDAL is set up
once per chip rather than once per building.

Tracing reads no file: it runs in a GDAL environment without credentials (geo/raster.py's
local_gdal), on datasets in memory rather than arrays, because rasterio builds a boto3 session
(about 30 ms) for every array it wraps as a dataset where AWS credentials are in the environment,
even inside an environment of the caller's (rasterio/rasterio#3331). Per building, that once made
vectorising 50 ms a mask, against 0.8 ms without the credentials.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import cast

import numpy as np
import rasterio
import shapely
from pyproj import CRS, Transformer
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import shapes
from rasterio.io import DatasetWriter
from rasterio.transform import Affine

from .labels import apply_affine
from .raster import local_gdal
from .regularise import regularise

# Masks are traced in pixel coordinates on purpose, and rasterio warns whenever a dataset or a
# transform has no georeferencing. Set once here rather than around each call, as worker threads
# trace concurrently and catch_warnings is not thread-safe. Tiles are checked by geo/raster.py,
# which names the file.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module="rasterio")


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
    return trace_masks([mask], [row], [col])[0]


def masks_to_polygons(instances: Sequence, simplify_px: float = 0.0) -> np.ndarray:
    """Polygons of many instances (anything with mask, row and col attributes).

    Args:
        instances: The instances of one chip.
        simplify_px: Douglas-Peucker tolerance in pixels; 0 keeps the pixel staircase.

    Returns:
        Array of polygons, one per instance, in chip pixel coordinates.
    """
    rows, cols = [i.row for i in instances], [i.col for i in instances]
    polygons = trace_masks([i.mask for i in instances], rows, cols)
    if simplify_px > 0 and len(polygons):
        polygons = shapely.make_valid(shapely.simplify(polygons, simplify_px, preserve_topology=True))
    return polygons


def trace_masks(masks: Sequence[np.ndarray], rows: Sequence[int], cols: Sequence[int]) -> np.ndarray:
    """The outlines of boolean mask crops, each in the chip coordinates of its top-left pixel.

    Returns:
        One Polygon or MultiPolygon per mask (an empty Polygon for an empty mask).
    """
    outlines = np.array([shapely.Polygon() for _ in masks], dtype=object)
    if not any(m.any() for m in masks):
        return outlines
    widths = np.array([m.shape[1] for m in masks])
    left = np.concatenate([[0], np.cumsum(widths + 1)[:-1]])
    canvas = np.zeros((max(m.shape[0] for m in masks), int(left[-1] + widths[-1])), np.int32)
    for label, (mask, x) in enumerate(zip(masks, left, strict=True), start=1):
        canvas[: mask.shape[0], x : x + mask.shape[1]][mask.astype(bool)] = label

    with (
        local_gdal(),
        _in_memory(canvas) as labels,
        _in_memory((canvas > 0).view(np.uint8)) as mask,
    ):
        found = shapes(rasterio.band(labels, 1), mask=rasterio.band(mask, 1))
        traced = [(shapely.geometry.shape(geom), int(value) - 1) for geom, value in found]
    # rasterio's shapes gives GeoJSON polygons, so each piece is a Polygon.
    pieces = np.array([cast(shapely.Polygon, piece) for piece, _ in traced], dtype=object)
    owner = np.array([i for _, i in traced])
    # Every piece from the canvas back to its chip: x from its crop's column, y from its row.
    shift = np.column_stack([np.asarray(cols) - left, np.asarray(rows)])
    coords, index = shapely.get_coordinates(pieces, return_index=True)
    pieces = shapely.set_coordinates(pieces.copy(), coords + shift[owner[index]])
    for i in np.unique(owner):
        own = pieces[owner == i]
        outlines[i] = own[0] if len(own) == 1 else shapely.MultiPolygon(list(own))
    return outlines


def _in_memory(canvas: np.ndarray) -> DatasetWriter:
    """A GDAL dataset in memory holding ``canvas`` (its single band)."""
    height, width = canvas.shape
    dataset = rasterio.open("", "w", driver="MEM", width=width, height=height, count=1, dtype=canvas.dtype)
    dataset.write(canvas, 1)
    return dataset


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
