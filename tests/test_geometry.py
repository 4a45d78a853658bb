"""The geometry under an AOI run: the chip grid, reading a tile off that grid, and sharing a GeoPackage.

- Chip cores tile any AOI with neither gap nor overlap, over random tile mosaics, AOIs, chip sizes
  and overlaps (hypothesis); each core is its chip less half the overlap on sides with a neighbour.
- A tile in another CRS is warped onto the grid: its pixels land where their map coordinates say,
  and the chip's valid mask is exactly where it has data, with or without a nodata value; a tile
  on the grid lands exactly.
- Two neighbouring AOIs written into one GeoPackage keep each other's buildings, and rewriting one
  replaces only its own.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import rasterio.crs
import shapely
import shapely.affinity
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pyproj import CRS, Transformer
from rasterio.transform import Affine

from footprints.geo.aoi import Aoi
from footprints.geo.chips import (
    Chip,
    ChipPlan,
    Limits,
    TileFootprint,
    footprint_polygons,
    plan_chips,
    read_chip,
    tile_limits,
)
from footprints.geo.geopackage import write_buildings
from footprints.geo.raster import RasterInfo, ground_pixel_size, raster_info
from footprints.geo.runs import RunRecord, RunSettings

UTM_ZONES = ("EPSG:32611", "EPSG:32633", "EPSG:32755")


# --- chip cores tile the AOI ------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """A mosaic of tiles on one grid, an AOI over it, and the chip size and overlap to plan with."""

    footprints: list[TileFootprint]
    aoi: Aoi
    size: int
    overlap: int


def _mosaic(
    crs: rasterio.crs.CRS,
    origin: tuple[float, float],
    pixel: tuple[float, float],
    widths: list[int],
    heights: list[int],
    keep: list[bool],
) -> list[TileFootprint]:
    """Tiles in columns of ``widths`` and rows of ``heights`` pixels, without those not kept."""
    footprints = []
    row = 0
    for j, height in enumerate(heights):
        col = 0
        for i, width in enumerate(widths):
            if keep[j * len(widths) + i]:
                transform = Affine(
                    pixel[0], 0, origin[0] + col * pixel[0], 0, -pixel[1], origin[1] - row * pixel[1]
                )
                info = RasterInfo(width, height, 3, "uint8", crs, transform, None)
                footprints.append(TileFootprint(f"tile_{j}_{i}.tif", (), info))
            col += width
        row += height
    return footprints


def _split(draw: st.DrawFn, extent: int) -> list[int]:
    """``extent`` pixels cut into the widths of one to three tiles."""
    cuts = draw(st.lists(st.integers(1, extent - 1), max_size=2, unique=True)) if extent > 1 else []
    edges = [0, *sorted(cuts), extent]
    return [b - a for a, b in itertools.pairwise(edges)]


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    size = draw(st.integers(32, 80), label="size")
    overlap = draw(st.integers(0, size - 1), label="overlap")
    stride = size - overlap
    # One to six chips across the mosaic on each axis, even at a stride of one pixel.
    widths, heights = (
        _split(draw, overlap + (draw(st.integers(1, 6)) - 1) * stride + draw(st.integers(1, stride)))
        for _ in range(2)
    )
    tiles = len(widths) * len(heights)
    missing = draw(st.sets(st.integers(0, tiles - 1), max_size=tiles - 1))
    keep = [i not in missing for i in range(tiles)]
    crs = rasterio.crs.CRS.from_string(draw(st.sampled_from(UTM_ZONES)))
    pixel = (draw(st.floats(0.25, 2.0)), draw(st.floats(0.25, 2.0)))
    origin = (draw(st.floats(300_000, 700_000)), draw(st.floats(1_000_000, 9_000_000)))
    footprints = _mosaic(crs, origin, pixel, widths, heights, keep)

    width_m, height_m = sum(widths) * pixel[0], sum(heights) * pixel[1]

    def point(fx: float, fy: float) -> tuple[float, float]:
        """A point at fractions of the mosaic's width and height from its top-left corner."""
        return origin[0] + fx * width_m, origin[1] - fy * height_m

    def box() -> shapely.Geometry:
        fx, fy = draw(st.floats(-0.25, 0.5)), draw(st.floats(-0.25, 0.5))
        width, height = draw(st.floats(0.1, 1.5)), draw(st.floats(0.1, 1.5))
        return shapely.box(*point(fx, fy + height), *point(fx + width, fy))

    kind = draw(st.sampled_from(["box", "rotated box", "hull", "box with a hole", "two boxes"]))
    if kind == "box":
        geometry = box()
    elif kind == "rotated box":
        geometry = shapely.affinity.rotate(box(), draw(st.floats(1, 89)), origin="centroid")
    elif kind == "hull":
        fraction = st.floats(-0.25, 1.25)
        points = [point(draw(fraction), draw(fraction)) for _ in range(draw(st.integers(3, 7)))]
        geometry = shapely.convex_hull(shapely.multipoints(points))
    elif kind == "box with a hole":
        outer = box()
        geometry = outer.difference(
            shapely.affinity.scale(outer, draw(st.floats(0.1, 0.8)), draw(st.floats(0.1, 0.8)))
        )
    else:
        geometry = shapely.union(box(), box())
    imagery = shapely.union_all([shapely.box(*fp.info.bounds) for fp in footprints])
    assume(shapely.intersection(geometry, imagery).area > 0)

    grid_crs = CRS.from_user_input(crs)
    if draw(st.booleans(), label="AOI in longitude/latitude"):
        geometry = gpd.GeoSeries([shapely.segmentize(geometry, max(width_m, height_m) / 64)], crs=grid_crs)
        aoi = Aoi(geometry.to_crs("EPSG:4326").iloc[0], CRS.from_epsg(4326), f"{kind}, lon/lat")
    else:
        aoi = Aoi(geometry, grid_crs, kind)
    return Layout(footprints, aoi, size, overlap)


def _chip_box(chip: Chip, plan: ChipPlan) -> shapely.Geometry:
    left, top = plan.grid.transform @ (chip.col, chip.row)
    right, bottom = plan.grid.transform @ (chip.col + chip.size, chip.row + chip.size)
    return shapely.box(left, bottom, right, top)


def _covered_pixel_centres(plan: ChipPlan) -> tuple[np.ndarray, np.ndarray]:
    """Grid (row, col) of every pixel centre inside the covered area."""
    minx, miny, maxx, maxy = plan.covered.bounds
    inverse = ~plan.grid.transform
    col0, row0 = (math.floor(v) - 1 for v in inverse @ (minx, maxy))
    col1, row1 = (math.ceil(v) + 1 for v in inverse @ (maxx, miny))
    rows, cols = np.mgrid[row0:row1, col0:col1] + 0.5
    t = plan.grid.transform
    inside = shapely.contains_xy(plan.covered, t.c + cols * t.a, t.f + rows * t.e)
    return rows[inside], cols[inside]


@settings(max_examples=60, deadline=None)
@given(layouts())
def test_chip_cores_hold_every_covered_pixel_centre_exactly_once(layout: Layout) -> None:
    footprints = layout.footprints
    plan = plan_chips(layout.aoi, footprints, layout.size, layout.overlap)
    rows, cols = _covered_pixel_centres(plan)

    owners = np.zeros(rows.shape, int)
    for chip in plan.chips:
        owners += chip.owns(rows, cols)
    wrong = np.flatnonzero(owners != 1)
    assert len(wrong) == 0, (
        f"{len(wrong)} of {len(rows)} covered pixel centres are owned by other than one chip, "
        f"e.g. (row, col) ({rows[wrong[0]]}, {cols[wrong[0]]}) by {owners[wrong[0]]}"
    )
    # Between pixel centres too: the chips together cover the whole covered area.
    chips = shapely.union_all([_chip_box(chip, plan) for chip in plan.chips])
    assert shapely.difference(plan.covered, chips).area <= 1e-9 * plan.covered.area


@settings(max_examples=60, deadline=None)
@given(layouts())
def test_each_core_is_its_chip_less_half_the_overlap_on_sides_with_a_neighbour(layout: Layout) -> None:
    footprints = layout.footprints
    plan = plan_chips(layout.aoi, footprints, layout.size, layout.overlap)
    size, half, stride = layout.size, layout.overlap / 2, layout.size - layout.overlap
    first_row, last_row = min(c.row for c in plan.chips), max(c.row for c in plan.chips)
    first_col, last_col = min(c.col for c in plan.chips), max(c.col for c in plan.chips)
    for chip in plan.chips:
        r0, c0, r1, c1 = chip.core
        assert (chip.row - first_row) % stride == 0
        assert (chip.col - first_col) % stride == 0
        assert r0 == (-math.inf if chip.row == first_row else chip.row + half)
        assert c0 == (-math.inf if chip.col == first_col else chip.col + half)
        assert r1 == (math.inf if chip.row == last_row else chip.row + size - half)
        assert c1 == (math.inf if chip.col == last_col else chip.col + size - half)
        for lo, hi, start in ((r0, r1, chip.row), (c0, c1, chip.col)):
            assert start <= max(lo, start) < min(hi, start + size) <= start + size


@settings(max_examples=60, deadline=None)
@given(layouts())
def test_every_chip_meets_the_aoi_and_lists_exactly_the_tiles_under_it(layout: Layout) -> None:
    footprints = layout.footprints
    plan = plan_chips(layout.aoi, footprints, layout.size, layout.overlap)
    area = layout.aoi.to_crs(plan.grid.crs)
    assert plan.chips
    assert [chip.id for chip in plan.chips] == list(range(len(plan.chips)))
    for chip in plan.chips:
        box = _chip_box(chip, plan)
        assert shapely.intersects(box, area)
        assert shapely.intersects(box, plan.covered)
        # Every tile under the chip that meets the AOI, others only within the margin round the
        # AOI's bounds (to the whole pixel).
        under = [fp.key for fp in footprints if shapely.intersects(box, shapely.box(*fp.info.bounds))]
        assert set(chip.tiles) <= set(under)
        assert list(chip.tiles) == sorted(chip.tiles, key=under.index)
        t = plan.grid.transform
        margin = (layout.overlap + 1) * math.hypot(t.a, t.e)
        for fp in footprints:
            outline = shapely.box(*fp.info.bounds)
            if fp.key in under and shapely.intersects(outline, area):
                assert fp.key in chip.tiles
            if fp.key in chip.tiles:
                assert shapely.distance(outline, shapely.envelope(area)) <= margin
    assert set(plan.tiles) == {key for chip in plan.chips for key in chip.tiles}


# --- a tile off the grid ----------------------------------------------------------------------

UTM = "EPSG:32611"
# West of zone 11's central meridian, where UTM north is ~1.2 degrees off true north: a lon/lat tile
# is a slightly rotated shape on the UTM grid.
ORIGIN = (320_000.0, 4_000_000.0)
BACKGROUND, BRIGHT = 60, 240
# The UTM tile: 100 x 100 one-metre pixels with a 16 m square; the lon/lat tile east of it overlaps
# it by 10 m and has its own 16 m square, and nodata in its southern rows.
UTM_TILE_PX = 100
UTM_SQUARE = (320_020.0, 3_999_940.0, 320_036.0, 3_999_956.0)
WGS84_TILE_UTM = (320_090.0, 4_000_000.0)  # its top-left corner
WGS84_TILE_PX = (110, 100)  # width, height
WGS84_PIXEL_M = 0.8
WGS84_NODATA_ROWS = 15
WGS84_SQUARE = (320_130.0, 3_999_950.0, 320_146.0, 3_999_966.0)


def _write_tile(
    path: Path, pixels: np.ndarray, crs: str, transform: Affine, nodata: float | None = 0
) -> None:
    profile = {"driver": "GTiff", "width": pixels.shape[1], "height": pixels.shape[0], "count": 3}
    with rasterio.open(
        path, "w", **profile, dtype="uint8", crs=crs, transform=transform, nodata=nodata
    ) as dst:
        dst.write(np.repeat(pixels[None], 3, axis=0))


def _write_utm_tile(path: Path) -> None:
    pixels = np.full((UTM_TILE_PX, UTM_TILE_PX), BACKGROUND, np.uint8)
    left, bottom, right, top = UTM_SQUARE
    pixels[int(ORIGIN[1] - top) : int(ORIGIN[1] - bottom), int(left - ORIGIN[0]) : int(right - ORIGIN[0])] = (
        BRIGHT
    )
    _write_tile(path, pixels, UTM, Affine(1.0, 0, ORIGIN[0], 0, -1.0, ORIGIN[1]))


def _wgs84_transform() -> Affine:
    lon, lat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(*WGS84_TILE_UTM)
    dlat = WGS84_PIXEL_M / 110_950
    dlon = WGS84_PIXEL_M / (111_320 * math.cos(math.radians(lat)))
    return Affine(dlon, 0, lon, 0, -dlat, lat)


def _write_wgs84_tile(path: Path, nodata: bool = True) -> None:
    """The square is drawn where its UTM outline falls, pixel centre by pixel centre.

    Without ``nodata`` the file has no nodata value and every pixel holds data.
    """
    width, height = WGS84_TILE_PX
    transform = _wgs84_transform()
    rows, cols = np.mgrid[0:height, 0:width] + 0.5
    lon, lat = transform.c + cols * transform.a, transform.f + rows * transform.e
    x, y = Transformer.from_crs("EPSG:4326", UTM, always_xy=True).transform(lon, lat)
    left, bottom, right, top = WGS84_SQUARE
    pixels = np.where((x >= left) & (x < right) & (y >= bottom) & (y < top), BRIGHT, BACKGROUND)
    if nodata:
        pixels[height - WGS84_NODATA_ROWS :] = 0
    _write_tile(path, pixels.astype(np.uint8), "EPSG:4326", transform, 0 if nodata else None)


def _wgs84_data_outline() -> shapely.Geometry:
    """Where the lon/lat tile has data, in UTM."""
    width, height = WGS84_TILE_PX
    t = _wgs84_transform()
    outline = shapely.box(t.c, t.f + (height - WGS84_NODATA_ROWS) * t.e, t.c + width * t.a, t.f)
    outline = shapely.segmentize(outline, t.a)
    return gpd.GeoSeries([outline], crs="EPSG:4326").to_crs(UTM).iloc[0]


@pytest.fixture
def two_crs_plan(tmp_path: Path) -> tuple[ChipPlan, dict[str, Path]]:
    paths = {"a_utm.tif": tmp_path / "a_utm.tif", "b_wgs84.tif": tmp_path / "b_wgs84.tif"}
    _write_utm_tile(paths["a_utm.tif"])
    _write_wgs84_tile(paths["b_wgs84.tif"])
    footprints = [TileFootprint(key, (), raster_info(path)) for key, path in paths.items()]
    aoi = Aoi(shapely.box(319_990, 3_999_900, 320_200, 4_000_010), CRS.from_user_input(UTM), "both tiles")
    return plan_chips(aoi, footprints, 64, 16), paths


def _read(chip: Chip, plan: ChipPlan, paths: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    limits: dict[str, Limits | None] = {}

    def limits_of(fp: TileFootprint) -> Limits | None:
        if fp.key not in limits:
            limits[fp.key] = tile_limits(paths[fp.key], fp.info.nodata, fp.key)
        return limits[fp.key]

    read = read_chip(chip, plan, lambda fp: paths[fp.key], limits_of)
    assert not read.failed
    return read.image, read.valid


def _pixel_centres_xy(chip: Chip, plan: ChipPlan) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates of the chip's pixel centres, (size, size) each."""
    rows, cols = np.mgrid[0 : chip.size, 0 : chip.size] + 0.5
    t = chip.transform(plan.grid)
    return t.c + cols * t.a, t.f + rows * t.e


def _chips_holding(plan: ChipPlan, square: tuple[float, float, float, float]) -> list[Chip]:
    found = [c for c in plan.chips if shapely.box(*square).within(_chip_box(c, plan))]
    assert found, "the plan should have a chip that holds the whole square"
    return found


def test_the_plan_is_on_the_utm_tiles_grid_and_chips_read_both_tiles(
    two_crs_plan: tuple[ChipPlan, dict[str, Path]],
) -> None:
    plan, _ = two_crs_plan
    assert plan.grid.crs == CRS.from_user_input(UTM)
    assert plan.grid.transform == Affine(1.0, 0, ORIGIN[0], 0, -1.0, ORIGIN[1])
    assert set(plan.tiles) == {"a_utm.tif", "b_wgs84.tif"}
    assert any(chip.tiles == ("a_utm.tif", "b_wgs84.tif") for chip in plan.chips)


def test_a_tile_in_another_crs_lands_where_its_map_coordinates_say(
    two_crs_plan: tuple[ChipPlan, dict[str, Path]],
) -> None:
    plan, paths = two_crs_plan
    left, bottom, right, top = WGS84_SQUARE
    square = shapely.box(*WGS84_SQUARE)
    for chip in _chips_holding(plan, WGS84_SQUARE):
        image, valid = _read(chip, plan, paths)
        bright = (image.mean(axis=0) > 0.5) & valid
        rows, cols = np.nonzero(bright)
        inverse = ~chip.transform(plan.grid)
        (c0, r0), (c1, r1) = inverse @ (left, top), inverse @ (right, bottom)
        # Its outline within a pixel, its centre within a quarter of one.
        assert abs(rows.min() - r0) <= 1
        assert abs(rows.max() + 1 - r1) <= 1
        assert abs(cols.min() - c0) <= 1
        assert abs(cols.max() + 1 - c1) <= 1
        assert abs(rows.mean() + 0.5 - (r0 + r1) / 2) <= 0.25
        assert abs(cols.mean() + 0.5 - (c0 + c1) / 2) <= 0.25
        assert abs(len(rows) - (r1 - r0) * (c1 - c0)) <= 2 * ((r1 - r0) + (c1 - c0))
        # Stretched by the tile's own limits: the square at 1, the background at 0, but at its edge.
        x, y = _pixel_centres_xy(chip, plan)
        assert (image[:, shapely.contains_xy(square.buffer(-1.0), x, y)] >= 0.99).all()
        away = valid & ~shapely.contains_xy(square.buffer(1.0), x, y)
        assert (image[:, away] <= 0.01).all()


def test_a_tile_on_the_grid_lands_exactly(two_crs_plan: tuple[ChipPlan, dict[str, Path]]) -> None:
    plan, paths = two_crs_plan
    utm_tile = shapely.box(ORIGIN[0], ORIGIN[1] - UTM_TILE_PX, ORIGIN[0] + UTM_TILE_PX, ORIGIN[1])
    for chip in _chips_holding(plan, UTM_SQUARE):
        image, valid = _read(chip, plan, paths)
        x, y = _pixel_centres_xy(chip, plan)
        on_tile = shapely.contains_xy(utm_tile, x, y)
        left, bottom, right, top = UTM_SQUARE
        square = (x > left) & (x < right) & (y > bottom) & (y < top)
        assert valid[on_tile].all()
        # The whole tile is stretched between its background (0) and its square (1).
        np.testing.assert_array_equal(image[:, on_tile], np.broadcast_to(square[on_tile], (3, on_tile.sum())))


def test_the_valid_mask_is_where_some_tile_has_data(two_crs_plan: tuple[ChipPlan, dict[str, Path]]) -> None:
    plan, paths = two_crs_plan
    utm_tile = shapely.box(ORIGIN[0], ORIGIN[1] - UTM_TILE_PX, ORIGIN[0] + UTM_TILE_PX, ORIGIN[1])
    wgs84_data = _wgs84_data_outline()
    edge = shapely.buffer(wgs84_data.exterior, 1.0)  # a pixel either side of its outline
    shapely.prepare(edge)
    seen_wgs84 = 0
    for chip in plan.chips:
        _, valid = _read(chip, plan, paths)
        x, y = _pixel_centres_xy(chip, plan)
        on_utm = shapely.contains_xy(utm_tile, x, y)
        on_wgs84 = shapely.contains_xy(wgs84_data, x, y)
        wrong = (valid != (on_utm | on_wgs84)) & ~on_utm
        assert valid[on_utm].all()
        assert not (wrong & ~shapely.contains_xy(edge, x, y)).any(), (
            f"chip {chip.id}: valid away from the edge"
        )
        seen_wgs84 += int((on_wgs84 & ~on_utm).sum())
    assert seen_wgs84 > 0


def test_a_tile_in_another_crs_without_a_nodata_value_is_valid_only_over_its_footprint(
    tmp_path: Path,
) -> None:
    paths = {"a_utm.tif": tmp_path / "a_utm.tif", "b_wgs84.tif": tmp_path / "b_wgs84.tif"}
    _write_utm_tile(paths["a_utm.tif"])
    _write_wgs84_tile(paths["b_wgs84.tif"], nodata=False)
    footprints = [TileFootprint(key, (), raster_info(path)) for key, path in paths.items()]
    aoi = Aoi(shapely.box(319_990, 3_999_900, 320_200, 4_000_010), CRS.from_user_input(UTM), "both tiles")
    plan = plan_chips(aoi, footprints, 64, 16)
    utm_tile = shapely.box(ORIGIN[0], ORIGIN[1] - UTM_TILE_PX, ORIGIN[0] + UTM_TILE_PX, ORIGIN[1])
    near = shapely.buffer(footprint_polygons([footprints[1]], plan.grid.crs)[0], 1.0)
    for chip in plan.chips:
        _, valid = _read(chip, plan, paths)
        x, y = _pixel_centres_xy(chip, plan)
        outside = ~shapely.contains_xy(utm_tile, x, y) & ~shapely.contains_xy(near, x, y)
        assert not valid[outside].any(), f"chip {chip.id}: {valid[outside].sum()} pixels off every tile valid"


def test_a_tile_on_the_grid_is_not_blanked_by_an_earlier_tile_without_a_nodata_value(tmp_path: Path) -> None:
    # The lon/lat tile sorts first, so it is read first; two UTM tiles keep UTM the grid.
    paths = {name: tmp_path / name for name in ("a_wgs84.tif", "b_utm.tif", "c_utm.tif")}
    _write_wgs84_tile(paths["a_wgs84.tif"], nodata=False)
    texture = np.random.default_rng(0).integers(30, 230, (2, UTM_TILE_PX, UTM_TILE_PX)).astype(np.uint8)
    for pixels, path, top in (
        (texture[0], paths["b_utm.tif"], ORIGIN[1]),
        (texture[1], paths["c_utm.tif"], ORIGIN[1] - UTM_TILE_PX),
    ):
        _write_tile(path, pixels, UTM, Affine(1.0, 0, ORIGIN[0], 0, -1.0, top))
    footprints = [TileFootprint(key, (), raster_info(path)) for key, path in paths.items()]
    aoi = Aoi(shapely.box(320_000, 3_999_800, 320_150, 4_000_000), CRS.from_user_input(UTM), "three tiles")
    plan = plan_chips(aoi, footprints, 64, 16)
    assert plan.grid.crs == CRS.from_user_input(UTM)
    near = shapely.buffer(footprint_polygons([footprints[0]], plan.grid.crs)[0], 1.0)
    shared = [chip for chip in plan.chips if chip.tiles[:2] == ("a_wgs84.tif", "b_utm.tif")]
    assert shared
    for chip in shared:
        image, valid = _read(chip, plan, paths)
        utm_only, utm_valid = _read(replace(chip, tiles=chip.tiles[1:]), plan, paths)
        x, y = _pixel_centres_xy(chip, plan)
        off_wgs84 = ~shapely.contains_xy(near, x, y)
        # Away from the lon/lat tile the chip is what the UTM tiles alone give.
        np.testing.assert_array_equal(image[:, off_wgs84], utm_only[:, off_wgs84])
        np.testing.assert_array_equal(valid[off_wgs84], utm_valid[off_wgs84])


# --- neighbouring AOIs in one GeoPackage ------------------------------------------------------

AOI_A = shapely.box(320_000, 3_999_900, 320_100, 4_000_000)
AOI_B = shapely.box(320_100, 3_999_900, 320_200, 4_000_000)  # shares AOI_A's eastern edge


def _run(run_id: str) -> RunRecord:
    """A run's record, complete but for the writing, as write_buildings takes it."""
    return RunRecord(
        run_id=run_id,
        started="2025-01-01T00:00:00+00:00",
        out="buildings.gpkg",
        aoi=run_id,
        aoi_wkt="POLYGON EMPTY",
        aoi_crs=UTM,
        source="tiles/",
        model="test",
        model_id="model-1",
        model_sha256="0" * 64,
        method="test",
        code_version="0.1.0",
        settings=RunSettings(crs=UTM),
    )


def _buildings(run_id: str, squares: list[tuple[float, float, float]]) -> gpd.GeoDataFrame:
    """Buildings as squares (x, y of the south-west corner, side), attributed to ``run_id``."""
    geometry = [shapely.box(x, y, x + side, y + side) for x, y, side in squares]
    return gpd.GeoDataFrame(
        {
            "score": np.linspace(0.5, 0.99, len(squares)),
            "area_m2": [side * side for _, _, side in squares],
            "method": "test",
            "model_id": "model-1",
            "source_tiles": "tile.tif",
            "run_id": run_id,
        },
        geometry=geometry,
        crs=UTM,
    )


def _write(path: Path, run_id: str, squares: list[tuple[float, float, float]], aoi: shapely.Geometry) -> int:
    """One run's buildings into the file; the number of buildings in the file after it."""
    return write_buildings(path, _buildings(run_id, squares), aoi, _run(run_id)).buildings_in_file


# Each set's centres lie in its own AOI; some buildings cross the shared edge at x = 320100.
SQUARES_A = [(320_010.0 + 20 * i, 3_999_920.0 + 25 * j, 8.0) for i in range(4) for j in range(3)] + [
    (320_094.0, 3_999_960.0, 10.0),  # centre 320099: A's, reaching 4 m into B
    (320_096.0, 3_999_905.0, 3.0),  # centre 320097.5, within 2 m of the edge
]
SQUARES_B = [(320_110.0 + 20 * i, 3_999_930.0 + 25 * j, 6.0) for i in range(4) for j in range(2)] + [
    (320_097.0, 3_999_975.0, 10.0),  # centre 320102: B's, reaching 3 m into A
    (320_101.0, 3_999_905.0, 3.0),
]
SQUARES_A_AGAIN = [(320_015.0 + 30 * i, 3_999_915.0 + 30 * j, 9.0) for i in range(3) for j in range(3)] + [
    (320_095.0, 3_999_940.0, 9.0),  # centre 320099.5
]


def _read_buildings(path: Path) -> gpd.GeoDataFrame:
    return pyogrio.read_dataframe(path, layer="buildings")


def test_buildings_sets_are_each_inside_their_own_aoi() -> None:
    for aoi, squares in ((AOI_A, SQUARES_A), (AOI_B, SQUARES_B), (AOI_A, SQUARES_A_AGAIN)):
        centres = shapely.point_on_surface(_buildings("x", squares).geometry.to_numpy())
        assert shapely.contains(aoi, centres).all()


def test_neighbouring_aois_share_one_geopackage(tmp_path: Path) -> None:
    path = tmp_path / "buildings.gpkg"
    assert _write(path, "run-a", SQUARES_A, AOI_A) == len(SQUARES_A)
    total = _write(path, "run-b", SQUARES_B, AOI_B)

    found = _read_buildings(path)
    assert total == len(found) == len(SQUARES_A) + len(SQUARES_B)
    assert found["id"].is_unique
    assert found.crs is not None
    assert found.crs.equals(CRS.from_user_input(UTM))
    centres = shapely.point_on_surface(found.geometry.to_numpy())
    in_a = shapely.contains(AOI_A, centres)
    assert (found["run_id"] == np.where(in_a, "run-a", "run-b")).all()
    assert (found["run_id"] == "run-a").sum() == len(SQUARES_A)
    assert shapely.equals(
        shapely.union_all(found.geometry[found["run_id"] == "run-b"].to_numpy()),
        shapely.union_all(_buildings("run-b", SQUARES_B).geometry.to_numpy()),
    )


def test_rewriting_an_aoi_replaces_only_its_own_buildings(tmp_path: Path) -> None:
    path = tmp_path / "buildings.gpkg"
    _write(path, "run-a", SQUARES_A, AOI_A)
    _write(path, "run-b", SQUARES_B, AOI_B)
    before = _read_buildings(path)
    total = _write(path, "run-a2", SQUARES_A_AGAIN, AOI_A)

    after = _read_buildings(path)
    assert total == len(after) == len(SQUARES_A_AGAIN) + len(SQUARES_B)
    assert after["id"].is_unique
    assert set(after["run_id"]) == {"run-a2", "run-b"}
    assert (after["run_id"] == "run-a2").sum() == len(SQUARES_A_AGAIN)
    # B's buildings are kept as they were: ids, attributes and shapes.
    b_before = before[before["run_id"] == "run-b"].sort_values("id").reset_index(drop=True)
    b_after = after[after["run_id"] == "run-b"].sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(b_before.drop(columns="geometry"), b_after.drop(columns="geometry"))
    assert shapely.equals(b_before.geometry.to_numpy(), b_after.geometry.to_numpy()).all()
    # The new ids follow every id in the file, so none is reused for another building.
    assert after.loc[after["run_id"] == "run-a2", "id"].min() > before["id"].max()


def test_the_runs_layer_has_one_row_per_write(tmp_path: Path) -> None:
    path = tmp_path / "buildings.gpkg"
    writes = [("run-a", SQUARES_A, AOI_A), ("run-b", SQUARES_B, AOI_B), ("run-a2", SQUARES_A_AGAIN, AOI_A)]
    in_file = [_write(path, run_id, squares, aoi) for run_id, squares, aoi in writes]

    runs = [RunRecord.from_row(row) for row in pyogrio.read_dataframe(path, layer="runs").to_dict("records")]
    assert [run.run_id for run in runs] == ["run-a", "run-b", "run-a2"]
    assert [run.buildings for run in runs] == [len(squares) for _, squares, _ in writes]
    assert [run.buildings_in_file for run in runs] == in_file
    assert all(run.settings == RunSettings(crs=UTM) for run in runs)


@pytest.mark.parametrize(
    ("transform", "crs", "metres"),
    [
        (Affine(0.3, 0, 500000, 0, -0.3, 4000000), "EPSG:32611", 0.3),  # UTM, metres
        (Affine(1.0, 0, 1000000, 0, -1.0, 500000), "EPSG:2264", 0.3048006),  # US survey feet
        # SpaceNet-2 Vegas: 2.7e-6 degrees at 36.2 N is 0.243 m east-west by 0.300 m north-south.
        (Affine(2.7e-6, 0, -115.3, 0, -2.7e-6, 36.2), "EPSG:4326", 0.2697),
    ],
)
def test_ground_pixel_size_is_in_metres_whatever_the_crs(transform: Affine, crs: str, metres: float) -> None:
    assert ground_pixel_size(transform, CRS.from_user_input(crs)) == pytest.approx(metres, rel=1e-3)
    assert ground_pixel_size(transform, None) is None
