"""The layout of a scene in metres: roads, buildings, lots, pools and trees, placed without conflicts.

Coordinates are scene metres, x east and y south from the scene's north-west corner. The planner
keeps every building inside the area of interest, off the roads, clear of other buildings and
pools, and never leaves a sliver of a building on one side of a tile seam.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
import shapely
from shapely import ops
from shapely.geometry import LineString, Polygon, box
from shapely.geometry.base import BaseGeometry

from .buildings import (
    Building,
    BuildingKind,
    BuildingSize,
    Rect,
    RoofStyle,
    building_size,
    frame_rect,
    part_frame,
    shape_rects,
)
from .noise import value_noise
from .palette import (
    ASPHALT_AGED,
    ASPHALT_DARK,
    COMMERCIAL_ROOFS,
    CONCRETE,
    HOUSE_ROOFS,
    MARKING_WHITE,
    MARKING_YELLOW,
    PAVERS,
    POOL,
    SHED_ROOFS,
    Colour,
)
from .sampling import jitter, pick, tree_colour, weighted

# Pieces of a building on either side of a seam must be at least this big, so that no tile
# gets an unlabellable sliver of a few pixels.
_MIN_PIECE_AREA_M2 = 3.0
_MIN_PIECE_EXTENT_M = 1.0
# Trees may hide at most this share of any roof.
_MAX_TREE_COVER = 0.15
# Every building keeps this far from every other building it is not built against.
_GAP_M = 1.0


@dataclass(frozen=True)
class Surface:
    """Paving or water on the ground: a lot, driveway, patio, pool, road, sidewalk or marking."""

    shape: Polygon
    colour: Colour
    grain: float  # texture strength


@dataclass(frozen=True)
class Tree:
    """A tree crown in scene metres."""

    crown: Polygon
    x: float
    y: float
    radius: float
    colour: Colour
    height_m: float


@dataclass(frozen=True)
class Road:
    """A street as laid: its centre line clipped to the scene, its width and its direction."""

    line: LineString
    width: float
    angle: float


@dataclass(frozen=True)
class _Street:
    """A candidate street's centre line, before it is clipped, given a width or left out."""

    line: LineString
    angle: float


@dataclass(frozen=True)
class _Seam:
    """A tile seam: the line ``axis = at`` across the scene."""

    axis: Literal["x", "y"]
    at: float


@dataclass(frozen=True)
class Layout:
    """A finished plan: what the scene's pixel layers are made of.

    Attributes:
        buildings: Buildings in placement order; index + 1 is the scene-wide building id.
        surfaces: Ground surfaces in drawing order: lots, driveways, patios and pools, then
            sidewalks, carriageways and markings, so crossings look paved through.
        trees: Tree crowns in placement order.
    """

    buildings: list[Building]
    surfaces: list[Surface]
    trees: list[Tree]


class Planner:
    """Places roads, buildings, pools and trees in scene metres without conflicts."""

    _CELL_M = 40.0
    _FIELD_STEP_M = 4.0

    def __init__(
        self,
        rng: np.random.Generator,
        keys: np.ndarray,
        aoi: BaseGeometry,
        tile_m: float,
    ) -> None:
        self.rng = rng
        self.aoi = aoi.buffer(-1.0, join_style="mitre")
        shapely.prepare(self.aoi)
        self.width, self.height = aoi.bounds[2], aoi.bounds[3]
        self.tile_m = tile_m
        self.roads: list[Road] = []
        self.keepout: BaseGeometry | None = None
        # Sidewalks, then carriageways, then markings, so crossings look paved through.
        self.sidewalks: list[Surface] = []
        self.carriageways: list[Surface] = []
        self.markings: list[Surface] = []
        self.ground_surfaces: list[Surface] = []
        self.buildings: list[Building] = []
        # Buildings and pools, with a coarse grid over them for neighbour queries.
        self.blockers: list[Polygon] = []
        self.blocker_building: list[int] = []  # index into buildings, -1 for a pool
        self.grid: dict[tuple[int, int], list[int]] = {}
        self.trees: list[Tree] = []
        self.tree_cover: dict[int, float] = {}  # blocker index -> roof area under crowns
        # Zoning fields are sampled once on a grid: they vary over tens of metres and are asked
        # for thousands of times.
        ys = np.arange(0.0, self.height + self._FIELD_STEP_M, self._FIELD_STEP_M)
        xs = np.arange(0.0, self.width + self._FIELD_STEP_M, self._FIELD_STEP_M)
        broad = 0.7 * value_noise(keys[10], ys, xs, 160.0) + 0.3 * value_noise(keys[11], ys, xs, 55.0)
        self._density = np.clip((broad - 0.33) / 0.27, 0.0, 1.0)
        self._commercial = value_noise(keys[12], ys, xs, 220.0) > 0.6

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
        """Indices of the blockers in the grid cells within ``pad`` of ``geom``'s bounds."""
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
        """Whether ``geom`` reaches into more than one tile."""
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
        streets: list[_Street] = []
        for angle in angles:
            d = np.array([math.cos(angle), math.sin(angle)])
            n = np.array([-d[1], d[0]])
            spacing = rng.uniform(85.0, 170.0)
            t = -reach / 2 + rng.uniform(0.0, spacing)
            while t < reach / 2:
                p = centre + n * t
                streets.append(_Street(LineString([p - d * reach, p + d * reach]), angle))
                t += spacing * rng.uniform(0.8, 1.25)
        if rng.random() < 0.5:
            angle = rng.uniform(0.0, math.pi)
            d = np.array([math.cos(angle), math.sin(angle)])
            p = centre + rng.uniform(-0.3, 0.3, 2) * (w, h)
            streets.append(_Street(LineString([p - d * reach, p + d * reach]), angle))
        scene_box = box(-20.0, -20.0, w + 20.0, h + 20.0)
        kept = [street for street in streets if street.line.intersects(box(0, 0, w, h))]
        # Leaving out some streets makes large blocks and open land, but keep at least one.
        drop = rng.random(len(kept)) < 0.2
        if kept:
            drop[rng.integers(len(kept))] = False
        keepouts = []
        for street, dropped in zip(kept, drop, strict=True):
            if dropped:
                continue
            # A straight line through a box it crosses leaves a single segment.
            clipped = cast(LineString, street.line.intersection(scene_box))
            width = rng.uniform(6.0, 12.0)
            self.roads.append(Road(clipped, width, street.angle))
            kind = weighted(rng, (0.5, 0.3, 0.2))
            colour = (ASPHALT_DARK, ASPHALT_AGED, CONCRETE)[kind]
            self.carriageways.append(Surface(clipped.buffer(width / 2, cap_style="flat"), colour, 0.12))
            walk = rng.uniform(1.5, 2.2) if rng.random() < 0.6 else 0.0
            if walk:
                edge = clipped.buffer(width / 2 + walk, cap_style="flat")
                self.sidewalks.append(Surface(edge, CONCRETE, 0.05))
            if kind != 2 and width > 8.0:
                self.markings.extend(self._centre_dashes(clipped, colour_index=kind))
            keepouts.append(clipped.buffer(width / 2 + walk + 2.0, cap_style="flat"))
        self.keepout = shapely.union_all(keepouts)
        shapely.prepare(self.keepout)

    def _centre_dashes(self, line: LineString, colour_index: int) -> list[Surface]:
        colour = MARKING_YELLOW if colour_index == 0 and self.rng.random() < 0.5 else MARKING_WHITE
        dashes = []
        s = self.rng.uniform(0.0, 9.0)
        while s + 3.0 < line.length:
            dash = ops.substring(line, s, s + 3.0)
            dashes.append(Surface(dash.buffer(0.08, cap_style="flat"), colour, 0.0))
            s += 9.0
        return dashes

    # Buildings.

    def place(
        self,
        kind: BuildingKind,
        origin: np.ndarray,
        t: np.ndarray,
        n: np.ndarray,
        *,
        size: BuildingSize | None = None,
        need_seam: bool = False,
    ) -> Building | None:
        """Try one building of ``kind`` with its front-left corner at ``origin``.

        ``t`` runs along the front and ``n`` away from it. Returns the building if it fits.
        """
        rng = self.rng
        if size is None:
            size = building_size(kind, rng)
        rects = shape_rects(kind, size.width, size.depth, rng)
        parts = [frame_rect(origin, t, n, r) for r in rects]
        union = shapely.union_all(parts)
        if not isinstance(union, Polygon) or not union.is_valid:
            return None
        # Simplifying a valid polygon by a micrometre leaves a polygon.
        footprint = cast(Polygon, union.simplify(1e-6))
        if need_seam and not self.crosses_seam(footprint):
            return None
        if not (self.free(footprint, _GAP_M) and self.seams_ok(footprint)):
            return None
        building = self._make(kind, parts, rects, origin, t, n, footprint)
        self._commit(building)
        if kind == "commercial":
            margin = rng.uniform(5.0, 14.0)
            lot = frame_rect(origin, t, n, Rect(-margin, size.width + margin, -margin, size.depth + margin))
            colour = CONCRETE if rng.random() < 0.55 else ASPHALT_DARK
            self.ground_surfaces.append(Surface(lot, jitter(colour, rng, 0.1), 0.1))
        return building

    def place_row(self, origin: np.ndarray, t: np.ndarray, n: np.ndarray) -> int:
        """Row houses: units that share side walls exactly. Returns the length along the front."""
        rng = self.rng
        count = int(rng.integers(3, 8))
        depth = rng.uniform(9.0, 14.0)
        edges = np.concatenate(([0.0], np.cumsum(rng.uniform(5.0, 8.0, count))))
        # Units sharing a wall are built from the same edge values, so the shared corners are
        # bit-identical and the units touch without overlapping.
        units = [Rect(float(a), float(b), 0.0, depth) for a, b in itertools.pairwise(edges)]
        polys = [frame_rect(origin, t, n, r) for r in units]
        if not all(self.free(p, _GAP_M) and self.seams_ok(p) for p in polys):
            return 0
        colour = pick(HOUSE_ROOFS, rng)
        style = RoofStyle.HIP if rng.random() < 0.5 else RoofStyle.GABLE
        height = rng.uniform(5.0, 8.0)
        for rect, poly in zip(units, polys, strict=True):
            tint = jitter(colour, rng, 0.05)
            building = Building(
                parts=[poly],
                frames=[part_frame(origin, t, n, rect)],
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
        kind: BuildingKind,
        parts: list[Polygon],
        rects: list[Rect],
        origin: np.ndarray,
        t: np.ndarray,
        n: np.ndarray,
        footprint: Polygon,
    ) -> Building:
        rng = self.rng
        if kind == "commercial":
            colour, style = pick(COMMERCIAL_ROOFS, rng), RoofStyle.FLAT
            height = rng.uniform(5.0, 12.0)
        elif kind == "shed":
            colour = pick(SHED_ROOFS, rng)
            style = RoofStyle.GABLE if rng.random() < 0.5 else RoofStyle.FLAT
            height = rng.uniform(2.2, 3.2)
        elif kind == "apartment":
            colour = pick(HOUSE_ROOFS if rng.random() < 0.6 else COMMERCIAL_ROOFS, rng)
            style = RoofStyle.FLAT if rng.random() < 0.4 else RoofStyle.GABLE
            height = rng.uniform(7.0, 14.0)
        else:
            colour = pick(HOUSE_ROOFS, rng)
            style = (RoofStyle.FLAT, RoofStyle.GABLE, RoofStyle.HIP)[weighted(rng, (0.2, 0.35, 0.45))]
            height = rng.uniform(3.0, 7.0)
        building = Building(
            parts=parts,
            frames=[part_frame(origin, t, n, r) for r in rects],
            footprint=footprint,
            colour=jitter(colour, rng, 0.08),
            style=style,
            relief=rng.uniform(0.03, 0.08) if style == RoofStyle.FLAT else rng.uniform(0.12, 0.25),
            height_m=height,
        )
        if style == RoofStyle.FLAT and footprint.area > 300.0:
            building.units = self._roof_units(footprint, rects, origin, t, n)
        return building

    def _roof_units(
        self, footprint: Polygon, rects: list[Rect], origin: np.ndarray, t: np.ndarray, n: np.ndarray
    ) -> list[Polygon]:
        rng = self.rng
        inner = footprint.buffer(-1.5, join_style="mitre")
        units = []
        for _ in range(int(min(12, footprint.area // 250))):
            rect = rects[int(rng.integers(len(rects)))]
            du, dv = rng.uniform(1.2, 3.5, 2)
            u = rng.uniform(rect.u0, max(rect.u0, rect.u1 - du))
            v = rng.uniform(rect.v0, max(rect.v0, rect.v1 - dv))
            unit = frame_rect(origin, t, n, Rect(u, u + du, v, v + dv))
            if inner.contains(unit):
                units.append(unit)
        return units

    def _commit(self, building: Building) -> None:
        self.buildings.append(building)
        self._add_blocker(building.footprint, len(self.buildings) - 1)

    def add_pool(self, origin: np.ndarray, t: np.ndarray, n: np.ndarray, rect: Rect) -> None:
        """A pool at ``rect`` of the local frame, unless it would touch a building or pool."""
        pool = frame_rect(origin, t, n, rect)
        if self.free(pool, 0.8):
            self.ground_surfaces.append(Surface(pool, jitter(POOL, self.rng, 0.05), 0.03))
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
        self.trees.append(
            Tree(
                crown=crown,
                x=x,
                y=y,
                radius=radius,
                colour=jitter(tree_colour(rng), rng, 0.1),
                height_m=rng.uniform(4.0, 10.0),
            )
        )


def lay_out(
    layout_rng: np.random.Generator,
    tree_rng: np.random.Generator,
    keys: np.ndarray,
    aoi: BaseGeometry,
    tile_m: float,
) -> Layout:
    """Plan a scene over ``aoi``: roads, then buildings, then trees.

    Args:
        layout_rng: Draws of roads, buildings, lots and pools.
        tree_rng: Draws of trees, a stream of its own so that a change to how trees are placed
            does not move every building.
        keys: Keys of the hashed noise lattices; 10 to 12 zone the layout.
        aoi: The area of interest in scene metres, the union of the tiles.
        tile_m: Tile width and height in metres.
    """
    plan = Planner(layout_rng, keys, aoi, tile_m)
    plan.lay_roads()
    _lay_buildings(plan)
    _lay_guarantees(plan)
    buildings = _drop_overlaps(plan.buildings)
    # Trees avoid every building placed, dropped ones included.
    _lay_trees(plan, tree_rng)
    return Layout(
        buildings=buildings,
        surfaces=plan.ground_surfaces + plan.sidewalks + plan.carriageways + plan.markings,
        trees=plan.trees,
    )


def _lay_buildings(plan: Planner) -> None:
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
        size = building_size(kind, rng)
        plan.place(kind, np.array([x, y]) - t * size.width / 2 - n * size.depth / 2, t, n, size=size)


def _kind(plan: Planner, x: float, y: float) -> BuildingKind:
    """What to build at (x, y): mostly commercial blocks in commercial districts, else houses."""
    rng = plan.rng
    kinds: tuple[BuildingKind, ...]
    if plan.commercial(x, y):
        kinds = ("commercial", "apartment", "shed")
        return kinds[weighted(rng, (0.6, 0.3, 0.1))]
    kinds = ("house", "shed", "apartment")
    return kinds[weighted(rng, (0.82, 0.12, 0.06))]


def _orientation(plan: Planner, x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
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


def _frontage(plan: Planner, edge: np.ndarray, d: np.ndarray, n: np.ndarray) -> float:
    """Build one lot facing the street at ``edge``; returns how far to move along the street."""
    rng = plan.rng
    setback = rng.uniform(1.0, 6.0)
    origin = edge + n * setback
    kind = _kind(plan, *edge)
    if kind == "house" and rng.random() < 0.18:
        length = plan.place_row(origin, d, n)
        return length + rng.uniform(2.0, 6.0) if length else rng.uniform(2.0, 5.0)
    size = building_size(kind, rng)
    width, depth = size.width, size.depth
    building = plan.place(kind, origin, d, n, size=size)
    if building is None:
        return rng.uniform(2.0, 5.0)
    if kind == "house":
        lane = rng.uniform(3.0, 5.5)
        at = rng.uniform(0.0, width - lane)
        plan.ground_surfaces.append(
            Surface(
                frame_rect(origin, d, n, Rect(at, at + lane, -setback - 2.5, 0.0)),
                jitter(CONCRETE, rng, 0.08),
                0.05,
            )
        )
        back = depth
        if rng.random() < 0.5:
            # A patio against the back wall: bright paving next to the roof, but no building.
            deep, wide = rng.uniform(2.5, 5.0), rng.uniform(4.0, min(10.0, width))
            at = rng.uniform(0.0, width - wide)
            paving = CONCRETE if rng.random() < 0.6 else PAVERS
            patio = frame_rect(origin, d, n, Rect(at, at + wide, depth, depth + deep))
            plan.ground_surfaces.append(Surface(patio, jitter(paving, rng, 0.08), 0.06))
            back += deep
        if rng.random() < 0.3:
            pw, pd = rng.uniform(3.5, 5.0), rng.uniform(6.0, 9.0)
            at = rng.uniform(0.0, max(0.0, width - pd))
            plan.add_pool(origin, d, n, Rect(at, at + pd, back + 1.5, back + 1.5 + pw))
        if rng.random() < 0.2:
            plan.place("shed", origin + n * (depth + rng.uniform(3.0, 9.0)), d, n)
    return width + rng.uniform(1.5, 6.0)


def _lay_guarantees(plan: Planner) -> None:
    """Make sure the scene has seam-crossing buildings, a 4 m shed and a building over 50 m."""
    rng = plan.rng
    w, h, tile = plan.width, plan.height, plan.tile_m
    # One building across every seam line at least, so tests and models see cut buildings.
    seams = [_Seam("x", k * tile) for k in range(1, round(w / tile))]
    seams += [_Seam("y", k * tile) for k in range(1, round(h / tile))]
    guaranteed_kinds: tuple[BuildingKind, ...] = ("house", "commercial", "shed")
    for seam in seams:
        if any(_crosses(b.footprint, seam) for b in plan.buildings):
            continue
        for _ in range(300):
            along = rng.uniform(0.0, h if seam.axis == "x" else w)
            x, y = (seam.at, along) if seam.axis == "x" else (along, seam.at)
            kind = guaranteed_kinds[weighted(rng, (0.6, 0.3, 0.1))]
            t, n = _orientation(plan, x, y)
            size = building_size(kind, rng)
            origin = np.array([x, y]) - t * size.width / 2 - n * size.depth / 2
            if plan.place(kind, origin, t, n, size=size, need_seam=True):
                break
    extents = [_extent(b.footprint) for b in plan.buildings]
    wanted: list[tuple[BuildingKind, BuildingSize]] = []
    if not any(short <= 4.05 for short, _ in extents):
        wanted.append(("shed", BuildingSize(4.0, rng.uniform(4.0, 6.0))))
    if not any(long >= 50.0 for _, long in extents):
        wanted.append(("commercial", BuildingSize(rng.uniform(52.0, 60.0), rng.uniform(20.0, 35.0))))
    for kind, size in wanted:
        for _ in range(400):
            x, y = rng.uniform(0.0, w), rng.uniform(0.0, h)
            t, n = _orientation(plan, x, y)
            origin = np.array([x, y]) - t * size.width / 2 - n * size.depth / 2
            if plan.place(kind, origin, t, n, size=size):
                break


def _crosses(geom: Polygon, seam: _Seam) -> bool:
    minx, miny, maxx, maxy = geom.bounds
    return minx < seam.at < maxx if seam.axis == "x" else miny < seam.at < maxy


def _extent(geom: Polygon) -> tuple[float, float]:
    """Short and long side of the minimum rotated rectangle around ``geom``."""
    # A building has area, so its rectangle is a polygon, not a degenerate line.
    rectangle = cast(Polygon, shapely.minimum_rotated_rectangle(geom))
    ring = np.array(rectangle.exterior.coords)
    sides = np.hypot(*np.diff(ring[:3], axis=0).T)
    return float(sides.min()), float(sides.max())


def _lay_trees(plan: Planner, rng: np.random.Generator) -> None:
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


def _drop_overlaps(buildings: list[Building]) -> list[Building]:
    """Keep the earlier of any two buildings that overlap by more than a rounding error."""
    footprints = np.array([b.footprint for b in buildings], dtype=object)
    tree = shapely.STRtree(footprints)
    left, right = tree.query(footprints, predicate="intersects")
    pairs = left < right
    overlap = shapely.area(shapely.intersection(footprints[left[pairs]], footprints[right[pairs]]))
    dropped = set(right[pairs][overlap > 1e-6].tolist())
    return [b for i, b in enumerate(buildings) if i not in dropped and b.footprint.is_valid]
