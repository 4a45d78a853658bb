"""AWS credentials in the environment cost a run nothing: credentials are looked up once per store.

Every S3 deployment has AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in its environment (the
autouse fixture in conftest.py sets dummy ones). rasterio builds a boto3 session from them, and
looks the credentials up, whenever it sets up a GDAL environment of its own: once for every
chip read and every polygon vectorised, were nothing done about it (geo/raster.py's local_gdal
and geo/vectorise.py explain the fix). The lookups are counted from botocore's own log record of
each ("Found credentials in environment variables."), on a real run over a real S3 API (moto on
loopback).
"""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest

from footprints.cli import main
from footprints.geo.layouts import find_tiles
from footprints.geo.stores import S3Options, S3Store
from footprints.geo.synth import write_scene
from footprints.geo.vectorise import mask_to_polygon

WORKERS = 2
# Besides the workers' stores (one each), the driver opens the source once, to plan the run.
DRIVER_STORES = 1


def _lookups(caplog: pytest.LogCaptureFixture) -> int:
    """botocore's records of finding credentials in the environment: one per lookup."""
    return sum(
        r.name == "botocore.credentials" and r.getMessage().startswith("Found credentials")
        for r in caplog.records
    )


def test_a_run_looks_credentials_up_once_per_store_not_per_polygon(
    prefect_api: str, s3_endpoint: str, s3_bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = f"s3://{s3_bucket}/scene"
    options = S3Options(endpoint_url=s3_endpoint)
    summary = write_scene(S3Store(source, options, tmp_path / "writer").write_bytes, 1, 1, tile_size=512)
    aoi = find_tiles(S3Store(source, options, tmp_path / "planner")).bbox()
    out = tmp_path / "buildings.gpkg"
    argv = ["-q", "run", f"--aoi={aoi}", "--source", source, "--endpoint-url", s3_endpoint, "--out", str(out)]
    sizes = ["--chip-size", "128", "--overlap", "32", "--workers", str(WORKERS)]

    # Set on botocore.credentials itself, so that a level set on "botocore" does not hide them.
    with caplog.at_level(logging.INFO, logger="botocore.credentials"):
        caplog.clear()
        code = main([*argv, *sizes])
        lookups = _lookups(caplog)

    assert code == 0
    buildings = len(gpd.read_file(out, layer="buildings", engine="pyogrio"))
    # Dozens of polygons were vectorised (more than the buildings written: chips overlap) ...
    assert buildings >= 15, f"{buildings} buildings of {summary.buildings}"
    # ... and credentials were looked up by the stores alone. At least one lookup shows that the
    # records are seen at all.
    assert 1 <= lookups <= WORKERS + DRIVER_STORES, f"{lookups} credential lookups, {buildings} buildings"


def test_vectorising_outside_any_gdal_environment_looks_nothing_up(caplog: pytest.LogCaptureFixture) -> None:
    """Polygons traced by code that set up no GDAL environment (evaluation, the baseline)."""
    mask = np.zeros((40, 40), bool)
    mask[5:30, 8:33] = True
    with caplog.at_level(logging.INFO, logger="botocore.credentials"):
        polygons = [mask_to_polygon(mask, row, 0) for row in range(20)]
    assert all(p.area == 25 * 25 for p in polygons)
    assert _lookups(caplog) == 0
