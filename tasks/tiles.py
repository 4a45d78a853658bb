"""Tiles from stores as model input: opening sources, splitting them, reading labelled tiles."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from footprints.geo.chips import TileFootprint
from footprints.geo.errors import FootprintsError, InputError
from footprints.geo.layouts import Tile, TileSet, find_tiles
from footprints.geo.raster import as_rgb, normalise, read_window, valid_pixels
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
    """A reproducible train/validation split by tile, drawn within each source.

    Each source gives at least one validation tile when it has two or more tiles, so every kind
    of imagery is validated on.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for source, tile_set in tile_sets.items():
        refs = [TileRef(source, t.image_key) for t in tile_set.tiles]
        order = rng.permutation(len(refs))
        n_val = max(1, round(val_fraction * len(refs))) if len(refs) > 1 and val_fraction > 0 else 0
        val += [refs[i] for i in order[:n_val]]
        train += [refs[i] for i in order[n_val:]]
    return train, val


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
    return LabelledTile(image, ids, tile_set.store.describe(tile.image_key))


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
