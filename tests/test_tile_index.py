"""The tile index: a plan reads each tile's header once per object identity (ETag and size).

Plans run against the tests' moto server through the fault proxy (tests/fault_proxy.py) with no
faults; it records every request it forwards. GDAL reads a header in place with GETs that carry
a Range, so those name the tiles whose headers a plan read. Each plan goes through a proxy of its
own: within a process GDAL keeps the blocks it read per URL, and a new endpoint starts it cold,
as the new process of a nightly run does. (The index is keyed by the store's URI, which names
the bucket and prefix, not the endpoint.)
"""

from __future__ import annotations

import logging
import math
import sqlite3
import struct
import threading
from pathlib import Path

import pytest
from fault_proxy import FaultProxy, fault_proxy
from rasterio.crs import CRS
from rasterio.transform import Affine

from footprints.geo import tile_index
from footprints.geo.aoi import read_aoi
from footprints.geo.chips import ChipPlan
from footprints.geo.layouts import find_tiles
from footprints.geo.raster import RasterInfo
from footprints.geo.stores import S3Options, open_store
from footprints.geo.synth import write_scene
from footprints.geo.tile_index import TileIndex
from footprints.tasks.inference import plan_run

BROKEN = "AOI_9_Synthetic_Train/RGB-PanSharpen/RGB-PanSharpen_AOI_9_Synthetic_img99.tif"


def write_tiles(endpoint: str, bucket: str, tiles: int) -> tuple[str, list[str], str]:
    """A synthetic AOI of small tiles in ``bucket``: its store URI, its tile keys and its bbox."""
    uri = f"s3://{bucket}/scene"
    store = open_store(uri, S3Options(endpoint_url=endpoint))
    keys = list(write_scene(store.write_bytes, tiles, 3, tile_size=64).tile_keys)
    return uri, keys, find_tiles(store).bbox()  # read directly from moto, through no index


def plan(uri: str, endpoint: str, bbox: str) -> tuple[ChipPlan, FaultProxy]:
    """plan_run (the task's function) over the whole AOI, through a proxy of its own, and the proxy."""
    with fault_proxy(endpoint, 0.0) as proxy:
        planned = plan_run.fn(read_aoi(bbox, "EPSG:4326"), uri, S3Options(endpoint_url=proxy.url), 64, 16)
    return planned, proxy


def header_reads(proxy: FaultProxy, uri: str) -> set[str]:
    """The keys (relative to the store) that the proxy saw ranged GETs of."""
    root = "/" + uri.removeprefix("s3://") + "/"
    return {path.removeprefix(root) for _, path, byte_range in proxy.requested() if byte_range}


def index_of(uri: str) -> TileIndex:
    """The index a plan of ``uri`` uses (under the test's own FOOTPRINTS_CACHE, see conftest)."""
    return TileIndex.for_store(uri)


def test_a_second_plan_sends_no_header_read(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, keys, bbox = write_tiles(s3_endpoint, s3_bucket, 4)
    first, proxy = plan(uri, s3_endpoint, bbox)
    assert header_reads(proxy, uri) == set(keys)
    assert set(first.tiles) == set(keys)
    assert index_of(uri).path.is_file()

    second, proxy = plan(uri, s3_endpoint, bbox)
    # The listing and nothing else: no header read, no HEAD, no download.
    assert [(method, byte_range) for method, _, byte_range in proxy.requested()] == [("GET", "")]
    assert "list-type=2" in proxy.requested()[0][1]
    assert second == first
    for key in keys:  # the CRS's WKT too, which a run's resume keys are made of
        assert second.tiles[key].info.crs.to_wkt() == first.tiles[key].info.crs.to_wkt()

    # The control: it is the index that saves the reads, not a cache of GDAL's. With another
    # cache root (an empty index), every header is read again.
    monkeypatch.setenv("FOOTPRINTS_CACHE", str(tmp_path / "another-cache"))
    third, proxy = plan(uri, s3_endpoint, bbox)
    assert header_reads(proxy, uri) == set(keys)
    assert third == first


def test_a_replaced_tile_alone_is_read_again_and_its_new_header_used(
    s3_endpoint: str, s3_bucket: str
) -> None:
    uri, keys, bbox = write_tiles(s3_endpoint, s3_bucket, 4)
    first, _ = plan(uri, s3_endpoint, bbox)
    store = open_store(uri, S3Options(endpoint_url=s3_endpoint))
    replaced = keys[1]
    # The tile moved east by 1e-6 degrees: its origin's longitude, a double in the GeoTIFF's
    # georeferencing tags, rewritten in place. Same size, so only the ETag tells the objects apart.
    west = first.tiles[replaced].info.transform.c
    content = store.read_bytes(replaced)
    assert struct.pack("<d", west) in content
    store.write_bytes(replaced, content.replace(struct.pack("<d", west), struct.pack("<d", west + 1e-6)))
    listed = {o.key: o for o in store.list()}
    assert listed[replaced].size == len(content)

    second, proxy = plan(uri, s3_endpoint, bbox)
    assert header_reads(proxy, uri) == {replaced}
    assert second.tiles[replaced].info.transform.c == west + 1e-6
    assert second.tiles[replaced].etag == listed[replaced].etag != first.tiles[replaced].etag
    for key in keys:
        if key != replaced:
            assert second.tiles[key] == first.tiles[key]

    third, proxy = plan(uri, s3_endpoint, bbox)  # the new header was kept
    assert header_reads(proxy, uri) == set()
    assert third.tiles[replaced] == second.tiles[replaced]


def test_a_corrupt_index_is_rebuilt_and_the_run_plans_as_before(
    s3_endpoint: str, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    uri, keys, bbox = write_tiles(s3_endpoint, s3_bucket, 4)
    first, _ = plan(uri, s3_endpoint, bbox)
    path = index_of(uri).path
    path.write_bytes(b"this is no SQLite database " * 200)

    with caplog.at_level(logging.WARNING, logger="footprints.geo.tile_index"):
        second, proxy = plan(uri, s3_endpoint, bbox)
    assert second == first
    assert header_reads(proxy, uri) == set(keys)
    assert any(str(path) in r.getMessage() and "afresh" in r.getMessage() for r in caplog.records)

    third, proxy = plan(uri, s3_endpoint, bbox)  # rebuilt, and used again
    assert header_reads(proxy, uri) == set()
    assert third == first


def test_an_unreadable_tile_is_not_kept_and_is_read_every_run(s3_endpoint: str, s3_bucket: str) -> None:
    uri, keys, bbox = write_tiles(s3_endpoint, s3_bucket, 2)
    open_store(uri, S3Options(endpoint_url=s3_endpoint)).write_bytes(BROKEN, b"II*\0 cut short")
    for _ in range(2):
        planned, proxy = plan(uri, s3_endpoint, bbox)
        assert list(planned.unreadable) == [BROKEN]
        assert set(planned.tiles) == set(keys)
    assert header_reads(proxy, uri) == {BROKEN}  # the second run read the broken tile alone


def test_headers_round_trip_exactly(tmp_path: Path) -> None:
    index = TileIndex(tmp_path / "index.sqlite")
    utm = RasterInfo(
        650, 651, 8, "uint16", CRS.from_epsg(32616), Affine(0.3, 0.0, 733601.1, 0.0, -0.3, 3725139.7), 0.0
    )
    wgs = RasterInfo(
        64, 64, 3, "uint8", CRS.from_epsg(4326), Affine(2.7e-06, 1e-12, -115.2, 0.0, -2.7e-06, 36.15), None
    )
    nan = RasterInfo(
        10, 20, 1, "float32", CRS.from_epsg(3857), Affine(1 / 3, 0, 1e7 / 3, 0, -1 / 3, 0), math.nan
    )
    index.put({"a.tif": ("a|e1|10", utm), "b.tif": ("b|e2|20", wgs), "c.tif": ("c|e3|30", nan)})

    kept = TileIndex(tmp_path / "index.sqlite").get(
        {"a.tif": "a|e1|10", "b.tif": "b|e2|20", "c.tif": "c|e3|30"}
    )
    assert kept["a.tif"] == utm
    assert kept["b.tif"] == wgs
    assert kept["c.tif"].nodata is not None
    assert math.isnan(kept["c.tif"].nodata)
    assert kept["c.tif"].transform == nan.transform
    for key, info in (("a.tif", utm), ("b.tif", wgs), ("c.tif", nan)):
        assert kept[key].crs.to_wkt() == info.crs.to_wkt()
        assert type(kept[key].nodata) is type(info.nodata)

    # Another identity (the object changed) or an unknown key is a miss.
    assert index.get({"a.tif": "a|e9|10", "d.tif": "d|e4|40"}) == {}
    # A row damaged where SQLite does not notice (a digit of the transform) is a miss, not a
    # wrong header.
    with sqlite3.connect(index.path) as connection:
        connection.execute("UPDATE headers SET header = replace(header, '733601.1', '733602.1')")
    connection.close()
    assert set(index.get({"a.tif": "a|e1|10", "b.tif": "b|e2|20"})) == {"b.tif"}


def test_a_busy_index_is_gone_without_and_concurrent_writers_both_land(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    info = RasterInfo(64, 64, 3, "uint16", CRS.from_epsg(4326), Affine(1e-5, 0, -115.2, 0, -1e-5, 36.1), None)
    path = tmp_path / "index.sqlite"
    writers = [
        threading.Thread(target=TileIndex(path).put, args=({f"{n}.tif": (f"{n}", info)},)) for n in range(8)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert set(TileIndex(path).get({f"{n}.tif": f"{n}" for n in range(8)})) == {f"{n}.tif" for n in range(8)}

    # Another run holds the write lock for longer than the index waits: this one writes nothing
    # and goes on, and reads (WAL: readers do not wait for a writer) as before.
    monkeypatch.setattr(tile_index, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with caplog.at_level(logging.WARNING, logger="footprints.geo.tile_index"):
            TileIndex(path).put({"late.tif": ("late", info)})
            assert set(TileIndex(path).get({"0.tif": "0"})) == {"0.tif"}
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert any("busy" in r.getMessage() for r in caplog.records)
    # The index was left alone, not taken for a broken one.
    assert set(TileIndex(path).get({"0.tif": "0", "late.tif": "late"})) == {"0.tif"}
