"""Click-to-segment: the outline of the building under each of some points, into a GeoPackage.

Only a window round each point is read, in place (a local file, or S3 through GDAL's range
requests), from every tile it covers: a point beside a seam sees its building whole. The window
is stretched by its own 2nd and 98th percentiles, as a whole tile is in an AOI run (the window
is large enough to be typical of its tile). A pointer network (``pointer`` or
``centroid-pointer``) draws the segment under the point.

No Prefect and no Dask: a point costs well under a second, far less than starting either.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import torch
from pyproj import CRS

from footprints.geo.chips import ChipPlan, TileFootprint, read_chip
from footprints.geo.errors import InputError
from footprints.geo.geopackage import replace_geopackage
from footprints.geo.layouts import find_tiles
from footprints.geo.point_chips import point_chips
from footprints.geo.raster import normalise
from footprints.geo.runs import DEFAULTS
from footprints.geo.stores import S3Options, TileStore, open_store
from footprints.geo.vectorise import largest_polygon, masks_to_polygons, to_metric
from footprints.models.centroid_pointer import CentroidPointerSegmenter
from footprints.models.checkpoint import checkpoint_identity
from footprints.models.deployed import method_segmenter
from footprints.models.instances import Instance
from footprints.models.pointer import PointerSegmenter
from footprints.models.registry import load_segmenter, resolve_checkpoint

from .tiles import tile_footprints

log = logging.getLogger(__name__)

LAYER = "buildings_at"
POINTER_METHODS = ("centroid-pointer", "pointer")


@dataclass(frozen=True)
class PointResult:
    """What was found under one point.

    Attributes:
        lon: The point's longitude.
        lat: Its latitude.
        outline: The building's outline in the output CRS, or None where there is none.
        score: The network's probability that the point is on the segment (0 where none).
        area_m2: The outline's area.
    """

    lon: float
    lat: float
    outline: shapely.Geometry | None
    score: float
    area_m2: float


def segment_at(
    source: str,
    points: list[tuple[float, float]],
    model: str | None = None,
    *,
    window: int = 384,
    crs: str = DEFAULTS.crs,
    s3: S3Options = S3Options(),
) -> tuple[list[PointResult], str]:
    """The building under each point (lon, lat), read from the tiles of ``source``.

    Args:
        source: Folder or ``s3://`` prefix of tiles.
        points: (lon, lat) pairs in EPSG:4326.
        model: A ``centroid-pointer`` or ``pointer`` checkpoint; None: the shipped
            centroid-pointer model.
        window: Side in pixels of the window read round each point.
        crs: CRS of the outlines.
        s3: How to reach an S3 source.

    Returns:
        One result per point, in order, and the model's id (its stem and checksum prefix).

    Raises:
        InputError: A checkpoint of another method, or a point outside every tile.
    """
    checkpoint, record = resolve_checkpoint(model, None if model else "centroid-pointer")
    if record["method"] not in POINTER_METHODS:
        where = str(checkpoint) if isinstance(checkpoint, Path) else record["method"]
        raise InputError(
            where, f"is a {record['method']} checkpoint; segment-at needs {' or '.join(POINTER_METHODS)}"
        )
    content, model_id, _ = checkpoint_identity(checkpoint, record["method"])
    # At points, the method runs on the imagery as it comes.
    segmenter = method_segmenter(load_segmenter(content))
    assert isinstance(segmenter, PointerSegmenter | CentroidPointerSegmenter)
    store = open_store(source, s3)
    footprints, _ = tile_footprints(find_tiles(store))
    plan, chip_of = point_chips(points, "EPSG:4326", footprints, window)
    outside = [f"{lon:g},{lat:g}" for (lon, lat), c in zip(points, chip_of, strict=True) if c < 0]
    if outside:
        raise InputError(", ".join(outside), f"outside every tile of {store.uri}")
    started = time.perf_counter()
    images, centres = _read_windows(plan, store)
    found = segmenter.segment_at(torch.from_numpy(images), torch.from_numpy(centres))
    results = [
        _result(point, found[c], plan, c, CRS.from_user_input(crs))
        for point, c in zip(points, chip_of, strict=True)
    ]
    log.info("%d points in %.2f s", len(points), time.perf_counter() - started)
    return results, model_id


def _read_windows(plan: ChipPlan, store: TileStore) -> tuple[np.ndarray, np.ndarray]:
    """Each chip's pixels, stretched by its own percentiles, and its point's pixel (x, y)."""
    images = []
    with store.gdal_env():
        for chip in plan.chips:
            read = read_chip(
                chip, plan, lambda fp: Path(store.header_path(fp.key)), _raw_limits, store.describe
            )
            for reason in read.failed.values():
                log.warning("%s", reason)
            images.append(normalise(read.image, read.valid))
    centre = plan.size // 2 + 0.5  # the point lies in the chip's middle pixel
    return np.stack(images).astype(np.float32), np.full((len(images), 2), centre, np.float32)


def _raw_limits(fp: TileFootprint) -> tuple[np.ndarray, np.ndarray]:
    """Limits that map a tile's whole value range to [0, 1] without clipping: the window is
    stretched afterwards by its own percentiles, which a linear map leaves where they are."""
    dtype = np.dtype(fp.info.dtype)
    low, high = (np.iinfo(dtype).min, np.iinfo(dtype).max) if dtype.kind in "iu" else (0.0, 1.0)
    return np.full(3, low, np.float32), np.full(3, high, np.float32)


def _result(
    point: tuple[float, float], found: Instance | None, plan: ChipPlan, chip: int, crs: CRS
) -> PointResult:
    """A point's outline on the map, in ``crs``, with its area in m^2."""
    lon, lat = point
    if found is None:
        return PointResult(lon, lat, None, 0.0, 0.0)
    pixels = masks_to_polygons([found])
    outline = largest_polygon(to_metric(pixels, plan.chips[chip].transform(plan.grid), plan.grid.crs, crs)[0])
    metric = gpd.GeoSeries([outline], crs=crs)
    area = float(metric.to_crs(metric.estimate_utm_crs()).area.iloc[0])
    return PointResult(lon, lat, outline, found.score, area)


def write_points(path: str | Path, results: list[PointResult], crs: str, model_id: str) -> int:
    """Write the outlines found into the ``buildings_at`` layer of a new GeoPackage, atomically.

    Each row has the point (``lon``, ``lat``), the ``score`` and the outline's ``area_m2``;
    points without a building have no row.

    Returns:
        The rows written.
    """
    rows = [r for r in results if r.outline is not None]
    outlines = [r.outline for r in rows if r.outline is not None]
    frame = gpd.GeoDataFrame(
        pd.DataFrame(
            {
                "lon": [r.lon for r in rows],
                "lat": [r.lat for r in rows],
                "score": [r.score for r in rows],
                "area_m2": [r.area_m2 for r in rows],
                "model_id": [model_id] * len(rows),
            }
        ),
        geometry=gpd.GeoSeries(outlines, crs=crs),
    )
    replace_geopackage(
        Path(path), lambda tmp: frame.to_file(tmp, layer=LAYER, driver="GPKG", engine="pyogrio")
    )
    return len(rows)
