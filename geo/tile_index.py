"""A tile index that persists: each tile's raster header, kept per object identity across runs.

Finding the tiles under an AOI reads every tile's header (GDAL range requests on S3). The headers
of a store are kept in one SQLite file under the cache root (``tile-index/<digest of the store's
URI>.sqlite``), a row per object key holding the header and the identity it was read from: the
ETag and size of the image and of each of its sidecars. A later run reads again only the tiles
whose identity differs (new or replaced objects), so a nightly run over a large prefix touches
only what changed.

Every row is a self-contained fact ("this version of this object has this header") guarded by a
digest of its content, so whatever happens to the file, a header read back is either exact or
a miss, never wrong:

- Runs that plan at once share the file: SQLite in WAL mode lets readers and a writer work side
  by side, a writer waits for another (up to BUSY_TIMEOUT_S), and two runs that write the same
  tile write the same fact.
- A file SQLite cannot read (corrupt, not a database, unreadable) is deleted and started afresh,
  with a warning; if that fails too, the run goes on without the index. A file that another
  run holds locked for too long is left alone and this run goes on without it.
- Rows written by another reader (GDAL or PROJ version, which can change how a header reads) or
  in another format are misses, and are replaced.
- A header whose CRS does not come back from WKT as the same CRS (with the same WKT, which the
  resume keys of a run use) is not kept: such a tile's header is read each run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine

from .raster import RasterInfo
from .stores import default_cache

log = logging.getLogger(__name__)

# The layout of the file; a file of another version is emptied and laid out afresh.
SCHEMA_VERSION = 1
# How long a run waits for another run's write to finish before going on without the index.
BUSY_TIMEOUT_S = 10.0
# What a header was read with: a row read by other versions is read again rather than trusted.
READER = f"raster-info-1 gdal-{rasterio.__gdal_version__} proj-{rasterio.__proj_version__}"

_SCHEMA = (
    # One row per object key: a changed object replaces its row, so the file does not grow with
    # every version of a tile. `crs` names a row of the crs table, which many tiles share.
    "CREATE TABLE headers (key TEXT PRIMARY KEY, identity TEXT NOT NULL, header TEXT NOT NULL,"
    " digest TEXT NOT NULL)",
    # A CRS's WKT is most of a header's size, and the tiles of a store mostly share one.
    "CREATE TABLE crs (digest TEXT PRIMARY KEY, wkt TEXT NOT NULL)",
)

T = TypeVar("T")


class TileIndex:
    """The raster headers of one store's tiles, kept in a SQLite file between runs.

    Attributes:
        path: The SQLite file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_store(cls, uri: str, cache_root: Path | None = None) -> TileIndex:
        """The index of the store at ``uri`` (its ``TileStore.uri``), under the cache root.

        Args:
            uri: The store's URI; an S3 store's ETags name an object's content whatever the
                endpoint, so the endpoint is not part of it.
            cache_root: Where the index lives (default: see stores.default_cache).
        """
        name = hashlib.sha256(uri.encode()).hexdigest()[:32]
        return cls((cache_root or default_cache()) / "tile-index" / f"{name}.sqlite")

    def get(self, identities: Mapping[str, str]) -> dict[str, RasterInfo]:
        """The headers kept for these objects, where their identity is the one given.

        Args:
            identities: Object key -> the object's identity now (see TileSet.identity).

        Returns:
            Key -> header, for the keys whose kept header was read from the same identity; keys
            unknown, changed or whose row does not check out are left out. Empty if the index
            cannot be read.
        """
        if not identities:
            return {}

        def read(connection: sqlite3.Connection) -> dict[str, RasterInfo]:
            wkts = dict(connection.execute("SELECT digest, wkt FROM crs"))
            found = {}
            for key, identity, header, digest in connection.execute(
                "SELECT key, identity, header, digest FROM headers"
            ):
                wanted = identities.get(key)
                if wanted is None or identity != _versioned(wanted):
                    continue
                if digest != _row_digest(key, identity, header):
                    continue  # damaged in a way SQLite did not notice: read the tile again
                info = _decode(header, wkts)
                if info is not None:
                    found[key] = info
            return found

        return self._use(read, {}, "read")

    def put(self, headers: Mapping[str, tuple[str, RasterInfo]]) -> None:
        """Keep headers, each with the identity of the object it was read from, in one transaction.

        A header that would not come back exactly (see the module's notes) is not kept. Failing
        to write only warns: the index is a cache.

        Args:
            headers: Object key -> (identity, header).
        """
        rows, crs_rows = [], {}
        for key, (identity, info) in headers.items():
            wkt = info.crs.to_wkt()
            if not _round_trips(wkt):
                continue
            crs_digest = hashlib.sha256(wkt.encode()).hexdigest()
            crs_rows[crs_digest] = wkt
            header = _encode(info, crs_digest)
            versioned = _versioned(identity)
            rows.append((key, versioned, header, _row_digest(key, versioned, header)))
        if not rows:
            return

        def write(connection: sqlite3.Connection) -> None:
            with connection:
                connection.execute("BEGIN IMMEDIATE")
                connection.executemany("INSERT OR REPLACE INTO crs VALUES (?, ?)", crs_rows.items())
                connection.executemany("INSERT OR REPLACE INTO headers VALUES (?, ?, ?, ?)", rows)

        self._use(write, None, "write")

    def _use(self, operation: Callable[[sqlite3.Connection], T], fallback: T, verb: str) -> T:
        """Run ``operation`` on a fresh connection; on a broken file, start it afresh once.

        Returns ``fallback`` (and warns) when the index cannot be used: the run goes on without.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        started_afresh = False
        while True:
            try:
                with self._connect() as connection:
                    return operation(connection)
            except sqlite3.Error as error:
                if _is_busy(error):
                    # SQLite answers "busy" at once, without waiting, where waiting could
                    # deadlock (two connections setting up a fresh file at the same moment), so
                    # the wait for another run's write is this loop's as well as SQLite's.
                    if time.monotonic() < deadline:
                        time.sleep(random.uniform(0.01, 0.05))
                        continue
                    log.warning(
                        "tile index %s is busy (another run holds it for over %g s); going on "
                        "without it this time",
                        self.path,
                        BUSY_TIMEOUT_S,
                    )
                    return fallback
                if started_afresh:
                    log.warning(
                        "cannot %s the tile index %s (%s); going on without it", verb, self.path, error
                    )
                    return fallback
                log.warning("the tile index %s is unreadable (%s); starting it afresh", self.path, error)
                started_afresh = True
                try:
                    self._remove()
                except OSError as removing:
                    log.warning(
                        "cannot remove the tile index %s (%s); going on without it", self.path, removing
                    )
                    return fallback
            except OSError as error:  # the cache folder cannot be made
                log.warning("cannot %s the tile index %s (%s); going on without it", verb, self.path, error)
                return fallback

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection to the file, laid out at SCHEMA_VERSION; closed after the block.

        A connection per call, not per run: the index is used twice per plan, and no handle
        stays open for the run's length.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE takes the
        # write lock up front, so two writers queue instead of failing part-way).
        with closing(sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            if connection.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                with connection:
                    connection.execute("BEGIN IMMEDIATE")
                    # Another run may have laid it out while this one waited for the lock.
                    if connection.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                        connection.execute("DROP TABLE IF EXISTS headers")
                        connection.execute("DROP TABLE IF EXISTS crs")
                        for statement in _SCHEMA:
                            connection.execute(statement)
                        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            yield connection

    def _remove(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)


def _is_busy(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _versioned(identity: str) -> str:
    return f"{READER}#{identity}"


def _row_digest(key: str, identity: str, header: str) -> str:
    return hashlib.sha256(json.dumps([key, identity, header]).encode()).hexdigest()[:32]


def _encode(info: RasterInfo, crs_digest: str) -> str:
    # JSON keeps floats exactly (shortest repr) and writes NaN and infinities as NaN/Infinity,
    # which Python reads back: a NaN nodata stays NaN (a REAL column would turn it into NULL).
    return json.dumps(
        {
            "width": info.width,
            "height": info.height,
            "count": info.count,
            "dtype": info.dtype,
            "crs": crs_digest,
            "transform": list(info.transform)[:6],
            "nodata": info.nodata,
        }
    )


def _decode(header: str, wkts: Mapping[str, str]) -> RasterInfo | None:
    """The header of a row, or None if the row does not make one (its CRS row lost or damaged)."""
    try:
        fields = json.loads(header)
        wkt = wkts[fields["crs"]]
        if hashlib.sha256(wkt.encode()).hexdigest() != fields["crs"]:
            return None
        nodata = fields["nodata"]
        return RasterInfo(
            width=int(fields["width"]),
            height=int(fields["height"]),
            count=int(fields["count"]),
            dtype=str(fields["dtype"]),
            crs=_crs(wkt),
            transform=Affine(*fields["transform"]),
            nodata=None if nodata is None else float(nodata),
        )
    except (ValueError, KeyError, TypeError):  # a row of another shape: a miss
        return None


@lru_cache(maxsize=64)
def _crs(wkt: str) -> CRS:
    """The CRS of a WKT, parsed once per run (a store's tiles mostly share one)."""
    return CRS.from_wkt(wkt)


@lru_cache(maxsize=64)
def _round_trips(wkt: str) -> bool:
    """Whether the CRS comes back from its WKT with the same WKT (so equal, and keyed alike)."""
    return CRS.from_wkt(wkt).to_wkt() == wkt
