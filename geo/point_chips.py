"""One chip round each of some points: the windows that click-to-segment reads.

A chip is centred on its point's pixel of the imagery's grid (see chips.choose_grid) and reads
from every tile it covers (chips.read_chip), so a point near a tile's edge sees the building
across the seam whole.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS

from .chips import Chip, ChipPlan, TileFootprint, choose_grid, footprint_polygons
from .errors import InputError


def parse_point(text: str) -> tuple[float, float]:
    """``LON,LAT`` as two floats.

    Raises:
        InputError: Not two numbers, or outside longitude and latitude's ranges.
    """
    parts = text.split(",")
    try:
        lon, lat = (float(p) for p in parts)
    except ValueError:
        raise InputError(text, "not LON,LAT (two numbers, e.g. --at=-115.198,36.148)") from None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise InputError(text, "not LON,LAT: longitude is in -180..180 and latitude in -90..90")
    return lon, lat


def point_chips(
    points: list[tuple[float, float]], crs: CRS | str, footprints: list[TileFootprint], size: int
) -> tuple[ChipPlan, np.ndarray]:
    """A chip of ``size`` pixels centred on each point that some tile covers.

    Args:
        points: (x, y) in ``crs``.
        crs: The points' CRS.
        footprints: The tiles' headers.
        size: Chip side in pixels.

    Returns:
        The plan (chip ``i`` is the ``i``-th covered point's) and, for each point, its chip's
        position in the plan's chips or -1 where no tile covers it. The chips' cores are their
        whole windows (each point's chip stands alone).

    Raises:
        InputError: No tiles, or a reference tile that is not north-up.
    """
    if not footprints:
        raise InputError("source", "no tiles to read the points from")
    grid = choose_grid(footprints)
    xy = gpd.GeoSeries(gpd.points_from_xy(*np.array(points, float).T), crs=crs).to_crs(grid.crs)
    outlines = footprint_polygons(footprints, grid.crs)
    tree = shapely.STRtree(outlines)
    keys = [fp.key for fp in footprints]
    chips, chip_of = [], np.full(len(points), -1)
    inverse = ~grid.transform
    for i, point in enumerate(xy):
        if len(tree.query(point, predicate="intersects")) == 0:
            continue
        col, row = inverse @ (point.x, point.y)
        row0, col0 = int(np.floor(row)) - size // 2, int(np.floor(col)) - size // 2
        corners = [grid.transform @ (col0 + dc, row0 + dr) for dr in (0, size) for dc in (0, size)]
        window = shapely.box(*shapely.MultiPoint(corners).bounds)
        tiles = tuple(sorted(keys[j] for j in tree.query(window, predicate="intersects")))
        chip_of[i] = len(chips)
        chips.append(Chip(len(chips), row0, col0, size, (-np.inf, -np.inf, np.inf, np.inf), tiles))
    tiles = {k: fp for fp in footprints if (k := fp.key) in {t for c in chips for t in c.tiles}}
    covered = shapely.union_all(outlines) if chips else shapely.Polygon()
    return ChipPlan(grid, tuple(chips), tiles, covered, size, 0), chip_of
