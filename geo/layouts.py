"""Finding tiles and their labels in the folder layouts that SpaceNet and others use.

Three layouts are recognised from the keys in a store:

- SpaceNet-2: ``AOI_*_Train/RGB-PanSharpen/RGB-PanSharpen_AOI_*_img{N}.tif`` with
  ``AOI_*_Train/geojson/buildings/buildings_AOI_*_img{N}.geojson`` and
  ``AOI_*_Train/summaryData/*_Building_Solutions.csv``; other products (MUL, PAN, ...) by name.
- SpaceNet-1: ``3band/3band_{id}.tif`` (or ``8band/``), ``vectorData/geoJson/{id}_Geo.geojson`` and
  ``vectorData/summaryData/*.csv``.
- Plain: any folder of GeoTIFFs, each with labels of the same stem (``X.tif`` + ``X.geojson``,
  optionally ``X_PIX.geojson`` in pixel coordinates), or one label file that covers them all.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from pathlib import Path, PurePosixPath

import geopandas as gpd
import numpy as np
import shapely
from rasterio.io import MemoryFile

from .errors import InputError
from .labels import read_label_file, read_summary_csv, to_pixels
from .raster import RasterInfo, raster_info
from .stores import ObjectInfo, TileStore
from .tile_index import TileIndex

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff")
LABEL_SUFFIXES = (".geojson", ".json", ".gpkg")

_SN2_IMAGE = re.compile(
    r"(?:^|/)(?P<dir>AOI_\d+_[A-Za-z]+_\w+?)/(?P<product>[\w-]+)/(?P=product)_(?P<image_id>AOI_\d+_[A-Za-z]+_img\d+)\.tif$"
)
_SN1_IMAGE = re.compile(r"(?:^|/)(?P<product>\d+band)/(?P=product)_(?P<image_id>\w+_img\d+)\.tif$")


@dataclass(frozen=True)
class Tile:
    """One image tile and where its labels are.

    Attributes:
        image_id: The SpaceNet ImageId (``AOI_2_Vegas_img12``) or, in a plain folder, the file stem.
        aoi: The AOI the tile belongs to, for per-AOI scores.
        image_key: The image's key in the store.
        label_key: Per-tile labels in map coordinates, if any.
        pixel_label_key: Per-tile labels in pixel coordinates (``X_PIX.geojson``), if any.
        sidecars: Keys of georeferencing sidecars that must travel with the image.
    """

    image_id: str
    aoi: str
    image_key: str
    label_key: str | None = None
    pixel_label_key: str | None = None
    sidecars: tuple[str, ...] = ()


@dataclass(frozen=True)
class TileSet:
    """The tiles of one store in one layout, with the label files that go with them."""

    store: TileStore
    layout: str
    tiles: tuple[Tile, ...]
    summary_keys: tuple[str, ...] = ()
    shared_label_key: str | None = None
    etags: dict[str, str] = field(default_factory=dict, compare=False, repr=False)  # key -> identity tag
    sizes: dict[str, int] = field(default_factory=dict, compare=False, repr=False)  # key -> bytes
    _info_cache: dict[str, RasterInfo] = field(default_factory=dict, compare=False, repr=False)
    _path_cache: dict[str, Path] = field(default_factory=dict, compare=False, repr=False)

    def image_path(self, tile: Tile) -> Path:
        """A local path of the tile's image, sidecars beside it (looked up once per tile set)."""
        if tile.image_key not in self._path_cache:
            self._path_cache[tile.image_key] = self.store.local_path(tile.image_key, tile.sidecars)
        return self._path_cache[tile.image_key]

    def bbox(self) -> str:
        """The ``minx,miny,maxx,maxy`` over all tiles, as ``--aoi`` takes it; the tiles share one CRS."""
        bounds = np.array([self.info(t).bounds for t in self.tiles])
        return ",".join(str(v) for v in (*bounds[:, :2].min(axis=0), *bounds[:, 2:].max(axis=0)))

    def info(self, tile: Tile) -> RasterInfo:
        """The tile's raster header (read once).

        Read in place, without downloading the tile, unless georeferencing sidecars must lie
        beside it.

        Raises:
            InputError: The tile is not a georeferenced raster.
            StoreError: The store cannot be read (after its retries).
        """
        key = tile.image_key
        if key not in self._info_cache:
            if tile.sidecars:
                self._info_cache[key] = raster_info(self.image_path(tile), self.store.describe(key))
            else:
                try:
                    with self.store.gdal_env():
                        info = raster_info(self.store.header_path(key), self.store.describe(key))
                except InputError:
                    # Read in place, a store that fails for longer than GDAL retries looks like a
                    # broken file. The whole object, fetched with the store's own retries, tells
                    # them apart: a StoreError if the store is failing, an InputError if the file
                    # is broken.
                    with MemoryFile(self.store.read_bytes(key)) as copy:
                        info = raster_info(copy.name, self.store.describe(key))
                self._info_cache[key] = info
        return self._info_cache[key]

    def identity(self, tile: Tile) -> str | None:
        """What names this version of the tile's header: key, ETag and size of the image and of
        each sidecar (whose georeferencing the header reads); None where the listing lacks one."""
        parts = []
        for key in (tile.image_key, *tile.sidecars):
            if key not in self.etags or key not in self.sizes:
                return None
            parts.append(f"{key}|{self.etags[key]}|{self.sizes[key]}")
        return ";".join(parts)

    def headers(self, index: TileIndex | None = None, threads: int = 16) -> list[RasterInfo | InputError]:
        """Every tile's raster header, in the order of ``tiles``, read in ``threads`` threads.

        With an index, the headers it keeps for the tiles' current identities are taken from it
        and only the others are read, then kept in it. A tile that is not a readable raster gets
        its InputError, and is not kept: it is read again next time, so that a fix that leaves
        the object as it is (a GDAL upgrade, a fault that outlasted the retries) counts at once,
        and its warning is given every run; broken tiles are few, so this costs little.

        Raises:
            StoreError: The store cannot be read (after its retries).
        """
        identities = {t.image_key: i for t in self.tiles if (i := self.identity(t)) is not None}
        known = index.get(identities) if index is not None else {}
        self._info_cache.update(known)

        def header(tile: Tile) -> RasterInfo | InputError:
            try:
                return self.info(tile)
            except InputError as error:  # a broken file; a StoreError fails the caller
                return error

        missing = [t for t in self.tiles if t.image_key not in known]
        with ThreadPoolExecutor(max_workers=threads) as pool:
            read = dict(zip((t.image_key for t in missing), pool.map(header, missing), strict=True))
        if index is not None:
            index.put(
                {
                    key: (identities[key], info)
                    for key, info in read.items()
                    if key in identities and not isinstance(info, InputError)
                }
            )
        log.debug("tile headers: %d from the tile index, %d read", len(known), len(read))
        return [known[t.image_key] if t.image_key in known else read[t.image_key] for t in self.tiles]

    @cached_property
    def _shared_labels(self) -> gpd.GeoDataFrame:
        assert self.shared_label_key is not None
        key = self.shared_label_key
        return read_label_file(self.store.local_path(key), self.store.describe(key))

    def pixel_labels(self, tile: Tile) -> np.ndarray:
        """The tile's building polygons in its pixel coordinates, clipped to the tile.

        Per-tile labels come from the tile's label file; otherwise the shared label file is
        queried with the tile's footprint. A tile without labels gets an empty array.
        """
        info = self.info(tile)
        if tile.label_key is not None:
            key = tile.label_key
            frame = read_label_file(self.store.local_path(key), self.store.describe(key))
        elif self.shared_label_key is not None:
            frame = self._shared_labels
            assert frame.crs is not None  # read_label_file gives every frame a CRS
            footprint = gpd.GeoSeries([shapely.box(*info.bounds)], crs=info.crs).to_crs(frame.crs)
            frame = frame.iloc[frame.sindex.query(footprint.iloc[0], predicate="intersects")]
        else:
            return np.empty(0, dtype=object)
        pixels = to_pixels(frame.geometry, info.transform, info.crs)
        clipped = shapely.intersection(pixels, shapely.box(0, 0, info.width, info.height))
        return clipped[shapely.area(clipped) > 0]

    def summary_labels(self) -> gpd.GeoDataFrame:
        """All summary CSVs as one table of pixel polygons (see labels.read_summary_csv)."""
        if not self.summary_keys:
            raise InputError(self.store.uri, "this tile set has no summary CSV")
        frames = [
            read_summary_csv(self.store.local_path(k), self.store.describe(k)) for k in self.summary_keys
        ]
        return gpd.GeoDataFrame(gpd.pd.concat(frames, ignore_index=True), geometry="geometry")


def find_tiles(
    store: TileStore, prefix: str = "", *, product: str | None = None, labels: str | None = None
) -> TileSet:
    """Recognise the layout under ``prefix`` and list its tiles.

    Args:
        store: Where the tiles are.
        prefix: Only keys below this prefix are considered.
        product: Which imagery to use where a layout has several: ``RGB-PanSharpen`` (SpaceNet-2's
            default), ``MUL``, ``PAN``, ... or ``3band`` (SpaceNet-1's default) / ``8band``.
        labels: Key of one label file covering every tile, overriding per-tile labels.

    Returns:
        The tiles, sorted by key.

    Raises:
        InputError: No image tile was found.
    """
    objects = store.list(prefix)
    keys = {o.key for o in objects}
    finders = (partial(_find_spacenet, _SPACENET2), partial(_find_spacenet, _SPACENET1), _find_plain)
    for finder in finders:
        tile_set = finder(store, objects, keys, product)
        if tile_set is not None and tile_set.tiles:
            break
    else:
        where = store.describe(prefix) if prefix else store.uri
        raise InputError(where, "no image tiles (.tif) found")
    etags = {o.key: o.etag for o in objects}
    sizes = {o.key: o.size for o in objects}
    if labels is not None:
        tiles = tuple(Tile(t.image_id, t.aoi, t.image_key, sidecars=t.sidecars) for t in tile_set.tiles)
        return TileSet(store, tile_set.layout, tiles, tile_set.summary_keys, labels, etags=etags, sizes=sizes)
    return replace(tile_set, etags=etags, sizes=sizes)


def _sidecars(image_key: str, keys: set[str]) -> tuple[str, ...]:
    stem = image_key.rsplit(".", 1)[0]
    candidates = [image_key + ".aux.xml", stem + ".tfw", stem + ".wld"]
    return tuple(k for k in candidates if k in keys)


@dataclass(frozen=True)
class _SpaceNetLayout:
    """How one SpaceNet layout names its images, labels and summary CSVs."""

    name: str
    image: re.Pattern[str]
    default_product: str
    label: str  # relative to the folder holding the product folders; {image_id} is filled in
    summary_names_product: bool  # SpaceNet-1 keeps one summary CSV per product


_SPACENET2 = _SpaceNetLayout(
    "spacenet2", _SN2_IMAGE, "RGB-PanSharpen", "geojson/buildings/buildings_{image_id}.geojson", False
)
_SPACENET1 = _SpaceNetLayout(
    "spacenet1", _SN1_IMAGE, "3band", "vectorData/geoJson/{image_id}_Geo.geojson", True
)


def _find_spacenet(
    layout: _SpaceNetLayout, store: TileStore, objects: list[ObjectInfo], keys: set[str], product: str | None
) -> TileSet | None:
    product = product or layout.default_product
    tiles = []
    for info in objects:
        match = layout.image.search(info.key)
        if not match or match["product"] != product:
            continue
        image_id = match["image_id"]
        label = info.key[: match.start("product")] + layout.label.format(image_id=image_id)
        aoi = image_id.rsplit("_", 1)[0]
        tiles.append(
            Tile(
                image_id, aoi, info.key, label if label in keys else None, sidecars=_sidecars(info.key, keys)
            )
        )
    summaries = tuple(
        k
        for k in sorted(keys)
        if "/summaryData/" in k
        and k.endswith(".csv")
        and (not layout.summary_names_product or product.lower() in k.lower())
    )
    return TileSet(store, layout.name, tuple(tiles), summaries) if tiles else None


def _find_plain(
    store: TileStore, objects: list[ObjectInfo], keys: set[str], product: str | None
) -> TileSet | None:
    images = [o.key for o in objects if o.key.lower().endswith(RASTER_SUFFIXES)]
    stems = {k.rsplit(".", 1)[0] for k in images}
    label_files = [k for k in sorted(keys) if k.lower().endswith(LABEL_SUFFIXES)]
    tiles = []
    for key in images:
        stem = key.rsplit(".", 1)[0]
        label = next((stem + s for s in LABEL_SUFFIXES if stem + s in keys), None)
        pixel_label = stem + "_PIX.geojson" if stem + "_PIX.geojson" in keys else None
        path = PurePosixPath(key)
        aoi = path.parent.name or PurePosixPath(store.uri).name
        tiles.append(Tile(path.stem, aoi, key, label, pixel_label, _sidecars(key, keys)))
    # One label file that belongs to no image covers the whole folder (an AOI-wide OSM extract).
    unclaimed = [
        k for k in label_files if k.rsplit(".", 1)[0] not in stems and not k.endswith("_PIX.geojson")
    ]
    shared = unclaimed[0] if len(unclaimed) == 1 and all(t.label_key is None for t in tiles) else None
    summaries = tuple(k for k in sorted(keys) if k.lower().endswith(".csv"))
    return TileSet(store, "plain", tuple(tiles), summaries, shared) if tiles else None
