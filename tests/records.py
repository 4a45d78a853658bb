"""Run records for tests that write GeoPackages without running the flow."""

from __future__ import annotations

from pathlib import Path

from footprints.geo.runs import RunRecord, RunSettings


def run_record(out: Path, run_id: str, crs: str = "EPSG:4326", method: str = "blocks") -> RunRecord:
    """A record of a run into ``out`` with the given id and output CRS."""
    return RunRecord(
        run_id=run_id,
        started="2026-01-01T00:00:00+00:00",
        out=str(out),
        aoi="test AOI",
        aoi_wkt="POLYGON EMPTY",
        aoi_crs=crs,
        source="test tiles",
        model=method,
        model_id=f"{method}@test",
        model_sha256="0" * 64,
        method=method,
        code_version="test",
        settings=RunSettings(crs=crs),
    )
