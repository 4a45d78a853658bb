"""The chip grid over an area of interest, and reading one chip from the tiles it covers.

Chips are laid over the AOI, not over tiles: a chip that spans a tile seam is assembled from every
tile it covers, so a building on a seam is seen whole by some chip. The grid is the pixel grid of
the imagery itself (the CRS, pixel size and alignment of a reference tile), so tiles on that grid
are read without resampling; a tile off the grid is warped onto it.

Each chip owns a *core*: the chip less half the overlap on every side that has a neighbour. Cores
tile the AOI without gaps or overlaps, so "keep an instance only in the chip whose core holds its
centre" removes the duplicates that overlapping chips produce.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from .aoi import Aoi
from .errors import FootprintsError, InputError, first_line
from .raster import RasterInfo, as_rgb, local_gdal, read_window, stretch, stretch_limits, valid_pixels

Limits = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TileFootprint:
    """A tile's key, its sidecars and its raster header: all a worker needs to read from it."""

    key: str
    sidecars: tuple[str, ...]
    info: RasterInfo
    etag: str = ""  # the object's identity in its store: what changes when its content does


@dataclass(frozen=True)
class Grid:
    """The pixel grid chips are cut from: a CRS and the transform of its pixel (0, 0)."""

    crs: CRS
    transform: Affine


@dataclass(frozen=True)
class Chip:
    """A square window of the grid.

    Attributes:
        id: Position in the plan.
        row: Grid row of the top-left pixel.
        col: Grid column of the top-left pixel.
        size: Width and height in pixels.
        core: (row0, col0, row1, col1) in grid pixels, the half-open region this chip owns;
            infinite on sides without a neighbour.
        tiles: Keys of the tiles the chip covers.
    """

    id: int
    row: int
    col: int
    size: int
    core: tuple[float, float, float, float]
    tiles: tuple[str, ...]

    def transform(self, grid: Grid) -> Affine:
        """The chip's own pixel-to-map transform."""
        return grid.transform @ Affine.translation(self.col, self.row)

    def owns(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Whether grid positions lie in the chip's core."""
        r0, c0, r1, c1 = self.core
        return (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)


@dataclass(frozen=True)
class ChipPlan:
    """Everything an AOI run reads: the grid, the chips, and the tiles they cover."""

    grid: Grid
    chips: tuple[Chip, ...]
    tiles: dict[str, TileFootprint]
    covered: shapely.Geometry  # the AOI where tiles cover it, in the grid's CRS
    size: int
    overlap: int
    unreadable: dict[str, str] = field(default_factory=dict)  # tiles left out: key -> reason

    def covered_km2(self, metric_crs: CRS) -> float:
        """The area the run covers, in km^2."""
        return float(gpd.GeoSeries([self.covered], crs=self.grid.crs).to_crs(metric_crs).area.iloc[0]) / 1e6


def footprint_polygons(footprints: Iterable[TileFootprint], crs: CRS) -> np.ndarray:
    """Each tile's outline in ``crs`` (edges densified, so a reprojected outline stays faithful)."""
    polygons = []
    for fp in footprints:
        outline = shapely.segmentize(shapely.box(*fp.info.bounds), _span(fp.info.bounds) / 16)
        polygons.append(gpd.GeoSeries([outline], crs=fp.info.crs).to_crs(crs).iloc[0])
    return np.array(polygons, dtype=object)


def _span(bounds: tuple[float, float, float, float]) -> float:
    return max(bounds[2] - bounds[0], bounds[3] - bounds[1])


def _covering(area: shapely.Geometry, outlines: np.ndarray) -> np.ndarray:
    """Indices of the outlines that meet ``area``, in order."""
    return np.sort(shapely.STRtree(outlines).query(area, predicate="intersects"))


def choose_grid(footprints: list[TileFootprint]) -> Grid:
    """The grid of the imagery: the first tile of the most common CRS is the reference.

    Raises:
        InputError: The reference tile is rotated or sheared (not north-up).
    """
    crs_counts: dict[CRS, int] = {}
    for fp in footprints:
        crs_counts[fp.info.crs] = crs_counts.get(fp.info.crs, 0) + 1
    crs = max(crs_counts, key=lambda c: crs_counts[c])
    reference = next(fp for fp in footprints if fp.info.crs == crs)
    t = reference.info.transform
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        raise InputError(reference.key, "the tile is not north-up; rotated grids are not supported")
    return Grid(CRS.from_user_input(crs), t)


def plan_chips(aoi: Aoi, footprints: list[TileFootprint], size: int, overlap: int) -> ChipPlan:
    """Lay chips of ``size`` pixels, overlapping by ``overlap``, over the AOI and a margin round it.

    The grid reaches ``overlap`` pixels beyond the AOI's bounds (where there is imagery), so that a
    building centred inside it near its edge is seen whole, also when a neighbouring AOI shares
    the output. Only chips that meet both the AOI and a tile are kept; each lists the tiles it
    covers.

    Args:
        aoi: The area of interest.
        footprints: The source's tiles; a chip reads those under it within the margin.
        size: Chip width and height in pixels.
        overlap: Pixels shared by neighbouring chips; at least the size of the largest building
            for every building to be seen whole by some chip.

    Raises:
        InputError: No tile covers the AOI, or the sizes are out of range.
    """
    if size < 32 or not 0 <= overlap < size:
        raise InputError(f"chip size {size}, overlap {overlap}", "need size >= 32 and 0 <= overlap < size")
    under = _covering(aoi.geometry, footprint_polygons(footprints, aoi.crs)) if footprints else []
    if len(under) == 0:
        raise InputError(aoi.label, "no tile of the source covers the AOI")
    grid = choose_grid([footprints[i] for i in under])
    area = aoi.to_crs(grid.crs)
    outlines = footprint_polygons(footprints, grid.crs)
    a0, b0, a1, b1 = _pixel_bounds(area, grid)
    reach = _pixel_box(grid, a0 - overlap, b0 - overlap, a1 + overlap, b1 + overlap)
    near = _covering(reach, outlines)
    footprints, outlines = [footprints[i] for i in near], outlines[near]
    imagery = shapely.union_all(outlines)
    covered = shapely.intersection(area, imagery)
    # The grid spans the covered AOI and the margin round it, where there is imagery to read.
    c0, r0, c1, r1 = _pixel_bounds(covered, grid)
    m0, n0, m1, n1 = _pixel_bounds(shapely.intersection(reach, imagery), grid)
    col0, row0 = max(m0, c0 - overlap), max(n0, r0 - overlap)
    col1, row1 = min(m1, c1 + overlap), min(n1, r1 + overlap)

    tree = shapely.STRtree(outlines)
    keys = [fp.key for fp in footprints]
    chips = []
    for row, (r_lo, r_hi) in zip(*_axis(row0, row1, size, overlap), strict=True):
        for col, (c_lo, c_hi) in zip(*_axis(col0, col1, size, overlap), strict=True):
            box = _pixel_box(grid, col, row, col + size, row + size)
            tiles_under = tree.query(box, predicate="intersects")
            if len(tiles_under) == 0 or not shapely.intersects(box, covered):
                continue
            tiles = tuple(keys[i] for i in sorted(tiles_under))
            chips.append(Chip(len(chips), row, col, size, (r_lo, c_lo, r_hi, c_hi), tiles))
    used = {k for chip in chips for k in chip.tiles}
    return ChipPlan(
        grid, tuple(chips), {fp.key: fp for fp in footprints if fp.key in used}, covered, size, overlap
    )


def _pixel_bounds(area: shapely.Geometry, grid: Grid) -> tuple[int, int, int, int]:
    """(col0, row0, col1, row1): the grid's pixels that hold ``area``."""
    minx, miny, maxx, maxy = shapely.bounds(area)
    inverse = ~grid.transform
    col0, row0 = (math.floor(v + 1e-6) for v in inverse @ (minx, maxy))
    col1, row1 = (math.ceil(v - 1e-6) for v in inverse @ (maxx, miny))
    return col0, row0, col1, row1


def _pixel_box(grid: Grid, col0: int, row0: int, col1: int, row1: int) -> shapely.Polygon:
    """The outline of a block of the grid's pixels, in the grid's CRS."""
    left, top = grid.transform @ (col0, row0)
    right, bottom = grid.transform @ (col1, row1)
    return shapely.box(left, bottom, right, top)


def _axis(start: int, stop: int, size: int, overlap: int) -> tuple[list[int], list[tuple[float, float]]]:
    """Chip starts along one axis and the core interval of each."""
    stride = size - overlap
    count = max(1, math.ceil((stop - start - overlap) / stride))
    starts = [start + k * stride for k in range(count)]
    half = overlap / 2
    cores = [
        (-math.inf if k == 0 else s + half, math.inf if k == count - 1 else s + stride + half)
        for k, s in enumerate(starts)
    ]
    return starts, cores


def tile_limits(path: Path, nodata: float | None, name: str) -> Limits | None:
    """The stretch limits of a whole tile (2nd and 98th percentile per band of its valid pixels).

    Computed per tile, as in training, and applied to every chip that reads the tile, so that a
    building looks the same whichever chip it is cut from.
    """
    raw = as_rgb(read_window(path, name=name))
    return stretch_limits(raw, valid_pixels(raw, nodata))


@dataclass
class ChipPixels:
    """A chip as read from its tiles.

    Attributes:
        image: (3, size, size) float32 image in [0, 1].
        valid: (size, size) boolean mask of the pixels that hold data.
        failed: The chip's tiles that could not be read, by key, with the reason; their part of
            the chip is invalid, the other tiles' parts are there.
    """

    image: np.ndarray
    valid: np.ndarray
    failed: dict[str, str] = field(default_factory=dict)


def read_chip(
    chip: Chip,
    plan: ChipPlan,
    path_of: Callable[[TileFootprint], Path],
    limits_of: Callable[[TileFootprint], Limits | None],
    name_of: Callable[[str], str] = str,
) -> ChipPixels:
    """Assemble a chip from the tiles it covers, each stretched by its own limits.

    Where tiles overlap, the first (by key) wins. Pixels no tile covers, and nodata pixels, are
    invalid and 0. A tile that cannot be read (fetched, decoded) is left out and named in the
    result: one bad tile costs its own area, not the neighbouring tiles' parts of the chip.

    Args:
        chip: The chip.
        plan: Its plan (grid and tile headers).
        path_of: A local path of a tile's file.
        limits_of: A tile's stretch limits (None when the tile has no valid pixel).
        name_of: How to name a tile key in errors.
    """
    read = ChipPixels(np.zeros((3, chip.size, chip.size), np.float32), np.zeros((chip.size, chip.size), bool))
    for key in chip.tiles:
        fp = plan.tiles[key]
        try:
            part = _read_tile_part(chip, plan, fp, path_of, limits_of, name_of(key))
        except FootprintsError as error:
            read.failed[key] = str(error)
            continue
        if part is None:
            continue
        (rows, cols), pixels, part_valid = part
        take = part_valid & ~read.valid[rows, cols]
        read.image[:, rows, cols] = np.where(take, pixels, read.image[:, rows, cols])
        read.valid[rows, cols] |= take
    return read


def _read_tile_part(
    chip: Chip,
    plan: ChipPlan,
    fp: TileFootprint,
    path_of: Callable[[TileFootprint], Path],
    limits_of: Callable[[TileFootprint], Limits | None],
    name: str,
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """One tile's part of a chip, stretched: chip slices, pixels, valid; None where it adds nothing."""
    limits = limits_of(fp)
    if limits is None:
        return None
    offset = _grid_offset(fp.info, plan.grid)
    if offset is not None:
        part = _read_aligned(chip, fp, offset, path_of(fp), name)
    else:
        part = _read_warped(chip, fp, plan.grid, path_of(fp), name)
    if part is None:
        return None
    slices, raw, valid = part
    return slices, stretch(raw, limits), valid


def _grid_offset(info: RasterInfo, grid: Grid) -> tuple[int, int] | None:
    """The grid (row, col) of the tile's pixel (0, 0) when the tile lies on the grid, else None."""
    t, g = info.transform, grid.transform
    if info.crs != grid.crs or not (
        math.isclose(t.a, g.a, rel_tol=1e-6) and math.isclose(t.e, g.e, rel_tol=1e-6)
    ):
        return None
    if t.b != 0 or t.d != 0:
        return None
    col, row = ~g @ (t.c, t.f)
    if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
        return None
    return round(row), round(col)


def _read_aligned(
    chip: Chip, fp: TileFootprint, offset: tuple[int, int], path: Path, name: str
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """The part of a tile on the grid that falls in the chip: slices of the chip, raw pixels, valid."""
    r0 = max(chip.row, offset[0])
    c0 = max(chip.col, offset[1])
    r1 = min(chip.row + chip.size, offset[0] + fp.info.height)
    c1 = min(chip.col + chip.size, offset[1] + fp.info.width)
    if r0 >= r1 or c0 >= c1:
        return None
    window = Window.from_slices((r0 - offset[0], r1 - offset[0]), (c0 - offset[1], c1 - offset[1]))
    raw = as_rgb(read_window(path, window, name=name))
    slices = (slice(r0 - chip.row, r1 - chip.row), slice(c0 - chip.col, c1 - chip.col))
    return slices, raw, valid_pixels(raw, fp.info.nodata)


def _read_warped(
    chip: Chip, fp: TileFootprint, grid: Grid, path: Path, name: str
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """A tile off the grid (another CRS, pixel size or alignment), warped onto the chip."""
    try:
        with (
            local_gdal(),
            rasterio.open(path) as src,
            WarpedVRT(
                src,
                crs=grid.crs,
                transform=chip.transform(grid),
                width=chip.size,
                height=chip.size,
                resampling=Resampling.bilinear,
                src_nodata=fp.info.nodata,
                # Without a nodata value the warp would fill the chip outside the tile with zeros
                # that count as data; an alpha band marks where the tile really is.
                add_alpha=fp.info.nodata is None,
            ) as vrt,
        ):
            raw = as_rgb(vrt.read(list(range(1, src.count + 1))))
            covered = vrt.dataset_mask() > 0
    except RasterioError as error:
        raise InputError(name, f"cannot read pixels, truncated or corrupt? ({first_line(error)})") from error
    if not covered.any():
        return None
    whole = (slice(0, chip.size), slice(0, chip.size))
    return whole, raw, covered & valid_pixels(raw, fp.info.nodata)
