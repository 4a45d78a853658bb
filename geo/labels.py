"""Building labels: per-tile GeoJSON in map coordinates, SpaceNet summary CSVs in pixel coordinates.

Labels come back as GeoDataFrames of valid polygons. Real label files carry invalid rings,
self-intersections, Z coordinates and placeholder rows for empty tiles; each is handled here, once,
so that nothing downstream has to.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyogrio.errors import DataLayerError, DataSourceError
from rasterio.crs import CRS
from rasterio.transform import Affine

from .errors import InputError, first_line

log = logging.getLogger(__name__)

WGS84 = CRS.from_epsg(4326)


def clean_polygons(geometries: np.ndarray | gpd.GeoSeries, source: str) -> np.ndarray:
    """Make building geometries valid 2-D polygons, keeping only their polygonal parts.

    A self-intersecting ring is repaired with ``make_valid`` (a bowtie becomes two triangles of one
    building); lines and points left by the repair, and empty or zero-area shapes, become empty
    geometries so that row positions still line up with the input.

    Args:
        geometries: Array of shapely geometries (None allowed).
        source: The label file, named in the log line about repairs.

    Returns:
        Array of the same length of Polygon / MultiPolygon / empty geometries.
    """
    geoms = shapely.force_2d(np.asarray(geometries, dtype=object))
    geoms[shapely.is_missing(geoms)] = shapely.Polygon()
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        log.info("%s: repaired %d invalid polygon(s)", source, int(invalid.sum()))
        geoms[invalid] = shapely.make_valid(geoms[invalid])
    # make_valid may return a GeometryCollection; keep its polygon parts as one building.
    polygonal = np.array([_polygonal_part(g) for g in geoms], dtype=object)
    polygonal[~(shapely.area(polygonal) > 0)] = shapely.Polygon()
    return polygonal


def _polygonal_part(geom: shapely.Geometry) -> shapely.Geometry:
    if isinstance(geom, shapely.Polygon | shapely.MultiPolygon):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if isinstance(g, shapely.Polygon | shapely.MultiPolygon)]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def read_label_file(path: str | Path, name: str | None = None) -> gpd.GeoDataFrame:
    """Read building polygons from a GeoJSON (or any vector file GDAL reads).

    Args:
        path: Local path of the label file.
        name: How to name the file in errors (its store address).

    Returns:
        GeoDataFrame with the file's attributes and valid polygon geometries, in the file's CRS
        (EPSG:4326 when the file states none, as GeoJSON implies). Empty geometries are dropped.

    Raises:
        InputError: The file cannot be parsed as vector data.
    """
    name = name or str(path)
    try:
        frame = gpd.read_file(path, engine="pyogrio")
    except (DataSourceError, DataLayerError, ValueError) as error:
        raise InputError(name, f"not a readable GeoJSON/vector file ({first_line(error)})") from error
    if frame.crs is None:
        frame = frame.set_crs(WGS84)
    geometry = clean_polygons(frame.geometry, name)
    frame = frame.set_geometry(gpd.GeoSeries(geometry, crs=frame.crs, index=frame.index))
    return cast(gpd.GeoDataFrame, frame[~frame.geometry.is_empty].reset_index(drop=True))


def to_pixels(
    geometries: gpd.GeoSeries, transform: Affine, raster_crs: CRS | str | None = None
) -> np.ndarray:
    """Map-coordinate polygons to a raster's pixel coordinates (x right, y down, from its corner).

    Args:
        geometries: Polygons with a CRS.
        transform: The raster's geotransform (pixel -> raster CRS).
        raster_crs: The raster's CRS; the polygons are reprojected to it first when it differs.

    Returns:
        Array of polygons in pixel coordinates.
    """
    if (
        raster_crs is not None
        and geometries.crs is not None
        and CRS.from_user_input(raster_crs) != CRS.from_user_input(geometries.crs)
    ):
        geometries = geometries.to_crs(raster_crs)
    return apply_affine(np.asarray(geometries.array, dtype=object), ~transform)


def apply_affine(geometries: np.ndarray, transform: Affine) -> np.ndarray:
    """Apply an affine transform to every vertex of an array of geometries at once."""
    a, b, c, d, e, f = transform[:6]
    return shapely.transform(geometries, lambda xy: xy @ np.array([[a, d], [b, e]]) + (c, f))


SUMMARY_COLUMNS = ("ImageId", "BuildingId", "PolygonWKT_Pix")


def read_summary_csv(path: str | Path, name: str | None = None) -> gpd.GeoDataFrame:
    """Read a SpaceNet summary CSV (``ImageId,BuildingId,PolygonWKT_Pix[,PolygonWKT_Geo]``).

    An image without buildings appears as a placeholder row (``POLYGON EMPTY``, or BuildingId -1
    with a degenerate polygon). Its row is kept with an empty geometry, so the image is still known
    to exist (it counts when scoring false positives) but contributes no building.

    Args:
        path: Local path of the CSV.
        name: How to name the file in errors.

    Returns:
        GeoDataFrame with columns image_id, building_id, geometry (pixel coordinates, no CRS), plus
        any other columns of the CSV (e.g. Confidence in proposal files).

    Raises:
        InputError: Missing columns or unparsable WKT.
    """
    name = name or str(path)
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise InputError(name, f"not a readable CSV ({first_line(error)})") from error
    missing = [c for c in SUMMARY_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(name, f"missing column(s) {', '.join(missing)}; found {', '.join(table.columns)}")
    try:
        geoms = shapely.from_wkt(table["PolygonWKT_Pix"].fillna("POLYGON EMPTY").to_numpy())
    except shapely.errors.GEOSException as error:
        raise InputError(name, f"a PolygonWKT_Pix value is not valid WKT ({error})") from error
    geoms = clean_polygons(geoms, name)
    placeholder = table["BuildingId"].to_numpy() == -1
    geoms[placeholder] = shapely.Polygon()
    extra = table.drop(columns=["ImageId", "BuildingId", "PolygonWKT_Pix", "PolygonWKT_Geo"], errors="ignore")
    frame = gpd.GeoDataFrame(
        {"image_id": table["ImageId"].astype(str), "building_id": table["BuildingId"], **extra},
        geometry=geoms,
    )
    return frame
