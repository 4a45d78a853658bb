"""Deterministic synthetic SpaceNet-2 scenes: pan-sharpened RGB tiles with building labels.

A scene is one continuous area of interest. Roads, paved lots, pools, buildings, trees and their
shadows are laid out once in scene metres (x east, y south, origin at the scene's north-west
corner) and every tile renders its own window of that plan, with ground texture drawn from value
noise that is a pure function of global pixel coordinates. A building that crosses a tile seam is
therefore drawn and labelled consistently on both sides.

The files follow the SpaceNet-2 training layout: ``RGB-PanSharpen`` GeoTIFFs, per-tile
``geojson/buildings`` and the ``summaryData`` solutions CSV. The same arguments always give
byte-identical files.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from rasterio.features import rasterize
from rasterio.io import MemoryFile
from rasterio.transform import Affine
from shapely import affinity, ops
from shapely.geometry import LineString, Polygon, box, mapping
from tqdm import tqdm

from .labels import read_label_file

if TYPE_CHECKING:
    from .layouts import TileSet

__all__ = ["SceneSummary", "write_scene"]

Colour = tuple[float, float, float]
Rect = tuple[float, float, float, float]  # u0, u1, v0, v1 in a building's local frame, metres

# WGS84 ellipsoid, for metres per degree at the scene's latitude.
_WGS84_A = 6378137.0
_WGS84_E2 = 6.69437999014e-3

# Roof materials and how often they occur, as reflectance in 0..1. Both ends of the range are
# deliberate: bright concrete is as bright as sidewalks and bare soil, dark shingle is as dark as
# asphalt, so no brightness threshold separates roofs from the ground.
_ROOF_WHITE: Colour = (0.86, 0.86, 0.83)
_ROOF_LIGHT_GREY: Colour = (0.63, 0.63, 0.62)
_ROOF_DARK_GREY: Colour = (0.25, 0.26, 0.28)
_ROOF_BLACK: Colour = (0.14, 0.14, 0.15)
_ROOF_TERRACOTTA: Colour = (0.62, 0.37, 0.27)
_ROOF_TAN: Colour = (0.60, 0.53, 0.43)
_ROOF_BROWN: Colour = (0.38, 0.30, 0.23)
_ROOF_BLUE_METAL: Colour = (0.36, 0.47, 0.62)
_ROOF_GREEN_METAL: Colour = (0.33, 0.47, 0.38)
_HOUSE_ROOFS: tuple[tuple[Colour, float], ...] = (
    (_ROOF_TERRACOTTA, 0.24),
    (_ROOF_TAN, 0.16),
    (_ROOF_DARK_GREY, 0.21),
    (_ROOF_BROWN, 0.12),
    (_ROOF_LIGHT_GREY, 0.11),
    (_ROOF_WHITE, 0.08),
    (_ROOF_BLACK, 0.08),
)
_COMMERCIAL_ROOFS: tuple[tuple[Colour, float], ...] = (
    (_ROOF_WHITE, 0.24),
    (_ROOF_LIGHT_GREY, 0.26),
    (_ROOF_TAN, 0.12),
    (_ROOF_DARK_GREY, 0.18),
    (_ROOF_BLACK, 0.07),
    (_ROOF_BLUE_METAL, 0.07),
    (_ROOF_GREEN_METAL, 0.06),
)
_SHED_ROOFS: tuple[tuple[Colour, float], ...] = (
    (_ROOF_WHITE, 0.25),
    (_ROOF_LIGHT_GREY, 0.2),
    (_ROOF_BLUE_METAL, 0.2),
    (_ROOF_GREEN_METAL, 0.15),
    (_ROOF_DARK_GREY, 0.2),
)
_ASPHALT_DARK: Colour = (0.17, 0.17, 0.18)
_ASPHALT_AGED: Colour = (0.38, 0.37, 0.36)
_CONCRETE: Colour = (0.70, 0.68, 0.64)
_POOL: Colour = (0.22, 0.55, 0.68)
_PAVERS: Colour = (0.62, 0.53, 0.43)
_STRAW: Colour = (0.47, 0.45, 0.31)  # lawn gone dry, as bright as many roofs
_MARKING_WHITE: Colour = (0.85, 0.85, 0.82)
_MARKING_YELLOW: Colour = (0.80, 0.68, 0.25)
_ROOF_UNIT: Colour = (0.74, 0.74, 0.73)

# Roof shading styles.
_FLAT, _GABLE, _HIP = 0, 1, 2

# Pieces of a building on either side of a seam must be at least this big, so that no tile
# gets an unlabellable sliver of a few pixels.
_MIN_PIECE_AREA_M2 = 3.0
_MIN_PIECE_EXTENT_M = 1.0
# Trees may hide at most this share of any roof.
_MAX_TREE_COVER = 0.15
# Every building keeps this far from every other building it is not built against.
_GAP_M = 1.0


@dataclass(frozen=True)
class SceneSummary:
    """What `write_scene` wrote.

    Attributes:
        aoi_name: Name of the area of interest, e.g. ``AOI_9_Synthetic``.
        tiles: Number of image tiles written.
        buildings: Number of distinct, whole buildings in the scene; a building cut by a seam
            counts once.
        tile_keys: Keys of the GeoTIFF tiles in image-number order.
        grid: ``(rows, cols)`` of the tile grid; tiles are numbered row-major from 1 and the
            last row may be only partly filled.
    """

    aoi_name: str
    tiles: int
    buildings: int
    tile_keys: tuple[str, ...]
    grid: tuple[int, int]


def write_scene(
    write: Callable[[str, bytes], None],
    tiles: int,
    seed: int,
    *,
    aoi_name: str = "AOI_9_Synthetic",
    tile_size: int = 650,
    gsd_m: float = 0.3,
    origin_lonlat: tuple[float, float] = (-115.20, 36.15),
    progress: bool = False,
) -> SceneSummary:
    """Generate a synthetic SpaceNet-2 scene and hand each of its files to ``write``.

    Tiles form a grid of ``ceil(sqrt(tiles))`` columns that abut exactly; tile ``N`` is
    ``RGB-PanSharpen_<aoi>_img<N>.tif`` (3-band uint16, 11-bit values, EPSG:4326, north-up) with
    its labels in ``geojson/buildings/buildings_<aoi>_img<N>.geojson``. The solutions CSV comes
    last. Row ``k`` of an image in the CSV is feature ``k`` of that image's GeoJSON.

    Args:
        write: Called once per file with a relative key (forward slashes) and the file's bytes.
        tiles: Number of tiles, at least 1.
        seed: Seed of everything random; equal arguments give byte-identical files.
        aoi_name: Area of interest name; files go under ``<aoi_name>_Train/``.
        tile_size: Tile width and height in pixels, at least 64.
        gsd_m: Ground sample distance in metres per pixel.
        origin_lonlat: Longitude and latitude of the scene's north-west corner.
        progress: Show a progress bar over tiles.

    Returns:
        A summary of the scene.

    Raises:
        ValueError: If ``tiles``, ``tile_size`` or ``gsd_m`` is out of range.
    """
    if tiles < 1:
        raise ValueError(f"tiles must be at least 1, got {tiles}")
    if tile_size < 64:
        raise ValueError(f"tile_size must be at least 64 pixels, got {tile_size}")
    if not gsd_m > 0:
        raise ValueError(f"gsd_m must be positive, got {gsd_m}")
    cols = math.ceil(math.sqrt(tiles))
    rows = math.ceil(tiles / cols)
    scene = _build_scene(seed, tiles, cols, tile_size, gsd_m, origin_lonlat)

    root = f"{aoi_name}_Train"
    tile_keys = []
    csv_rows: list[tuple[str, int, str, str]] = []
    for index in tqdm(range(tiles), desc=f"{aoi_name} tiles", unit="tile", disable=not progress):
        number = index + 1
        image_id = f"{aoi_name}_img{number}"
        row, col = divmod(index, cols)
        transform = scene.tile_transform(row, col)
        tif_key = f"{root}/RGB-PanSharpen/RGB-PanSharpen_{image_id}.tif"
        pixels = _render_window(scene, col * tile_size, row * tile_size, tile_size, tile_size)
        write(tif_key, _geotiff_bytes(pixels, transform, {"AOI": aoi_name, "IMAGE_ID": image_id}))
        tile_keys.append(tif_key)

        geojson, rows_of_tile = _tile_labels(scene, row, col, image_id)
        write(f"{root}/geojson/buildings/buildings_{image_id}.geojson", geojson)
        csv_rows.extend(rows_of_tile)

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("ImageId", "BuildingId", "PolygonWKT_Pix", "PolygonWKT_Geo"))
    writer.writerows(csv_rows)
    write(f"{root}/summaryData/{root}_Building_Solutions.csv", out.getvalue().encode())
    return SceneSummary(
        aoi_name=aoi_name,
        tiles=tiles,
        buildings=len(scene.footprints.geoms),
        tile_keys=tuple(tile_keys),
        grid=(rows, cols),
    )


# --- Scene in pixels: what rendering and labelling read -------------------------------------


@dataclass(frozen=True)
class _Layer:
    """Polygons in global pixel coordinates with their bounds, for picking a window's share."""

    geoms: list[Polygon]
    bounds: np.ndarray

    @classmethod
    def of(cls, geoms: list[Polygon]) -> _Layer:
        bounds = shapely.bounds(np.array(geoms, dtype=object)) if geoms else np.empty((0, 4))
        return cls(geoms, bounds.reshape(-1, 4))

    def select(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        b = self.bounds
        return np.flatnonzero((b[:, 0] < x1) & (b[:, 2] > x0) & (b[:, 1] < y1) & (b[:, 3] > y0))


@dataclass(frozen=True)
class _Scene:
    """A laid-out scene in global pixel coordinates (x right, y down, origin at the NW corner).

    Per-item attributes are arrays parallel to their layer's geometries.
    """

    tile_size: int
    gsd_m: float
    lon0: float
    lat0: float
    dlon: float
    dlat: float
    keys: np.ndarray  # seeds of the value-noise lattices and of sensor noise
    sun: np.ndarray  # unit vector towards the sun in pixel axes
    soil: np.ndarray  # (2, 3): dark and bright soil colours
    grass: np.ndarray  # (3,)
    vegetation: float  # share of the ground that is lawn or scrub
    surfaces: _Layer  # lots, driveways, pools, roads, sidewalks, markings; drawn in order
    surface_colour: np.ndarray  # (n, 3)
    surface_grain: np.ndarray  # (n,) texture strength
    shadows: _Layer
    parts: _Layer  # convex roof parts; their union per building is the footprint
    part_building: np.ndarray  # (n,) index into footprints
    part_frame: np.ndarray  # (n, 6): centre x, y, ridge direction x, y, half length, half width
    roof_colour: np.ndarray  # (buildings, 3)
    roof_style: np.ndarray  # (buildings,)
    roof_relief: np.ndarray  # (buildings,) brightness difference between sunlit and shaded slopes
    roof_units: _Layer  # rooftop plant on large flat roofs
    trees: _Layer
    tree_frame: np.ndarray  # (n, 3): centre x, y, radius
    tree_colour: np.ndarray  # (n, 3)
    footprints: _Layer  # whole buildings; index + 1 is the scene-wide building id

    def tile_transform(self, row: int, col: int) -> Affine:
        x0 = col * self.tile_size
        y0 = row * self.tile_size
        return Affine(self.dlon, 0.0, self.lon0 + x0 * self.dlon, 0.0, -self.dlat, self.lat0 - y0 * self.dlat)

    def px_to_lonlat(self, geom: Polygon) -> Polygon:
        # One global affine for every tile, so the two pieces of a building cut by a seam get
        # bit-identical seam vertices and their union is a single polygon.
        def convert(xy: np.ndarray) -> np.ndarray:
            return np.column_stack((self.lon0 + xy[:, 0] * self.dlon, self.lat0 - xy[:, 1] * self.dlat))

        return shapely.orient_polygons(shapely.transform(geom, convert))


def _degrees_per_metre(lat: float) -> tuple[float, float]:
    """Degrees of longitude and latitude per metre on the WGS84 ellipsoid at ``lat``."""
    phi = math.radians(lat)
    w = 1.0 - _WGS84_E2 * math.sin(phi) ** 2
    metres_per_deg_lat = math.pi / 180.0 * _WGS84_A * (1.0 - _WGS84_E2) / w**1.5
    metres_per_deg_lon = math.pi / 180.0 * _WGS84_A * math.cos(phi) / math.sqrt(w)
    return 1.0 / metres_per_deg_lon, 1.0 / metres_per_deg_lat


# --- Layout in metres -------------------------------------------------------------------------


@dataclass
class _Building:
    """A building in scene metres while the plan is built."""

    parts: list[Polygon]
    frames: list[tuple[float, float, float, float, float, float]]
    footprint: Polygon
    colour: Colour
    style: int
    relief: float
    height_m: float
    units: list[Polygon] = field(default_factory=list)


@dataclass
class _Road:
    line: LineString
    width: float
    angle: float


class _Planner:
    """Places roads, buildings, pools and trees in scene metres without conflicts."""

    _CELL_M = 40.0
    _FIELD_STEP_M = 4.0

    def __init__(
        self,
        rng: np.random.Generator,
        keys: np.ndarray,
        aoi: Polygon,
        tile_m: float,
    ) -> None:
        self.rng = rng
        self.keys = keys
        self.aoi = aoi.buffer(-1.0, join_style="mitre")
        shapely.prepare(self.aoi)
        self.width, self.height = aoi.bounds[2], aoi.bounds[3]
        self.tile_m = tile_m
        self.roads: list[_Road] = []
        self.keepout: Polygon | None = None
        # Sidewalks, then carriageways, then markings, so crossings look paved through.
        self.sidewalks: list[tuple[Polygon, Colour, float]] = []
        self.carriageways: list[tuple[Polygon, Colour, float]] = []
        self.markings: list[tuple[Polygon, Colour, float]] = []
        self.ground_surfaces: list[tuple[Polygon, Colour, float]] = []
        self.buildings: list[_Building] = []
        # Buildings and pools, with a coarse grid over them for neighbour queries.
        self.blockers: list[Polygon] = []
        self.blocker_building: list[int] = []  # index into buildings, -1 for a pool
        self.grid: dict[tuple[int, int], list[int]] = {}
        self.trees: list[tuple[Polygon, float, float, float, Colour, float]] = []
        self.tree_cover: dict[int, float] = {}  # blocker index -> roof area under crowns
        # Zoning fields are sampled once on a grid: they vary over tens of metres and are asked
        # for thousands of times.
        ys = np.arange(0.0, self.height + self._FIELD_STEP_M, self._FIELD_STEP_M)
        xs = np.arange(0.0, self.width + self._FIELD_STEP_M, self._FIELD_STEP_M)
        broad = 0.7 * _value_noise(keys[10], ys, xs, 160.0) + 0.3 * _value_noise(keys[11], ys, xs, 55.0)
        self._density = np.clip((broad - 0.33) / 0.27, 0.0, 1.0)
        self._commercial = _value_noise(keys[12], ys, xs, 220.0) > 0.6

    # Fields that vary smoothly across the scene.

    def _cell_of(self, x: float, y: float) -> tuple[int, int]:
        rows, cols = self._density.shape
        i = min(max(round(y / self._FIELD_STEP_M), 0), rows - 1)
        j = min(max(round(x / self._FIELD_STEP_M), 0), cols - 1)
        return i, j

    def density(self, x: float, y: float) -> float:
        """Chance that a building slot at (x, y) is built on; zero in vacant districts."""
        return float(self._density[self._cell_of(x, y)])

    def commercial(self, x: float, y: float) -> bool:
        """Whether (x, y) lies in a district of warehouses, shops and apartment blocks."""
        return bool(self._commercial[self._cell_of(x, y)])

    # Spatial bookkeeping.

    def _cells(self, bounds: Sequence[float], pad: float) -> Iterable[tuple[int, int]]:
        c = self._CELL_M
        i0, i1 = int((bounds[0] - pad) // c), int((bounds[2] + pad) // c)
        j0, j1 = int((bounds[1] - pad) // c), int((bounds[3] + pad) // c)
        return ((i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1))

    def near(self, geom: Polygon, pad: float) -> list[int]:
        found: set[int] = set()
        for cell in self._cells(geom.bounds, pad):
            found.update(self.grid.get(cell, ()))
        return sorted(found)

    def _add_blocker(self, geom: Polygon, building: int) -> None:
        self.blockers.append(geom)
        self.blocker_building.append(building)
        for cell in self._cells(geom.bounds, 0.0):
            self.grid.setdefault(cell, []).append(len(self.blockers) - 1)

    def free(self, geom: Polygon, gap: float) -> bool:
        """Whether ``geom`` is inside the AOI, off the roads and ``gap`` from buildings and pools."""
        if not self.aoi.contains(geom):
            return False
        if self.keepout is not None and self.keepout.intersects(geom):
            return False
        near = self.near(geom, gap)
        others = np.array([self.blockers[i] for i in near], dtype=object)
        return not (near and shapely.dwithin(geom, others, gap).any())

    def seams_ok(self, geom: Polygon) -> bool:
        """Whether every tile's piece of ``geom`` is big enough to be labelled and seen."""
        minx, miny, maxx, maxy = geom.bounds
        t = self.tile_m
        c0, c1 = int(minx // t), int(maxx // t)
        r0, r1 = int(miny // t), int(maxy // t)
        if c0 == c1 and r0 == r1:
            return True
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                piece = geom.intersection(box(c * t, r * t, (c + 1) * t, (r + 1) * t))
                for part in shapely.get_parts(piece):
                    if not isinstance(part, Polygon) or part.area == 0:
                        continue
                    px0, py0, px1, py1 = part.bounds
                    if (
                        part.area < _MIN_PIECE_AREA_M2
                        or px1 - px0 < _MIN_PIECE_EXTENT_M
                        or py1 - py0 < _MIN_PIECE_EXTENT_M
                    ):
                        return False
        return True

    def crosses_seam(self, geom: Polygon) -> bool:
        minx, miny, maxx, maxy = geom.bounds
        t = self.tile_m
        return int(minx // t) != int(maxx // t) or int(miny // t) != int(maxy // t)

    # Roads.

    def lay_roads(self) -> None:
        """A rotated street grid with some streets left out, plus perhaps one diagonal avenue."""
        rng = self.rng
        w, h = self.width, self.height
        centre = np.array([w / 2, h / 2])
        reach = math.hypot(w, h)
        # Most real street grids here run north-south; some scenes get a rotated one.
        theta = rng.normal(0.0, 0.04) if rng.random() < 0.6 else rng.uniform(0.0, math.pi / 2)
        angles = [theta, theta + math.pi / 2]
        lines: list[tuple[LineString, float]] = []
        for angle in angles:
            d = np.array([math.cos(angle), math.sin(angle)])
            n = np.array([-d[1], d[0]])
            spacing = rng.uniform(85.0, 170.0)
            t = -reach / 2 + rng.uniform(0.0, spacing)
            while t < reach / 2:
                p = centre + n * t
                lines.append((LineString([p - d * reach, p + d * reach]), angle))
                t += spacing * rng.uniform(0.8, 1.25)
        if rng.random() < 0.5:
            angle = rng.uniform(0.0, math.pi)
            d = np.array([math.cos(angle), math.sin(angle)])
            p = centre + rng.uniform(-0.3, 0.3, 2) * (w, h)
            lines.append((LineString([p - d * reach, p + d * reach]), angle))
        scene_box = box(-20.0, -20.0, w + 20.0, h + 20.0)
        kept = [(line, a) for line, a in lines if line.intersects(box(0, 0, w, h))]
        # Leaving out some streets makes large blocks and open land, but keep at least one.
        drop = rng.random(len(kept)) < 0.2
        if kept:
            drop[rng.integers(len(kept))] = False
        keepouts = []
        for (line, angle), dropped in zip(kept, drop, strict=True):
            if dropped:
                continue
            clipped = line.intersection(scene_box)
            width = rng.uniform(6.0, 12.0)
            self.roads.append(_Road(clipped, width, angle))
            kind = _weighted(rng, (0.5, 0.3, 0.2))
            colour = (_ASPHALT_DARK, _ASPHALT_AGED, _CONCRETE)[kind]
            self.carriageways.append((clipped.buffer(width / 2, cap_style="flat"), colour, 0.12))
            walk = rng.uniform(1.5, 2.2) if rng.random() < 0.6 else 0.0
            if walk:
                edge = clipped.buffer(width / 2 + walk, cap_style="flat")
                self.sidewalks.append((edge, _CONCRETE, 0.05))
            if kind != 2 and width > 8.0:
                self.markings.extend(self._centre_dashes(clipped, colour_index=kind))
            keepouts.append(clipped.buffer(width / 2 + walk + 2.0, cap_style="flat"))
        self.keepout = shapely.union_all(keepouts)
        shapely.prepare(self.keepout)

    def _centre_dashes(self, line: LineString, colour_index: int) -> list[tuple[Polygon, Colour, float]]:
        colour = _MARKING_YELLOW if colour_index == 0 and self.rng.random() < 0.5 else _MARKING_WHITE
        dashes = []
        s = self.rng.uniform(0.0, 9.0)
        while s + 3.0 < line.length:
            dash = ops.substring(line, s, s + 3.0)
            dashes.append((dash.buffer(0.08, cap_style="flat"), colour, 0.0))
            s += 9.0
        return dashes

    # Buildings.

    def place(
        self,
        kind: str,
        origin: np.ndarray,
        t: np.ndarray,
        n: np.ndarray,
        *,
        size: tuple[float, float] | None = None,
        need_seam: bool = False,
    ) -> _Building | None:
        """Try one building of ``kind`` with its front-left corner at ``origin``.

        ``t`` runs along the front and ``n`` away from it. Returns the building if it fits.
        """
        rng = self.rng
        width, depth = size if size is not None else _building_size(kind, rng)
        rects = _shape_rects(kind, width, depth, rng)
        parts = [_frame_rect(origin, t, n, r) for r in rects]
        footprint = shapely.union_all(parts)
        if not isinstance(footprint, Polygon) or not footprint.is_valid:
            return None
        footprint = footprint.simplify(1e-6)
        if need_seam and not self.crosses_seam(footprint):
            return None
        if not (self.free(footprint, _GAP_M) and self.seams_ok(footprint)):
            return None
        building = self._make(kind, parts, rects, origin, t, n, footprint)
        self._commit(building)
        if kind == "commercial":
            margin = rng.uniform(5.0, 14.0)
            lot = _frame_rect(origin, t, n, (-margin, width + margin, -margin, depth + margin))
            colour = _CONCRETE if rng.random() < 0.55 else _ASPHALT_DARK
            self.ground_surfaces.append((lot, _jitter(colour, rng, 0.1), 0.1))
        return building

    def place_row(self, origin: np.ndarray, t: np.ndarray, n: np.ndarray) -> int:
        """Row houses: units that share side walls exactly. Returns the length along the front."""
        rng = self.rng
        count = int(rng.integers(3, 8))
        depth = rng.uniform(9.0, 14.0)
        edges = np.concatenate(([0.0], np.cumsum(rng.uniform(5.0, 8.0, count))))
        # Units sharing a wall are built from the same edge values, so the shared corners are
        # bit-identical and the units touch without overlapping.
        units = [(float(a), float(b), 0.0, depth) for a, b in itertools.pairwise(edges)]
        polys = [_frame_rect(origin, t, n, r) for r in units]
        if not all(self.free(p, _GAP_M) and self.seams_ok(p) for p in polys):
            return 0
        colour = _pick(_HOUSE_ROOFS, rng)
        style = _HIP if rng.random() < 0.5 else _GABLE
        height = rng.uniform(5.0, 8.0)
        for rect, poly in zip(units, polys, strict=True):
            tint = _jitter(colour, rng, 0.05)
            building = _Building(
                parts=[poly],
                frames=[_part_frame(origin, t, n, rect)],
                footprint=poly,
                colour=tint,
                style=style,
                relief=rng.uniform(0.12, 0.22),
                height_m=height,
            )
            self._commit(building)
        return len(units)

    def _make(
        self,
        kind: str,
        parts: list[Polygon],
        rects: list[Rect],
        origin: np.ndarray,
        t: np.ndarray,
        n: np.ndarray,
        footprint: Polygon,
    ) -> _Building:
        rng = self.rng
        if kind == "commercial":
            colour, style = _pick(_COMMERCIAL_ROOFS, rng), _FLAT
            height = rng.uniform(5.0, 12.0)
        elif kind == "shed":
            colour = _pick(_SHED_ROOFS, rng)
            style = _GABLE if rng.random() < 0.5 else _FLAT
            height = rng.uniform(2.2, 3.2)
        elif kind == "apartment":
            colour = _pick(_HOUSE_ROOFS if rng.random() < 0.6 else _COMMERCIAL_ROOFS, rng)
            style = _FLAT if rng.random() < 0.4 else _GABLE
            height = rng.uniform(7.0, 14.0)
        else:
            colour = _pick(_HOUSE_ROOFS, rng)
            style = (_FLAT, _GABLE, _HIP)[_weighted(rng, (0.2, 0.35, 0.45))]
            height = rng.uniform(3.0, 7.0)
        building = _Building(
            parts=parts,
            frames=[_part_frame(origin, t, n, r) for r in rects],
            footprint=footprint,
            colour=_jitter(colour, rng, 0.08),
            style=style,
            relief=rng.uniform(0.03, 0.08) if style == _FLAT else rng.uniform(0.12, 0.25),
            height_m=height,
        )
        if style == _FLAT and footprint.area > 300.0:
            building.units = self._roof_units(footprint, rects, origin, t, n)
        return building

    def _roof_units(
        self, footprint: Polygon, rects: list[Rect], origin: np.ndarray, t: np.ndarray, n: np.ndarray
    ) -> list[Polygon]:
        rng = self.rng
        inner = footprint.buffer(-1.5, join_style="mitre")
        units = []
        for _ in range(int(min(12, footprint.area // 250))):
            u0, u1, v0, v1 = rects[int(rng.integers(len(rects)))]
            du, dv = rng.uniform(1.2, 3.5, 2)
            u = rng.uniform(u0, max(u0, u1 - du))
            v = rng.uniform(v0, max(v0, v1 - dv))
            unit = _frame_rect(origin, t, n, (u, u + du, v, v + dv))
            if inner.contains(unit):
                units.append(unit)
        return units

    def _commit(self, building: _Building) -> None:
        self.buildings.append(building)
        self._add_blocker(building.footprint, len(self.buildings) - 1)

    def add_pool(self, origin: np.ndarray, t: np.ndarray, n: np.ndarray, rect: Rect) -> None:
        pool = _frame_rect(origin, t, n, rect)
        if self.free(pool, 0.8):
            self.ground_surfaces.append((pool, _jitter(_POOL, self.rng, 0.05), 0.03))
            self._add_blocker(pool, -1)

    def add_tree(self, x: float, y: float, radius: float, rng: np.random.Generator) -> None:
        """A tree crown at (x, y) unless it would stand on a building or hide too much of a roof."""
        angles = np.linspace(0.0, 2 * math.pi, 17)[:-1]
        radii = radius * (1.0 + rng.uniform(-0.15, 0.15, angles.size))
        crown = Polygon(np.column_stack((x + radii * np.cos(angles), y + radii * np.sin(angles))))
        trunk = shapely.Point(x, y)
        hidden = {}
        for i in self.near(crown, 0.0):
            other = self.blockers[i]
            if self.blocker_building[i] < 0:
                if crown.intersects(other):
                    return
                continue
            # Trees grow beside buildings and overhang their eaves, never out of a roof.
            if shapely.dwithin(trunk, other, 0.4 * radius):
                return
            hidden[i] = self.tree_cover.get(i, 0.0) + crown.intersection(other).area
            if hidden[i] > _MAX_TREE_COVER * other.area:
                return
        self.tree_cover.update(hidden)
        self.trees.append((crown, x, y, radius, _jitter(_tree_colour(rng), rng, 0.1), rng.uniform(4.0, 10.0)))


def _weighted(rng: np.random.Generator, weights: Sequence[float]) -> int:
    """An index drawn with probability proportional to ``weights``."""
    # Generator.choice with p= costs tens of microseconds, and layout draws thousands.
    x = rng.random() * sum(weights)
    for i, w in enumerate(weights):
        x -= w
        if x < 0.0:
            return i
    return len(weights) - 1


def _pick(palette: tuple[tuple[Colour, float], ...], rng: np.random.Generator) -> Colour:
    return palette[_weighted(rng, [w for _, w in palette])][0]


def _jitter(colour: Colour, rng: np.random.Generator, amount: float) -> Colour:
    scale = rng.uniform(1.0 - amount, 1.0 + amount)
    c = np.clip(np.array(colour) * scale + rng.uniform(-0.02, 0.02, 3), 0.03, 1.0)
    return (float(c[0]), float(c[1]), float(c[2]))


def _tree_colour(rng: np.random.Generator) -> Colour:
    return ((0.13, 0.20, 0.10), (0.17, 0.24, 0.12), (0.22, 0.25, 0.14))[int(rng.integers(3))]


def _building_size(kind: str, rng: np.random.Generator) -> tuple[float, float]:
    """Front width and depth in metres; every building is 4 m to 60 m across."""
    if kind == "shed":
        return rng.uniform(4.0, 7.0), rng.uniform(4.0, 7.0)
    if kind == "commercial":
        return rng.uniform(25.0, 60.0), rng.uniform(18.0, 45.0)
    if kind == "apartment":
        return rng.uniform(28.0, 48.0), rng.uniform(11.0, 17.0)
    return rng.uniform(9.0, 20.0), rng.uniform(8.0, 16.0)


def _shape_rects(kind: str, width: float, depth: float, rng: np.random.Generator) -> list[Rect]:
    """Rectangles in a ``width`` x ``depth`` local frame whose union is a building outline.

    Wings come first and the main bar last, so the bar's roof is drawn over the junction.
    """
    if kind == "shed":
        return [(0.0, width, 0.0, depth)]
    weights = {
        "house": (0.45, 0.35, 0.12, 0.08),
        "apartment": (0.5, 0.2, 0.15, 0.15),
        "commercial": (0.45, 0.2, 0.15, 0.2),
    }[kind]
    shape = _weighted(rng, weights)
    bar = rng.uniform(max(4.0, 0.35 * depth), max(4.0, 0.6 * depth))
    arm = rng.uniform(max(4.0, 0.25 * width), max(4.0, 0.4 * width))
    if shape == 0 or width < 3 * 4.0 or depth < bar + 3.0:
        return [(0.0, width, 0.0, depth)]
    if shape == 1:
        rects = [(0.0, arm, 0.0, depth), (0.0, width, 0.0, bar)]
    elif shape == 2:
        mid = rng.uniform(arm / 2, width - arm / 2) if kind != "apartment" else width / 2
        lo = min(max(mid - arm / 2, 0.0), width - arm)
        rects = [(lo, lo + arm, 0.0, depth), (0.0, width, 0.0, bar)]
    else:
        arm = min(arm, width / 3)
        rects = [(0.0, arm, 0.0, depth), (width - arm, width, 0.0, depth), (0.0, width, 0.0, bar)]
    # Mirroring in u and v gives every orientation of the L, T and U from one recipe.
    if rng.random() < 0.5:
        rects = [(width - u1, width - u0, v0, v1) for u0, u1, v0, v1 in rects]
    if rng.random() < 0.5:
        rects = [(u0, u1, depth - v1, depth - v0) for u0, u1, v0, v1 in rects]
    return rects


def _frame_rect(origin: np.ndarray, t: np.ndarray, n: np.ndarray, rect: Rect) -> Polygon:
    u0, u1, v0, v1 = rect
    u = np.array([u0, u1, u1, u0])
    v = np.array([v0, v0, v1, v1])
    return Polygon(origin + u[:, None] * t + v[:, None] * n)


def _part_frame(
    origin: np.ndarray, t: np.ndarray, n: np.ndarray, rect: Rect
) -> tuple[float, float, float, float, float, float]:
    """Centre, ridge direction, half length along the ridge and half width of a roof part."""
    u0, u1, v0, v1 = rect
    centre = origin + (u0 + u1) / 2 * t + (v0 + v1) / 2 * n
    half_u, half_v = (u1 - u0) / 2, (v1 - v0) / 2
    ridge, half_len, half_wid = (t, half_u, half_v) if half_u >= half_v else (n, half_v, half_u)
    return (centre[0], centre[1], ridge[0], ridge[1], half_len, half_wid)


def _lay_buildings(plan: _Planner) -> None:
    """Houses, row houses and commercial blocks along streets, then infill, sheds and pools."""
    rng = plan.rng
    for road in plan.roads:
        d = np.array([math.cos(road.angle), math.sin(road.angle)])
        start = np.array(road.line.coords[0])
        for side in (1.0, -1.0):
            n = side * np.array([-d[1], d[0]])
            s = rng.uniform(0.0, 10.0)
            while s < road.line.length:
                edge = start + d * s + n * (road.width / 2 + 2.5)
                if rng.random() > plan.density(*edge):
                    s += rng.uniform(6.0, 20.0)
                    continue
                s += _frontage(plan, edge, d, n)
    # Infill away from streets, facing the nearest street or turned at random.
    w, h = plan.width, plan.height
    for _ in range(int(w * h / 180.0)):
        x, y = rng.uniform(0.0, w), rng.uniform(0.0, h)
        if rng.random() > plan.density(x, y):
            continue
        kind = _kind(plan, x, y)
        t, n = _orientation(plan, x, y)
        width, depth = _building_size(kind, rng)
        plan.place(kind, np.array([x, y]) - t * width / 2 - n * depth / 2, t, n, size=(width, depth))


def _kind(plan: _Planner, x: float, y: float) -> str:
    rng = plan.rng
    if plan.commercial(x, y):
        return ("commercial", "apartment", "shed")[_weighted(rng, (0.6, 0.3, 0.1))]
    return ("house", "shed", "apartment")[_weighted(rng, (0.82, 0.12, 0.06))]


def _orientation(plan: _Planner, x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
    """Axes for a building at (x, y): mostly square to the nearest street, sometimes not."""
    rng = plan.rng
    if rng.random() < 0.2 or not plan.roads:
        angle = rng.uniform(0.0, 2 * math.pi)
    else:
        lines = np.array([r.line for r in plan.roads], dtype=object)
        nearest = int(np.argmin(shapely.distance(shapely.Point(x, y), lines)))
        angle = plan.roads[nearest].angle + rng.integers(4) * math.pi / 2
    t = np.array([math.cos(angle), math.sin(angle)])
    return t, np.array([-t[1], t[0]])


def _frontage(plan: _Planner, edge: np.ndarray, d: np.ndarray, n: np.ndarray) -> float:
    """Build one lot facing the street at ``edge``; returns how far to move along the street."""
    rng = plan.rng
    setback = rng.uniform(1.0, 6.0)
    origin = edge + n * setback
    kind = _kind(plan, *edge)
    if kind == "house" and rng.random() < 0.18:
        length = plan.place_row(origin, d, n)
        return length + rng.uniform(2.0, 6.0) if length else rng.uniform(2.0, 5.0)
    width, depth = _building_size(kind, rng)
    building = plan.place(kind, origin, d, n, size=(width, depth))
    if building is None:
        return rng.uniform(2.0, 5.0)
    if kind == "house":
        lane = rng.uniform(3.0, 5.5)
        at = rng.uniform(0.0, width - lane)
        plan.ground_surfaces.append(
            (
                _frame_rect(origin, d, n, (at, at + lane, -setback - 2.5, 0.0)),
                _jitter(_CONCRETE, rng, 0.08),
                0.05,
            )
        )
        back = depth
        if rng.random() < 0.5:
            # A patio against the back wall: bright paving next to the roof, but no building.
            deep, wide = rng.uniform(2.5, 5.0), rng.uniform(4.0, min(10.0, width))
            at = rng.uniform(0.0, width - wide)
            paving = _CONCRETE if rng.random() < 0.6 else _PAVERS
            patio = _frame_rect(origin, d, n, (at, at + wide, depth, depth + deep))
            plan.ground_surfaces.append((patio, _jitter(paving, rng, 0.08), 0.06))
            back += deep
        if rng.random() < 0.3:
            pw, pd = rng.uniform(3.5, 5.0), rng.uniform(6.0, 9.0)
            at = rng.uniform(0.0, max(0.0, width - pd))
            plan.add_pool(origin, d, n, (at, at + pd, back + 1.5, back + 1.5 + pw))
        if rng.random() < 0.2:
            plan.place("shed", origin + n * (depth + rng.uniform(3.0, 9.0)), d, n)
    return width + rng.uniform(1.5, 6.0)


def _lay_guarantees(plan: _Planner) -> None:
    """Make sure the scene has seam-crossing buildings, a 4 m shed and a building over 50 m."""
    rng = plan.rng
    w, h, tile = plan.width, plan.height, plan.tile_m
    # One building across every seam line at least, so tests and models see cut buildings.
    seams = [("x", k * tile) for k in range(1, round(w / tile))]
    seams += [("y", k * tile) for k in range(1, round(h / tile))]
    for axis, at in seams:
        if any(_crosses(b.footprint, axis, at) for b in plan.buildings):
            continue
        for _ in range(300):
            along = rng.uniform(0.0, h if axis == "x" else w)
            x, y = (at, along) if axis == "x" else (along, at)
            kind = ("house", "commercial", "shed")[_weighted(rng, (0.6, 0.3, 0.1))]
            t, n = _orientation(plan, x, y)
            width, depth = _building_size(kind, rng)
            origin = np.array([x, y]) - t * width / 2 - n * depth / 2
            if plan.place(kind, origin, t, n, size=(width, depth), need_seam=True):
                break
    extents = [_extent(b.footprint) for b in plan.buildings]
    wanted = []
    if not any(short <= 4.05 for short, _ in extents):
        wanted.append(("shed", (4.0, rng.uniform(4.0, 6.0))))
    if not any(long >= 50.0 for _, long in extents):
        wanted.append(("commercial", (rng.uniform(52.0, 60.0), rng.uniform(20.0, 35.0))))
    for kind, size in wanted:
        for _ in range(400):
            x, y = rng.uniform(0.0, w), rng.uniform(0.0, h)
            t, n = _orientation(plan, x, y)
            origin = np.array([x, y]) - t * size[0] / 2 - n * size[1] / 2
            if plan.place(kind, origin, t, n, size=size):
                break


def _crosses(geom: Polygon, axis: str, at: float) -> bool:
    minx, miny, maxx, maxy = geom.bounds
    return minx < at < maxx if axis == "x" else miny < at < maxy


def _extent(geom: Polygon) -> tuple[float, float]:
    """Short and long side of the minimum rotated rectangle around ``geom``."""
    ring = np.array(shapely.minimum_rotated_rectangle(geom).exterior.coords)
    sides = np.hypot(*np.diff(ring[:3], axis=0).T)
    return float(sides.min()), float(sides.max())


def _lay_trees(plan: _Planner, rng: np.random.Generator) -> None:
    """Street trees on the verges and trees in yards, more of them where people live."""
    for road in plan.roads:
        if rng.random() < 0.35:
            continue
        d = np.array([math.cos(road.angle), math.sin(road.angle)])
        start = np.array(road.line.coords[0])
        step = rng.uniform(8.0, 20.0)
        for side in (1.0, -1.0):
            n = side * np.array([-d[1], d[0]])
            s = rng.uniform(0.0, step)
            while s < road.line.length:
                p = start + d * s + n * (road.width / 2 + rng.uniform(0.5, 2.5))
                if rng.random() < 0.2 + 0.6 * plan.density(*p):
                    plan.add_tree(p[0], p[1], rng.uniform(1.5, 3.5), rng)
                s += step * rng.uniform(0.8, 1.2)
    w, h = plan.width, plan.height
    for _ in range(int(w * h / 260.0)):
        x, y = rng.uniform(0.0, w), rng.uniform(0.0, h)
        if rng.random() < 0.15 + 0.5 * plan.density(x, y):
            plan.add_tree(x, y, rng.uniform(1.5, 5.0), rng)


def _drop_overlaps(buildings: list[_Building]) -> list[_Building]:
    """Keep the earlier of any two buildings that overlap by more than a rounding error."""
    footprints = np.array([b.footprint for b in buildings], dtype=object)
    tree = shapely.STRtree(footprints)
    left, right = tree.query(footprints, predicate="intersects")
    pairs = left < right
    overlap = shapely.area(shapely.intersection(footprints[left[pairs]], footprints[right[pairs]]))
    dropped = set(right[pairs][overlap > 1e-6].tolist())
    return [b for i, b in enumerate(buildings) if i not in dropped and b.footprint.is_valid]


def _shadow(parts: list[Polygon], offset: np.ndarray) -> Polygon:
    """Ground shadow of a prism: each convex part swept along the shadow direction."""
    moved = [affinity.translate(p, *offset) for p in parts]
    return shapely.union_all(
        [shapely.convex_hull(shapely.union(a, b)) for a, b in zip(parts, moved, strict=True)]
    )


def _tree_shadow(crown: Polygon, offset: np.ndarray) -> Polygon:
    """Shadow of a crown held up by its trunk: it starts under the tree and ends a height away."""
    near = affinity.translate(crown, *(0.35 * offset))
    far = affinity.translate(crown, *offset)
    return shapely.convex_hull(shapely.union(near, far))


def _build_scene(
    seed: int,
    tiles: int,
    cols: int,
    tile_size: int,
    gsd_m: float,
    origin_lonlat: tuple[float, float],
) -> _Scene:
    """Lay the scene out in metres, then turn it into the pixel layers that tiles render."""
    master = np.random.default_rng(seed)
    # Separate streams, so that a change to how trees are placed does not move every building.
    layout_rng, tree_rng, look_rng = master.spawn(3)
    # Keys of hashed noise lattices: 0-9 and 13 texture the ground and surfaces, 10-12 zone the
    # layout, 15 seeds sensor noise.
    keys = master.integers(0, 2**63, size=16, dtype=np.int64).astype(np.uint64)
    tile_m = tile_size * gsd_m
    aoi = shapely.union_all(
        [
            box(c * tile_m, r * tile_m, (c + 1) * tile_m, (r + 1) * tile_m)
            for r, c in (divmod(i, cols) for i in range(tiles))
        ]
    )
    plan = _Planner(layout_rng, keys, aoi, tile_m)
    plan.lay_roads()
    _lay_buildings(plan)
    _lay_guarantees(plan)
    buildings = _drop_overlaps(plan.buildings)
    _lay_trees(plan, tree_rng)

    # The sun stands in the south-east to south, as for a late-morning WorldView pass.
    azimuth = math.radians(look_rng.uniform(120.0, 170.0))
    elevation = math.radians(look_rng.uniform(45.0, 65.0))
    sun = np.array([math.sin(azimuth), -math.cos(azimuth)])
    shadow_per_m = -sun / math.tan(elevation)

    scale = 1.0 / gsd_m

    def px(geom: Polygon) -> Polygon:
        return shapely.transform(geom, lambda xy: xy * scale)

    shadows = [_shadow(b.parts, shadow_per_m * b.height_m) for b in buildings]
    shadows += [_tree_shadow(c, shadow_per_m * ht) for c, *_, ht in plan.trees]
    surfaces = plan.ground_surfaces + plan.sidewalks + plan.carriageways + plan.markings
    frames = np.array([f for b in buildings for f in b.frames], dtype=float).reshape(-1, 6)
    frames[:, [0, 1, 4, 5]] *= scale
    tree_frame = np.array([(x, y, r) for _, x, y, r, *_ in plan.trees], dtype=float).reshape(-1, 3)
    dlon, dlat = _degrees_per_metre(origin_lonlat[1])
    vegetation = look_rng.uniform(0.12, 0.45)
    soil_bright = np.array([0.70, 0.64, 0.54]) * look_rng.uniform(0.9, 1.05)
    return _Scene(
        tile_size=tile_size,
        gsd_m=gsd_m,
        lon0=origin_lonlat[0],
        lat0=origin_lonlat[1],
        dlon=dlon * gsd_m,
        dlat=dlat * gsd_m,
        keys=keys,
        sun=sun,
        soil=np.array([[0.40, 0.35, 0.29], soil_bright], dtype=np.float32),
        grass=(np.array([0.20, 0.29, 0.13]) * look_rng.uniform(0.85, 1.15)).astype(np.float32),
        vegetation=vegetation,
        surfaces=_Layer.of([px(s) for s, _, _ in surfaces]),
        surface_colour=np.array([c for _, c, _ in surfaces], dtype=np.float32).reshape(-1, 3),
        surface_grain=np.array([g for _, _, g in surfaces], dtype=np.float32),
        shadows=_Layer.of([px(s) for s in shadows]),
        parts=_Layer.of([px(p) for b in buildings for p in b.parts]),
        part_building=np.array([i for i, b in enumerate(buildings) for _ in b.parts], dtype=int),
        part_frame=frames,
        roof_colour=np.array([b.colour for b in buildings], dtype=np.float32).reshape(-1, 3),
        roof_style=np.array([b.style for b in buildings], dtype=int),
        roof_relief=np.array([b.relief for b in buildings], dtype=float),
        roof_units=_Layer.of([px(u) for b in buildings for u in b.units]),
        trees=_Layer.of([px(c) for c, *_ in plan.trees]),
        tree_frame=tree_frame * scale,
        tree_colour=np.array([c for *_, c, _ in plan.trees], dtype=np.float32).reshape(-1, 3),
        footprints=_Layer.of([px(b.footprint) for b in buildings]),
    )


# --- Rendering --------------------------------------------------------------------------------


def _hash_unit(key: np.uint64, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Uniform values in [0, 1) that depend only on ``key`` and the integer lattice point.

    Any window of the scene regenerates exactly the lattice values its neighbours use, which
    is what makes the texture continuous across tile seams.
    """
    z = (iy.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (
        ix.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    )
    z ^= key
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _interpolation(coords: np.ndarray, cell: float) -> tuple[np.ndarray, int]:
    """Matrix that interpolates a lattice of spacing ``cell`` at ``coords``, and its first index."""
    g = coords / cell
    i0 = np.floor(g).astype(np.int64)
    f = g - i0
    f = f * f * (3.0 - 2.0 * f)  # smoothstep hides the lattice's grid lines
    lo = int(i0.min())
    weights = np.zeros((coords.size, int(i0.max()) - lo + 2), dtype=np.float32)
    rows = np.arange(coords.size)
    weights[rows, i0 - lo] = 1.0 - f
    weights[rows, i0 - lo + 1] = f
    return weights, lo


def _value_noise(key: np.uint64, ys: np.ndarray, xs: np.ndarray, cell: float) -> np.ndarray:
    """Value noise in [0, 1) with lattice spacing ``cell`` on the grid ``ys`` x ``xs``."""
    wy, y0 = _interpolation(ys, cell)
    wx, x0 = _interpolation(xs, cell)
    lattice = _hash_unit(
        key,
        np.arange(y0, y0 + wy.shape[1])[:, None],
        np.arange(x0, x0 + wx.shape[1])[None, :],
    ).astype(np.float32)
    return wy @ lattice @ wx.T


def _smoothstep(lo: float, hi: float, v: np.ndarray) -> np.ndarray:
    t = np.clip((v - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class _Window:
    """A window of global pixel coordinates with the noise fields every layer shares."""

    x0: int
    y0: int
    w: int
    h: int
    xs: np.ndarray  # pixel-centre x of each column
    ys: np.ndarray  # pixel-centre y of each row
    grain: np.ndarray  # pixel-scale grit
    speckle: np.ndarray  # metre-scale clumps: lawn tufts, leaves
    stain: np.ndarray  # patches of wear and dirt a few metres across, around 1

    def ids(self, layer: _Layer) -> np.ndarray:
        """Raster of 1 + layer index; later items are drawn over earlier ones."""
        chosen = layer.select(self.x0, self.y0, self.x0 + self.w, self.y0 + self.h)
        if chosen.size == 0:
            return np.zeros((self.h, self.w), dtype=np.int32)
        return rasterize(
            ((layer.geoms[i], int(i) + 1) for i in chosen),
            out_shape=(self.h, self.w),
            transform=Affine.translation(self.x0, self.y0),
            fill=0,
            dtype="int32",
        )


def _noise_field(scene: _Scene, key: int, ys: np.ndarray, xs: np.ndarray, cell_m: float) -> np.ndarray:
    # Cells finer than ~1 pixel would alias, so the finest field is pixel-scale grit.
    return _value_noise(scene.keys[key], ys, xs, max(cell_m / scene.gsd_m, 1.2))


def _render_window(scene: _Scene, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """The scene's pixels in a window of global pixel coordinates, as 11-bit uint16 RGB."""
    pad = 2  # room for the blur, so that edge pixels see their neighbours in the next tile
    ys = y0 - pad + 0.5 + np.arange(h + 2 * pad, dtype=np.float64)
    xs = x0 - pad + 0.5 + np.arange(w + 2 * pad, dtype=np.float64)
    win = _Window(
        x0=x0 - pad,
        y0=y0 - pad,
        w=w + 2 * pad,
        h=h + 2 * pad,
        xs=xs,
        ys=ys,
        grain=_noise_field(scene, 5, ys, xs, 0.0),
        speckle=_noise_field(scene, 6, ys, xs, 1.0),
        stain=0.9 + 0.2 * _noise_field(scene, 7, ys, xs, 6.0),
    )
    img = _ground(scene, win)
    _paint_surfaces(scene, win, img)
    img[:, win.ids(scene.shadows) > 0] *= np.array([0.45, 0.48, 0.56], dtype=np.float32)[:, None]
    _paint_roofs(scene, win, img)
    _paint_trees(scene, win, img)
    img = _blur(img)[:, pad:-pad, pad:-pad]
    # Sensor noise differs between tiles as it would between two captures; it is drawn from
    # the scene seed and the tile's position, so it is still reproducible.
    rng = np.random.default_rng([int(scene.keys[15]), x0, y0])
    dn = 70.0 + img * np.array([1900.0, 1880.0, 1800.0], dtype=np.float32)[:, None, None]
    dn += rng.standard_normal(dn.shape, dtype=np.float32) * (6.0 + 0.012 * dn)
    return np.clip(np.rint(dn), 1, 2047).astype(np.uint16)


def _ground(scene: _Scene, win: _Window) -> np.ndarray:
    """Bare soil in patches of lighter and darker tone, with lawns and scrub in places."""
    ys, xs = win.ys, win.xs
    broad = 0.6 * _noise_field(scene, 0, ys, xs, 140.0) + 0.4 * _noise_field(scene, 1, ys, xs, 35.0)
    tone = (
        0.5 * _noise_field(scene, 2, ys, xs, 60.0)
        + 0.3 * _noise_field(scene, 3, ys, xs, 12.0)
        + 0.2 * _noise_field(scene, 4, ys, xs, 3.0)
    )
    tone = _smoothstep(0.2, 0.8, tone)
    # Lawns and scrub are the parts of a broad field above a level chosen for the wanted share
    # (the field is roughly normal around 0.5 with spread 0.155); finer noise frays their edges.
    level = 0.5 + 0.45 * (0.5 - scene.vegetation)
    patch = broad + 0.12 * (_noise_field(scene, 8, ys, xs, 4.0) - 0.5) + 0.04 * (win.speckle - 0.5)
    veg = _smoothstep(level - 0.03, level + 0.03, patch)
    dark, bright = scene.soil[0][:, None, None], scene.soil[1][:, None, None]
    soil = (dark + (bright - dark) * tone) * (0.9 + 0.2 * win.grain)
    lawn = 0.6 * _noise_field(scene, 9, ys, xs, 6.0) + 0.4 * win.speckle
    dry = _smoothstep(0.35, 0.75, _noise_field(scene, 13, ys, xs, 18.0))
    green, straw = scene.grass[:, None, None], np.array(_STRAW, dtype=np.float32)[:, None, None]
    grass = (green + (straw - green) * dry) * (0.7 + 0.6 * lawn) * (0.92 + 0.16 * win.grain)
    return soil * (1.0 - veg) + grass * veg


def _paint_surfaces(scene: _Scene, win: _Window, img: np.ndarray) -> None:
    """Lots, driveways, patios, pools, roads and markings, worn in patches."""
    ids = win.ids(scene.surfaces)
    m = ids > 0
    k = ids[m] - 1
    texture = win.stain[m] * (1.0 + scene.surface_grain[k] * (win.grain[m] - 0.5) * 2.0)
    img[:, m] = (scene.surface_colour[k] * texture[:, None]).T


def _paint_roofs(scene: _Scene, win: _Window, img: np.ndarray) -> None:
    """Roofs with sunlit and shaded slopes, eaves or parapets, and plant on flat roofs."""
    parts = win.ids(scene.parts)
    m = parts > 0
    rr, cc = np.nonzero(m)
    p = parts[m] - 1
    b = scene.part_building[p]
    cx, cy, ax, ay, half_len, half_wid = scene.part_frame[p].T
    dx, dy = win.xs[cc] - cx, win.ys[rr] - cy
    along = dx * ax + dy * ay
    across = dy * ax - dx * ay
    sun_along = scene.sun[0] * ax + scene.sun[1] * ay
    sun_across = scene.sun[1] * ax - scene.sun[0] * ay
    style = scene.roof_style[b]
    relief = scene.roof_relief[b]
    # Each slope is lit by how much it faces the sun; a hip roof's end slopes take over where
    # the distance from the ridge's end exceeds the distance from the eaves.
    end = (style == _HIP) & (np.abs(along) - (half_len - half_wid) > np.abs(across))
    facing = np.where(end, np.sign(along) * sun_along, np.sign(across) * sun_across)
    # Flat roofs get a faint gradient instead: ponding, dirt and the view angle.
    flat = np.clip(across / np.maximum(half_wid, 1.0), -1.0, 1.0)
    factor = 1.0 + relief * np.where(style == _FLAT, flat, facing)
    factor *= np.where((style != _FLAT) & (np.abs(across) < 0.6) & ~end, 1.08, 1.0)
    # Outlines: parapets catch light, eaves of pitched roofs are in their own shade.
    building = np.zeros_like(parts)
    building[m] = b + 1
    factor *= np.where(_edges(building)[m], np.where(style == _FLAT, 1.12, 0.82), 1.0)
    factor *= win.stain[m] * (0.95 + 0.1 * win.grain[m])
    img[:, m] = (scene.roof_colour[b] * factor[:, None].astype(np.float32)).T

    m = win.ids(scene.roof_units) > 0
    img[:, m] = np.array(_ROOF_UNIT, dtype=np.float32)[:, None] * (0.9 + 0.2 * win.grain[m])


def _paint_trees(scene: _Scene, win: _Window, img: np.ndarray) -> None:
    """Crowns lit on the sun side, with clumps of leaves."""
    crowns = win.ids(scene.trees)
    m = crowns > 0
    rr, cc = np.nonzero(m)
    k = crowns[m] - 1
    cx, cy, radius = scene.tree_frame[k].T
    lit = ((win.xs[cc] - cx) * scene.sun[0] + (win.ys[rr] - cy) * scene.sun[1]) / radius
    factor = (0.75 + 0.35 * np.clip(lit, -1.0, 1.0)) * (0.6 + 0.8 * win.speckle[m])
    img[:, m] = (scene.tree_colour[k] * factor[:, None].astype(np.float32)).T


def _edges(ids: np.ndarray) -> np.ndarray:
    """Pixels of a labelled region that have a 4-neighbour with another label."""
    e = np.zeros(ids.shape, dtype=bool)
    e[1:] |= ids[1:] != ids[:-1]
    e[:-1] |= ids[:-1] != ids[1:]
    e[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    e[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    return e & (ids > 0)


def _blur(img: np.ndarray) -> np.ndarray:
    """A 3x3 binomial blur, the optics' softening that real pan-sharpened tiles show."""
    out = img.copy()
    out[:, 1:-1] = 0.25 * img[:, :-2] + 0.5 * img[:, 1:-1] + 0.25 * img[:, 2:]
    tmp = out.copy()
    out[:, :, 1:-1] = 0.25 * tmp[:, :, :-2] + 0.5 * tmp[:, :, 1:-1] + 0.25 * tmp[:, :, 2:]
    return out


def _geotiff_bytes(pixels: np.ndarray, transform: Affine, tags: dict[str, str]) -> bytes:
    """A tiled, DEFLATE-compressed EPSG:4326 GeoTIFF of ``pixels`` with no time stamps."""
    count, height, width = pixels.shape
    with MemoryFile() as memory:
        with memory.open(
            driver="GTiff",
            width=width,
            height=height,
            count=count,
            dtype="uint16",
            crs="EPSG:4326",
            transform=transform,
            compress="DEFLATE",
            # Sensor noise makes higher levels barely smaller and much slower.
            zlevel=1,
            predictor=2,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            photometric="RGB",
        ) as dst:
            dst.write(pixels)
            dst.update_tags(**tags)
        return memory.read()


# --- Labels -----------------------------------------------------------------------------------


def _tile_labels(
    scene: _Scene, row: int, col: int, image_id: str
) -> tuple[bytes, list[tuple[str, int, str, str]]]:
    """A tile's GeoJSON and its rows of the solutions CSV, in the same building order."""
    offset = np.array([col * scene.tile_size, row * scene.tile_size], dtype=float)
    features = []
    rows = []
    for k, (building_id, piece, share) in enumerate(_tile_pieces(scene, row, col), start=1):
        lonlat = scene.px_to_lonlat(piece)
        features.append(_feature(lonlat, building_id, share))
        local = shapely.transform(piece, lambda xy: xy - offset)
        rows.append(
            (
                image_id,
                k,
                shapely.to_wkt(local, rounding_precision=-1),
                shapely.to_wkt(lonlat, rounding_precision=-1),
            )
        )
    if not rows:
        # Real SpaceNet-2 CSVs list an image without buildings this way.
        rows.append((image_id, -1, "POLYGON EMPTY", "POLYGON EMPTY"))
    collection = {
        "type": "FeatureCollection",
        "name": f"buildings_{image_id}",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
        "features": features,
    }
    return json.dumps(collection, separators=(",", ":")).encode(), rows


def _tile_pieces(scene: _Scene, row: int, col: int) -> list[tuple[int, Polygon, float]]:
    """Each polygon of a building inside a tile, in global pixels.

    Returns:
        ``(building id, piece, share of the whole building's area)`` in building-id order.
    """
    t = scene.tile_size
    x0, y0 = col * t, row * t
    tile = box(x0, y0, x0 + t, y0 + t)
    pieces = []
    for i in scene.footprints.select(x0, y0, x0 + t, y0 + t):
        whole = scene.footprints.geoms[i]
        for part in shapely.get_parts(whole.intersection(tile)):
            # A building that only touches the tile edge leaves a line, not a polygon.
            if isinstance(part, Polygon) and part.area > 0:
                pieces.append((int(i) + 1, part, part.area / whole.area))
    return pieces


def _feature(geom: Polygon, building_id: int, share: float) -> dict:
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
    whole["geometry"] = shapely.make_valid(shapely.buffer(shapely.buffer(whole.geometry.array, 1e-9), -1e-9))
    return whole[["building_id", "geometry"]]
