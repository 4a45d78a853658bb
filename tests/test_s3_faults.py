"""S3 faults are retried, not fatal: reads through a proxy that fails a share of requests.

The proxy (fault_proxy.py) is a real HTTP server on loopback in front of the tests' moto server;
it answers a share of requests with 503 SlowDown or 500 InternalError, resets the connection, or
cuts an answer's body short. Nothing is patched: boto3 and GDAL talk HTTP to it as they would to
S3, and what saves the reads is their retry configuration in geo/stores.py.

The shares default to 30%; to measure what a run survives, name others (and seeds):

    FOOTPRINTS_FAULT_SHARES=0.3,0.5,0.7 FOOTPRINTS_FAULT_SEEDS=1,2,3 \\
        .venv/bin/pytest tests/test_s3_faults.py -s

Each test prints the requests and faults its proxy saw.
"""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import geopandas as gpd
import numpy as np
import pytest
import shapely
from block_scene import CRS, block_checkpoint, scene_polygons, write_block_scene
from fault_proxy import FAULT_KINDS, FaultProxy, fault_proxy
from rasterio.windows import Window
from test_method_registry import SCENE_BBOX

from footprints.cli import main
from footprints.geo.layouts import find_tiles
from footprints.geo.raster import raster_info, read_window
from footprints.geo.stores import S3Options, S3Store


def _floats(name: str, default: str) -> list[float]:
    """A comma-separated list of numbers from the environment variable ``name``."""
    return [float(v) for v in os.environ.get(name, default).split(",") if v.strip()]


SHARES = _floats("FOOTPRINTS_FAULT_SHARES", "0.3")
SEEDS = [int(v) for v in _floats("FOOTPRINTS_FAULT_SEEDS", "1")]
COPIES = ("east", "north", "west")  # the block scene under several prefixes: more requests to fail
WINDOW = Window.from_slices((40, 130), (30, 130))  # rows, columns
OPTIONS = ["--chip-size", "64", "--overlap", "24", "--simplify", "0", "--min-area", "1", "--workers", "1"]


def upload_scene(endpoint: str, bucket: str, folder: Path, prefixes: tuple[str, ...]) -> list[Path]:
    """Write the block scene's tiles into ``folder`` and upload them under each prefix, directly."""
    paths = write_block_scene(folder)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for prefix in prefixes:
        for path in paths:
            client.upload_file(str(path), bucket, f"{prefix}/{path.name}")
    return paths


def tag(share: float, seed: int) -> str:
    """A prefix of one share and seed: the bucket (named after a truncated test name) may be shared,
    and GDAL keeps the headers it read by path, so every case reads paths of its own."""
    return f"share{share * 100:g}-seed{seed}"


def report(proxy: FaultProxy) -> str:
    """The proxy's counts, printed for a measuring run (pytest -s) and returned for messages."""
    line = proxy.describe()
    print(f"\n{line}")
    return line


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("share", SHARES)
def test_listing_headers_and_downloads_survive_faults(
    share: float, seed: int, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    """What a run reads from S3: the listing, headers in place, HEADs and whole downloads."""
    prefixes = tuple(f"{tag(share, seed)}/{copy}" for copy in COPIES)
    tiles = upload_scene(s3_endpoint, s3_bucket, tmp_path / "scene", prefixes)
    direct = S3Store(f"s3://{s3_bucket}", S3Options(endpoint_url=s3_endpoint), tmp_path / "direct")
    keys = [f"{prefix}/{path.name}" for prefix in prefixes for path in tiles]
    local = {key: tmp_path / "scene" / Path(key).name for key in keys}

    with fault_proxy(s3_endpoint, share, seed) as proxy:
        try:
            store = S3Store(f"s3://{s3_bucket}", S3Options(endpoint_url=proxy.url), tmp_path / "faulty")
            listed = store.list(tag(share, seed))
            with store.gdal_env():  # through /vsis3/: range GETs of the header only
                headers = {key: raster_info(store.header_path(key)) for key in keys}
            heads = {key: store.head(key) for key in keys}
            downloads = {key: store.local_path(key) for key in keys}
        finally:
            line = report(proxy)

    assert listed == direct.list(tag(share, seed)), line
    assert [info.key for info in listed] == sorted(keys)
    for key, path in local.items():
        assert headers[key] == raster_info(path), key
        assert heads[key].size == path.stat().st_size
        assert downloads[key].read_bytes() == path.read_bytes(), key
        np.testing.assert_array_equal(read_window(downloads[key], WINDOW), read_window(path, WINDOW))
    if share >= 0.2:
        # The faults did happen, of every kind, on both clients' requests.
        assert set(proxy.stats()["faults"]) == set(FAULT_KINDS), line
        assert set(proxy.stats()["faulted"]) == {"GET", "HEAD"}, line


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("share", SHARES)
def test_window_reads_in_place_survive_faults(
    share: float, seed: int, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    """Pixels read in place through /vsis3/ (range GETs), under the faults GDAL retries.

    Not under cut bodies: GDAL 3.10 takes a 206 answer whose body a reset cuts short for an
    answer (CPL_DEBUG: "response_code=206, msg=Recv failure: Connection reset by peer") and
    does not retry it, so the read fails. The pipeline reads pixels from downloaded copies
    (retried by S3Store), and in place only headers.
    """
    prefixes = tuple(f"{tag(share, seed)}/in-place-{copy}" for copy in COPIES)
    tiles = upload_scene(s3_endpoint, s3_bucket, tmp_path / "scene", prefixes)
    keys = [f"{prefix}/{path.name}" for prefix in prefixes for path in tiles]
    with fault_proxy(s3_endpoint, share, seed, kinds=("slowdown", "internal", "reset")) as proxy:
        try:
            store = S3Store(f"s3://{s3_bucket}", S3Options(endpoint_url=proxy.url), tmp_path / "faulty")
            with store.gdal_env():
                windows = {key: read_window(store.header_path(key), WINDOW) for key in keys}
        finally:
            line = report(proxy)

    for key, window in windows.items():
        expected = read_window(tmp_path / "scene" / Path(key).name, WINDOW)
        np.testing.assert_array_equal(window, expected, err_msg=key)
    if share >= 0.2:
        assert proxy.faults > 0, line


def _run(source: str, endpoint: str, checkpoint: Path, out: Path) -> int:
    argv = ["-q", "run", "--aoi", SCENE_BBOX, "--aoi-crs", CRS, "--source", source, "--out", str(out)]
    model = ["--model", str(checkpoint), "--method", "blocks"]
    return main([*argv, *model, "--endpoint-url", endpoint, *OPTIONS])


def _geometries(path: Path) -> list[str]:
    """The buildings' outlines, normalised and sorted, as WKT: equal lists are equal outputs."""
    found = gpd.read_file(path, layer="buildings", engine="pyogrio")
    return sorted(shapely.to_wkt(shapely.normalize(found.geometry.values), rounding_precision=9))


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("share", SHARES)
def test_a_run_through_faults_writes_what_a_run_without_them_writes(
    share: float,
    seed: int,
    prefect_api: str,
    s3_endpoint: str,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upload_scene(s3_endpoint, s3_bucket, tmp_path / "scene", (tag(share, seed),))
    checkpoint = block_checkpoint(tmp_path / "blocks.pt")
    source = f"s3://{s3_bucket}/{tag(share, seed)}"

    # The faulty run goes first, so that nothing it reads is in a cache yet (GDAL keeps the
    # headers it read in the process); each run has its own download cache.
    monkeypatch.setenv("FOOTPRINTS_CACHE", str(tmp_path / "cache-faulty"))
    with fault_proxy(s3_endpoint, share, seed) as proxy:
        code = _run(source, proxy.url, checkpoint, tmp_path / "faulty.gpkg")
    line = report(proxy)
    monkeypatch.setenv("FOOTPRINTS_CACHE", str(tmp_path / "cache-direct"))
    assert _run(source, s3_endpoint, checkpoint, tmp_path / "direct.gpkg") == 0

    assert code == 0, line
    expected = _geometries(tmp_path / "direct.gpkg")
    assert len(expected) == len(scene_polygons())
    assert _geometries(tmp_path / "faulty.gpkg") == expected, line
    if share >= 0.2:
        assert proxy.faults > 0, line


def test_a_header_that_cannot_be_read_in_place_is_read_from_the_whole_object(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    """A store failing GDAL's reads for longer than GDAL retries is not mistaken for a broken tile.

    Every ranged read (GDAL's, in place) is answered 404, which GDAL does not retry; the tile
    set then fetches the whole object with the store's own client and reads the header from it.
    """
    tiles = upload_scene(s3_endpoint, s3_bucket, tmp_path / "scene", ("gone",))
    with fault_proxy(s3_endpoint, 1.0, kinds=("missing",), ranged_only=True) as proxy:
        store = S3Store(f"s3://{s3_bucket}", S3Options(endpoint_url=proxy.url), tmp_path / "cache")
        tile_set = find_tiles(store, "gone/")
        headers = [tile_set.info(tile) for tile in tile_set.tiles]
        line = report(proxy)
    assert proxy.stats()["faults"] == {"missing": proxy.faults}, line
    assert proxy.faults >= len(tiles)
    assert headers == [raster_info(path) for path in sorted(tiles)]
