"""Tile stores over a local folder and over a real S3 API (moto server on loopback)."""

from __future__ import annotations

import shutil
from pathlib import Path

import boto3
import numpy as np
import pytest
from rasterio.windows import Window

from footprints.geo.errors import StoreError
from footprints.geo.files import atomic_file
from footprints.geo.layouts import find_tiles
from footprints.geo.raster import read_window
from footprints.geo.stores import LocalStore, S3Options, S3Store, open_store


def count_calls(store: S3Store, operation: str) -> list[str]:
    """Record each request of one S3 operation that the store's client sends."""
    calls: list[str] = []
    store.client.meta.events.register(f"before-call.s3.{operation}", lambda **_: calls.append(operation))
    return calls


def upload_folder(folder: Path, endpoint: str, bucket: str, prefix: str) -> None:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def test_local_store_lists_by_prefix_and_writes_atomically(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes("a/b/one.txt", b"1")
    store.write_bytes("a/two.txt", b"22")
    store.write_bytes("c/three.txt", b"333")
    assert [o.key for o in store.list("a/")] == ["a/b/one.txt", "a/two.txt"]
    assert [o.key for o in store.list("a/t")] == ["a/two.txt"]
    assert store.read_bytes("c/three.txt") == b"333"
    assert [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(".")] == []
    with pytest.raises(StoreError, match=r"missing\.txt: no such file"):
        store.local_path("missing.txt")


@pytest.mark.slow
def test_s3_store_lists_reads_and_writes(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    store = open_store(f"s3://{s3_bucket}/scenes", S3Options(endpoint_url=s3_endpoint), tmp_path)
    assert isinstance(store, S3Store)
    for i in range(1205):  # more than one page of ListObjectsV2
        store.write_bytes(f"many/{i:05d}.txt", str(i).encode())
    store.write_bytes("other/x.txt", b"x")
    keys = [o.key for o in store.list("many/")]
    assert len(keys) == 1205
    assert keys[:2] == ["many/00000.txt", "many/00001.txt"]
    assert store.read_bytes("many/01204.txt") == b"1204"
    assert store.describe("other/x.txt") == f"s3://{s3_bucket}/scenes/other/x.txt"


def test_s3_cache_downloads_once_and_again_after_a_change(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    options = S3Options(endpoint_url=s3_endpoint)
    S3Store(f"s3://{s3_bucket}", options, tmp_path).write_bytes("tile.tif", b"version one")

    first_run = S3Store(f"s3://{s3_bucket}", options, tmp_path)
    gets = count_calls(first_run, "GetObject")
    path = first_run.local_path("tile.tif")
    assert path.read_bytes() == b"version one"
    assert len(gets) == 1

    second_run = S3Store(f"s3://{s3_bucket}", options, tmp_path)  # a new process would start like this
    gets = count_calls(second_run, "GetObject")
    assert second_run.local_path("tile.tif") == path
    assert gets == []

    second_run.write_bytes("tile.tif", b"version two, longer")
    assert second_run.local_path("tile.tif").read_bytes() == b"version two, longer"
    assert len(gets) == 1


def test_window_reads_from_s3_match_local_reads(
    shared_data: Path, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    sample = shared_data / "oam_banepa"
    upload_folder(sample / "oam", s3_endpoint, s3_bucket, "banepa/oam")
    shutil.copy(next((sample / "osm").glob("*.geojson")), tmp_path / "labels.geojson")
    upload_folder(tmp_path, s3_endpoint, s3_bucket, "banepa/osm")

    remote = find_tiles(
        open_store(f"s3://{s3_bucket}/banepa", S3Options(endpoint_url=s3_endpoint), tmp_path / "cache")
    )
    local = find_tiles(LocalStore(sample))
    assert [t.image_id for t in remote.tiles] == [t.image_id for t in local.tiles]
    tile_r, tile_l = remote.tiles[5], local.tiles[5]
    # The georeferencing of these JPEGs lives in .aux.xml sidecars, which must travel with them.
    assert tile_r.sidecars
    assert remote.info(tile_r).transform == local.info(tile_l).transform
    window = Window(100, 50, 128, 96)
    np.testing.assert_array_equal(
        read_window(remote.image_path(tile_r), window), read_window(local.image_path(tile_l), window)
    )
    assert len(remote.pixel_labels(tile_r)) == len(local.pixel_labels(tile_l)) > 0


def test_unsigned_requests_carry_no_signature(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    S3Store(f"s3://{s3_bucket}", S3Options(endpoint_url=s3_endpoint), tmp_path).write_bytes("k", b"v")
    for unsigned in (False, True):
        store = S3Store(f"s3://{s3_bucket}", S3Options(endpoint_url=s3_endpoint, unsigned=unsigned), tmp_path)
        headers: list[dict[str, str]] = []
        store.client.meta.events.register(
            "before-send.s3", lambda request, seen=headers, **_: seen.append(dict(request.headers))
        )
        assert [o.key for o in store.list()] == ["k"]
        assert ("Authorization" in headers[0]) is not unsigned


def test_region_and_profile_are_honoured(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text("[mapper]\naws_access_key_id = mapperkey\naws_secret_access_key = mappersecret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    store = S3Store(
        f"s3://{s3_bucket}",
        S3Options(endpoint_url=s3_endpoint, region="eu-west-1", profile="mapper"),
        tmp_path,
    )
    assert store.client.meta.region_name == "eu-west-1"
    headers: list[str] = []
    store.client.meta.events.register(
        "before-send.s3", lambda request, **_: headers.append(request.headers["Authorization"].decode())
    )
    store.list()
    assert "Credential=mapperkey/" in headers[0]
    with pytest.raises(StoreError, match="AWS profile 'nobody' not found"):
        S3Store(f"s3://{s3_bucket}", S3Options(endpoint_url=s3_endpoint, profile="nobody"), tmp_path)


def test_a_failed_write_leaves_neither_a_partial_file_nor_a_changed_one(tmp_path: Path) -> None:
    target = tmp_path / "out" / "tile.tif"
    with atomic_file(target) as f:
        f.write(b"complete")

    def write_half_then_fail() -> None:
        with atomic_file(target) as f:
            f.write(b"half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_half_then_fail()
    assert target.read_bytes() == b"complete"
    assert sorted(p.name for p in target.parent.iterdir()) == ["tile.tif"]
