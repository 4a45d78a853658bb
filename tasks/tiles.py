"""Tiles from stores as model input: opening sources, splitting them, reading labelled tiles."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import shapely
from rasterio.windows import Window

from footprints.geo.chips import TileFootprint, tile_limits
from footprints.geo.errors import FootprintsError, InputError
from footprints.geo.layouts import Tile, TileSet, find_tiles
from footprints.geo.raster import (
    as_rgb,
    ground_pixel_size,
    normalise,
    read_window,
    stretch,
    valid_pixels,
)
from footprints.geo.rasterize import instance_mask
from footprints.geo.stores import S3Options, open_store
from footprints.geo.tile_index import TileIndex
from footprints.models.data import LabelledTile

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class TileRef:
    """A tile by source and key: small enough to pass between Prefect tasks."""

    source: str
    image_key: str


def open_sources(sources: list[str], s3: S3Options = S3Options()) -> dict[str, TileSet]:
    """The tile sets of several folders or S3 prefixes, by source."""
    return {source: find_tiles(open_store(source, s3)) for source in sources}


def split_tiles(
    tile_sets: dict[str, TileSet], val_fraction: float, seed: int
) -> tuple[list[TileRef], list[TileRef]]:
    """A reproducible train/validation split by tile, drawn within each source (see split_refs)."""
    refs = [TileRef(source, t.image_key) for source, tile_set in tile_sets.items() for t in tile_set.tiles]
    return split_refs(refs, val_fraction, seed)


def split_refs(refs: list[TileRef], fraction: float, seed: int) -> tuple[list[TileRef], list[TileRef]]:
    """Split tiles into (the rest, ``fraction`` of them), drawn within each source, reproducibly.

    Each source gives at least one tile to the second part when it has two or more tiles, so
    every kind of imagery is validated on.
    """
    rng = np.random.default_rng(seed)
    rest, drawn = [], []
    for source in dict.fromkeys(r.source for r in refs):
        ours = [r for r in refs if r.source == source]
        order = rng.permutation(len(ours))
        n_drawn = max(1, round(fraction * len(ours))) if len(ours) > 1 and fraction > 0 else 0
        drawn += [ours[i] for i in order[:n_drawn]]
        rest += [ours[i] for i in order[n_drawn:]]
    return rest, drawn


def resolve(tile_sets: dict[str, TileSet], ref: TileRef) -> tuple[TileSet, Tile]:
    """The tile set and tile a reference names."""
    tile_set = tile_sets[ref.source]
    return tile_set, next(t for t in tile_set.tiles if t.image_key == ref.image_key)


def read_raw(tile_set: TileSet, tile: Tile) -> np.ndarray:
    """A tile's pixels as stored: (bands, rows, cols) in the file's dtype."""
    return read_window(tile_set.image_path(tile), name=tile_set.store.describe(tile.image_key))


def model_input(image: np.ndarray, nodata: float | None) -> np.ndarray:
    """Raw pixels as the models take them: (3, rows, cols) float32 in [0, 1], nodata pixels 0."""
    return normalise(as_rgb(image), valid_pixels(image, nodata))


def read_model_input(tile_set: TileSet, tile: Tile) -> np.ndarray:
    """A tile read and prepared as the models take it (see model_input)."""
    return model_input(read_raw(tile_set, tile), tile_set.info(tile).nodata)


def read_labelled_tile(tile_set: TileSet, tile: Tile) -> LabelledTile:
    """A tile's model input and its rasterised instance map."""
    image = read_model_input(tile_set, tile)
    ids = instance_mask(tile_set.pixel_labels(tile), image.shape[1:])
    info = tile_set.info(tile)
    pixel_size = ground_pixel_size(info.transform, info.crs)
    return LabelledTile(image, ids, tile_set.store.describe(tile.image_key), pixel_size)


class WindowedTile:
    """A labelled tile whose training chips are read from its file a window at a time, so that
    training holds no tile's pixels in memory, however many tiles it draws from (a whole
    SpaceNet AOI). Pixels are stretched with the whole tile's limits, as the AOI flow stretches
    them; labels are kept as polygons and burnt into each window.

    Made from a tile set and tile (read_each calls it so). Building one reads the tile once for
    its stretch limits, so that a tile that cannot be read is found, and skipped, before training
    starts rather than in the middle of it.

    Raises:
        FootprintsError: The tile's image or labels cannot be read.
    """

    def __init__(self, tile_set: TileSet, tile: Tile) -> None:
        info = tile_set.info(tile)
        self.name = tile_set.store.describe(tile.image_key)
        self.path = tile_set.image_path(tile)
        self.nodata = info.nodata
        self.pixel_size_m = ground_pixel_size(info.transform, info.crs)
        self.polygons = tile_set.pixel_labels(tile)
        self.limits = tile_limits(self.path, self.nodata, self.name)
        self._shape = (info.height, info.width)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the tile."""
        return self._shape

    def window(self, top: int, left: int, side: int) -> tuple[np.ndarray, np.ndarray]:
        """A square window (see models.data.LabelledWindows), read from the file."""
        rows, cols = self._shape
        image = np.zeros((3, side, side), np.float32)
        r0, c0 = max(top, 0), max(left, 0)
        r1, c1 = min(top + side, rows), min(left + side, cols)
        if self.limits is not None and r1 > r0 and c1 > c0:
            window = Window.from_slices((r0, r1), (c0, c1))
            raw = as_rgb(read_window(self.path, window, name=self.name))
            inside = stretch(raw, self.limits)
            inside[:, ~valid_pixels(raw, self.nodata)] = 0.0
            image[:, r0 - top : r1 - top, c0 - left : c1 - left] = inside
        shifted = shapely.transform(self.polygons, lambda xy: xy - np.array([left, top]))
        return image, instance_mask(shifted, (side, side))


def tile_footprints(tile_set: TileSet) -> tuple[list[TileFootprint], dict[str, str]]:
    """Every tile's header, as chips read them, and the tiles left out because their header
    cannot be read (key -> reason, each logged as a warning).

    Headers kept in the store's tile index for the same object identities are not read again; a
    StoreError while reading the others is raised (the store, not a tile, is at fault).
    """
    infos = tile_set.headers(TileIndex.for_store(tile_set.store.uri))
    unreadable = {
        t.image_key: str(i) for t, i in zip(tile_set.tiles, infos, strict=True) if isinstance(i, InputError)
    }
    for reason in unreadable.values():
        log.warning("left out a tile whose header cannot be read: %s", reason)
    footprints = [
        TileFootprint(t.image_key, t.sidecars, i, tile_set.etags.get(t.image_key, ""))
        for t, i in zip(tile_set.tiles, infos, strict=True)
        if not isinstance(i, InputError)
    ]
    return footprints, unreadable


def read_each(
    refs: list[TileRef], tile_sets: dict[str, TileSet], read: Callable[[TileSet, Tile], T]
) -> list[T]:
    """Read every tile with ``read``, skipping and logging a tile whose image or labels are bad,
    so that one corrupt tile never sinks a whole run."""
    found = []
    for ref in refs:
        try:
            found.append(read(*resolve(tile_sets, ref)))
        except FootprintsError as error:
            log.warning("skipped a tile: %s", error)
    return found
