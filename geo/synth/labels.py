"""Labels of a synthetic scene: per-tile GeoJSON, rows of the solutions CSV, and the scene's truth."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import Polygon, box, mapping

from ..labels import read_label_file
from .scene import Scene

if TYPE_CHECKING:
    from ..layouts import TileSet


@dataclass(frozen=True)
class Piece:
    """The polygon of a building inside one tile, in global pixels."""

    building_id: int
    polygon: Polygon
    share: float  # of the whole building's area


@dataclass(frozen=True)
class SolutionRow:
    """A row of the SpaceNet-2 solutions CSV."""

    image_id: str
    building_id: int  # 1-based position in the image's GeoJSON; -1 for an image without buildings
    polygon_wkt_pix: str  # in the tile's pixels
    polygon_wkt_geo: str  # in longitude and latitude

    def as_row(self) -> tuple[str, int, str, str]:
        """The row's cells in the CSV's column order."""
        return (self.image_id, self.building_id, self.polygon_wkt_pix, self.polygon_wkt_geo)


@dataclass(frozen=True)
class TileLabels:
    """A tile's GeoJSON file and its rows of the solutions CSV, in the same building order."""

    geojson: bytes
    rows: list[SolutionRow]


def tile_labels(scene: Scene, row: int, col: int, image_id: str) -> TileLabels:
    """The labels of the tile at ``row``, ``col`` of the grid."""
    offset = np.array([col * scene.tile_size, row * scene.tile_size], dtype=float)
    features = []
    rows = []
    for k, piece in enumerate(_tile_pieces(scene, row, col), start=1):
        lonlat = scene.px_to_lonlat(piece.polygon)
        features.append(_feature(lonlat, piece.building_id, piece.share))
        local = shapely.transform(piece.polygon, lambda xy: xy - offset)
        rows.append(
            SolutionRow(
                image_id=image_id,
                building_id=k,
                polygon_wkt_pix=shapely.to_wkt(local, rounding_precision=-1),
                polygon_wkt_geo=shapely.to_wkt(lonlat, rounding_precision=-1),
            )
        )
    if not rows:
        # Real SpaceNet-2 CSVs list an image without buildings this way.
        rows.append(SolutionRow(image_id, -1, "POLYGON EMPTY", "POLYGON EMPTY"))
    collection = {
        "type": "FeatureCollection",
        "name": f"buildings_{image_id}",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
        "features": features,
    }
    return TileLabels(geojson=json.dumps(collection, separators=(",", ":")).encode(), rows=rows)


def _tile_pieces(scene: Scene, row: int, col: int) -> list[Piece]:
    """Each polygon of a building inside a tile, in building-id order."""
    t = scene.tile_size
    x0, y0 = col * t, row * t
    tile = box(x0, y0, x0 + t, y0 + t)
    pieces = []
    for i in scene.footprints.select(x0, y0, x0 + t, y0 + t):
        whole = scene.footprints.geoms[i]
        for part in shapely.get_parts(whole.intersection(tile)):
            # A building that only touches the tile edge leaves a line, not a polygon.
            if isinstance(part, Polygon) and part.area > 0:
                pieces.append(Piece(building_id=int(i) + 1, polygon=part, share=part.area / whole.area))
    return pieces


def _feature(geom: Polygon, building_id: int, share: float) -> dict[str, Any]:
    """A GeoJSON feature with SpaceNet's partial-building properties."""
    partial = share < 1.0 - 1e-9
    return {
        "type": "Feature",
        "properties": {
            "building_id": building_id,
            "partialBuilding": int(partial),
            "partialDec": round(share, 6) if partial else 1.0,
        },
        "geometry": mapping(geom),
    }


def solutions_csv(rows: Iterable[SolutionRow]) -> bytes:
    """The SpaceNet-2 solutions CSV of ``rows``, header first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("ImageId", "BuildingId", "PolygonWKT_Pix", "PolygonWKT_Geo"))
    writer.writerows(row.as_row() for row in rows)
    return out.getvalue().encode()


def scene_truth(tile_set: TileSet) -> gpd.GeoDataFrame:
    """The whole buildings of a synthetic scene in longitude/latitude, one row per building.

    Per-tile labels hold the piece of a building inside each tile; pieces carry the building's id,
    so a building cut by a seam is put back together here.
    """
    frames = []
    for tile in tile_set.tiles:
        if tile.label_key is not None:
            path = tile_set.store.local_path(tile.label_key)
            frames.append(read_label_file(path, tile_set.store.describe(tile.label_key)))
    pieces = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=frames[0].crs)
    whole = pieces.dissolve(by="building_id", as_index=False)
    geoms = np.asarray(whole.geometry.array)
    whole["geometry"] = shapely.make_valid(shapely.buffer(shapely.buffer(geoms, 1e-9), -1e-9))
    # Selecting columns that include the geometry keeps a GeoDataFrame.
    return cast(gpd.GeoDataFrame, whole[["building_id", "geometry"]])
