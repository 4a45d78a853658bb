"""The scene in global pixels, which tiles render and label, built from a layout in metres."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from rasterio.transform import Affine
from shapely import affinity
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from .planning import lay_out

# WGS84 ellipsoid, for metres per degree at the scene's latitude.
_WGS84_A = 6378137.0
_WGS84_E2 = 6.69437999014e-3


@dataclass(frozen=True)
class Layer:
    """Polygons in global pixel coordinates with their bounds, for picking a window's share."""

    geoms: Sequence[BaseGeometry]
    bounds: np.ndarray

    @classmethod
    def of(cls, geoms: Sequence[BaseGeometry]) -> Layer:
        """The layer of ``geoms``, with their bounds worked out once."""
        bounds = shapely.bounds(np.array(geoms, dtype=object)) if geoms else np.empty((0, 4))
        return cls(geoms, bounds.reshape(-1, 4))

    def select(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Indices of the geometries whose bounds overlap the window from (x0, y0) to (x1, y1)."""
        b = self.bounds
        return np.flatnonzero((b[:, 0] < x1) & (b[:, 2] > x0) & (b[:, 1] < y1) & (b[:, 3] > y0))


@dataclass(frozen=True)
class Scene:
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
    surfaces: Layer  # lots, driveways, pools, roads, sidewalks, markings; drawn in order
    surface_colour: np.ndarray  # (n, 3)
    surface_grain: np.ndarray  # (n,) texture strength
    shadows: Layer
    parts: Layer  # convex roof parts; their union per building is the footprint
    part_building: np.ndarray  # (n,) index into footprints
    part_frame: np.ndarray  # (n, 6): centre x, y, ridge direction x, y, half length, half width
    roof_colour: np.ndarray  # (buildings, 3)
    roof_style: np.ndarray  # (buildings,) RoofStyle values
    roof_relief: np.ndarray  # (buildings,) brightness difference between sunlit and shaded slopes
    roof_units: Layer  # rooftop plant on large flat roofs
    trees: Layer
    tree_frame: np.ndarray  # (n, 3): centre x, y, radius
    tree_colour: np.ndarray  # (n, 3)
    footprints: Layer  # whole buildings; index + 1 is the scene-wide building id

    def tile_transform(self, row: int, col: int) -> Affine:
        """The longitude/latitude transform of the tile at ``row``, ``col`` of the grid."""
        x0 = col * self.tile_size
        y0 = row * self.tile_size
        return Affine(self.dlon, 0.0, self.lon0 + x0 * self.dlon, 0.0, -self.dlat, self.lat0 - y0 * self.dlat)

    def px_to_lonlat(self, geom: Polygon) -> Polygon:
        """``geom`` from global pixels to longitude and latitude, rings oriented as GeoJSON wants."""

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


def _shadow(parts: list[Polygon], offset: np.ndarray) -> BaseGeometry:
    """Ground shadow of a prism: each convex part swept along the shadow direction."""
    moved = [affinity.translate(p, *offset) for p in parts]
    return shapely.union_all(
        [shapely.convex_hull(shapely.union(a, b)) for a, b in zip(parts, moved, strict=True)]
    )


def _tree_shadow(crown: Polygon, offset: np.ndarray) -> BaseGeometry:
    """Shadow of a crown held up by its trunk: it starts under the tree and ends a height away."""
    near = affinity.translate(crown, *(0.35 * offset))
    far = affinity.translate(crown, *offset)
    return shapely.convex_hull(shapely.union(near, far))


def build_scene(
    seed: int,
    tiles: int,
    cols: int,
    tile_size: int,
    gsd_m: float,
    origin_lonlat: tuple[float, float],
) -> Scene:
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
    layout = lay_out(layout_rng, tree_rng, keys, aoi, tile_m)
    buildings, surfaces, trees = layout.buildings, layout.surfaces, layout.trees

    # The sun stands in the south-east to south, as for a late-morning WorldView pass.
    azimuth = math.radians(look_rng.uniform(120.0, 170.0))
    elevation = math.radians(look_rng.uniform(45.0, 65.0))
    sun = np.array([math.sin(azimuth), -math.cos(azimuth)])
    shadow_per_m = -sun / math.tan(elevation)

    scale = 1.0 / gsd_m

    def px(geom: BaseGeometry) -> BaseGeometry:
        return shapely.transform(geom, lambda xy: xy * scale)

    shadows = [_shadow(b.parts, shadow_per_m * b.height_m) for b in buildings]
    shadows += [_tree_shadow(tree.crown, shadow_per_m * tree.height_m) for tree in trees]
    frames = np.array([f.as_row() for b in buildings for f in b.frames], dtype=float).reshape(-1, 6)
    frames[:, [0, 1, 4, 5]] *= scale
    tree_frame = np.array([(tree.x, tree.y, tree.radius) for tree in trees], dtype=float).reshape(-1, 3)
    dlon, dlat = _degrees_per_metre(origin_lonlat[1])
    vegetation = look_rng.uniform(0.12, 0.45)
    soil_bright = np.array([0.70, 0.64, 0.54]) * look_rng.uniform(0.9, 1.05)
    return Scene(
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
        surfaces=Layer.of([px(s.shape) for s in surfaces]),
        surface_colour=np.array([s.colour for s in surfaces], dtype=np.float32).reshape(-1, 3),
        surface_grain=np.array([s.grain for s in surfaces], dtype=np.float32),
        shadows=Layer.of([px(s) for s in shadows]),
        parts=Layer.of([px(p) for b in buildings for p in b.parts]),
        part_building=np.array([i for i, b in enumerate(buildings) for _ in b.parts], dtype=int),
        part_frame=frames,
        roof_colour=np.array([b.colour for b in buildings], dtype=np.float32).reshape(-1, 3),
        roof_style=np.array([b.style for b in buildings], dtype=int),
        roof_relief=np.array([b.relief for b in buildings], dtype=float),
        roof_units=Layer.of([px(u) for b in buildings for u in b.units]),
        trees=Layer.of([px(tree.crown) for tree in trees]),
        tree_frame=tree_frame * scale,
        tree_colour=np.array([tree.colour for tree in trees], dtype=np.float32).reshape(-1, 3),
        footprints=Layer.of([px(b.footprint) for b in buildings]),
    )
