"""Areas of interest: a bbox or the polygons of a GeoJSON / GeoPackage file, in any CRS.

An AOI is refused up front, with the reason, when it cannot be used: a bad bbox, a file without
polygons or without a CRS, an empty or zero-area shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import shapely
from pyogrio.errors import DataSourceError
from pyproj import CRS
from pyproj.exceptions import CRSError

from .errors import InputError, first_line


@dataclass(frozen=True)
class Aoi:
    """An area of interest.

    Attributes:
        geometry: One (Multi)Polygon, in ``crs``.
        crs: Its coordinate reference system.
        label: What the user gave: the bbox text or the file's path.
    """

    geometry: shapely.Geometry
    crs: CRS
    label: str

    def to_crs(self, crs: CRS | str) -> shapely.Geometry:
        """The AOI's shape in another CRS (densified first, so straight edges stay faithful)."""
        densified = shapely.segmentize(self.geometry, max_segment_length=self._segment_length())
        return gpd.GeoSeries([densified], crs=self.crs).to_crs(crs).iloc[0]

    def _segment_length(self) -> float:
        minx, miny, maxx, maxy = (float(v) for v in shapely.bounds(self.geometry))
        return max(maxx - minx, maxy - miny) / 64 or 1.0

    def utm_crs(self) -> CRS:
        """The UTM zone of the AOI's centre: the metric CRS for areas, tolerances and dedup."""
        return gpd.GeoSeries([self.geometry], crs=self.crs).estimate_utm_crs()


def parse_crs(text: str) -> CRS:
    """A CRS from ``EPSG:32611``, ``32611`` or any text pyproj understands.

    Raises:
        InputError: Not a CRS.
    """
    try:
        return CRS.from_user_input(int(text) if text.isdigit() else text)
    except CRSError as error:
        raise InputError(text, f"not a coordinate reference system ({first_line(error)})") from error


def read_aoi(spec: str, bbox_crs: str = "EPSG:4326") -> Aoi:
    """The AOI a user named: ``minx,miny,maxx,maxy`` or a GeoJSON / GeoPackage path.

    A bbox is in ``bbox_crs`` (longitude/latitude by default); a file carries its own CRS. The
    polygons of every feature of a file are merged into one shape.

    Raises:
        InputError: The bbox or file cannot be used, with the reason.
    """
    parts = spec.split(",")
    if len(parts) == 4 and not Path(spec).exists():
        return _bbox_aoi(spec, parts, parse_crs(bbox_crs))
    return _file_aoi(spec)


def _bbox_aoi(spec: str, parts: list[str], crs: CRS) -> Aoi:
    try:
        minx, miny, maxx, maxy = (float(p) for p in parts)
    except ValueError as error:
        raise InputError(spec, "a bbox is four numbers: minx,miny,maxx,maxy") from error
    if not (minx < maxx and miny < maxy):
        raise InputError(spec, "a bbox needs minx < maxx and miny < maxy")
    if crs.is_geographic and not (minx >= -180 and maxx <= 180 and miny >= -90 and maxy <= 90):
        raise InputError(spec, f"outside longitude/latitude range for {crs.to_string()}; wrong --aoi-crs?")
    return Aoi(shapely.box(minx, miny, maxx, maxy), crs, spec)


def _file_aoi(spec: str) -> Aoi:
    path = Path(spec)
    if not path.is_file():
        raise InputError(spec, "neither a bbox (minx,miny,maxx,maxy) nor an existing GeoJSON/GeoPackage file")
    try:
        frame = gpd.read_file(path, engine="pyogrio")
    except DataSourceError as error:
        raise InputError(spec, f"not a readable vector file ({first_line(error)})") from error
    if frame.crs is None:
        raise InputError(spec, "the AOI file has no CRS")
    polygons = shapely.make_valid(frame.geometry.dropna().to_numpy())
    polygons = polygons[shapely.area(polygons) > 0]
    if len(polygons) == 0:
        raise InputError(spec, "the AOI file holds no polygon with an area")
    return Aoi(shapely.union_all(polygons), CRS.from_user_input(frame.crs), spec)
