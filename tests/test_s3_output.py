"""An S3 output: a working copy of the object, uploaded whole, never over another run's write."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from footprints.geo.errors import InputError
from footprints.geo.outputs import open_output
from footprints.geo.stores import S3Options


def test_an_upload_never_replaces_what_another_run_wrote_meanwhile(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = S3Options(endpoint_url=s3_endpoint)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    out = f"s3://{s3_bucket}/nightly/buildings.gpkg"
    monkeypatch.setenv("FOOTPRINTS_CACHE", str(tmp_path / "first"))
    first = open_output(out, "EPSG:4326", s3)
    monkeypatch.setenv("FOOTPRINTS_CACHE", str(tmp_path / "second"))
    second = open_output(out, "EPSG:4326", s3)
    assert first.path != second.path
    assert not first.path.exists()  # no object yet: the run starts a new file

    first.path.write_bytes(b"first run's file")
    assert first.publish()
    second.path.write_bytes(b"second run's file, made without the first's")
    # The object is no longer the one the second run started from: nothing is uploaded, and
    # its copy now holds the first run's file, for it to write into again.
    assert not second.publish()
    assert second.path.read_bytes() == b"first run's file"
    second.path.write_bytes(b"first run's file + second run's")
    assert second.publish()
    body = client.get_object(Bucket=s3_bucket, Key="nightly/buildings.gpkg")["Body"].read()
    assert body == b"first run's file + second run's"


def test_an_existing_object_that_is_not_a_geopackage_is_refused_by_its_address(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOOTPRINTS_CACHE", str(tmp_path))
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").put_object(
        Bucket=s3_bucket, Key="out.gpkg", Body=b"not a database"
    )
    out = f"s3://{s3_bucket}/out.gpkg"
    with pytest.raises(InputError, match=f"^{out}: exists but is not a readable GeoPackage"):
        open_output(out, "EPSG:4326", S3Options(endpoint_url=s3_endpoint))
