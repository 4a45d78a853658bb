"""A run that cannot read all of its AOI writes what it read, keeps what it did not, and fails.

The block scene (block_scene.py) runs once cleanly into a GeoPackage; then one of its tiles is cut
in half (its header reads, its pixels do not) and the same AOI runs again into the same file, for
real: `footprints run`, a Prefect flow run on the test harness's API, a Dask LocalCluster.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
from block_scene import CRS, block_checkpoint, scene_polygons, write_block_scene
from test_method_registry import SCENE_BBOX

from footprints.cli import main
from footprints.geo.runs import RunRecord

BAD_TILE = "tile_r1_c1.tif"
OPTIONS = ["--chip-size", "64", "--overlap", "24", "--simplify", "0", "--min-area", "1", "--workers", "1"]


def _run(source: Path, checkpoint: Path, out: Path, aoi: str = SCENE_BBOX) -> int:
    argv = ["-q", "run", "--aoi", aoi, "--aoi-crs", CRS, "--source", str(source)]
    return main([*argv, "--model", str(checkpoint), "--method", "blocks", "--out", str(out), *OPTIONS])


@pytest.fixture
def good_run(prefect_api: str, tmp_path: Path) -> tuple[Path, Path, Path, gpd.GeoDataFrame]:
    """The block scene, run cleanly once: its folder, checkpoint, output and buildings."""
    checkpoint = block_checkpoint(tmp_path / "blocks.pt")
    scene = tmp_path / "scene"
    write_block_scene(scene)
    out = tmp_path / "buildings.gpkg"
    assert _run(scene, checkpoint, out) == 0
    before = gpd.read_file(out, layer="buildings", engine="pyogrio")
    assert len(before) == len(scene_polygons())
    return scene, checkpoint, out, before


@pytest.mark.slow
def test_a_run_that_cannot_read_a_tile_fails_and_keeps_the_earlier_buildings_there(
    good_run: tuple[Path, Path, Path, gpd.GeoDataFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.client.orchestration import get_client

    scene, checkpoint, out, before = good_run
    capsys.readouterr()

    bad = scene / BAD_TILE
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    assert _run(scene, checkpoint, out) != 0

    # One clear message naming the tile; no traceback.
    error = capsys.readouterr().err
    assert "is partial" in error
    assert BAD_TILE in error
    assert "Traceback" not in error
    # Nothing is lost: every building once, the ones by the bad tile from the good run.
    after = gpd.read_file(out, layer="buildings", engine="pyogrio")
    assert len(after) == len(before)
    runs = [RunRecord.from_row(r) for r in pyogrio.read_dataframe(out, layer="runs").to_dict("records")]
    good, partial = runs
    assert set(after["run_id"]) == {good.run_id, partial.run_id}
    kept = after[after["run_id"] == good.run_id]
    assert len(kept) > 0
    assert all(BAD_TILE in tiles for tiles in kept["source_tiles"])
    # The runs table names what was missed, and the flow run did not end Completed.
    assert not good.partial
    assert partial.partial
    assert [Path(t).name for t in partial.failed_tiles] == [BAD_TILE]
    assert partial.failed_chips
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(uuid.UUID(partial.run_id)).state
    assert state is not None
    assert state.is_failed()


@pytest.mark.slow
def test_a_tile_whose_header_cannot_be_read_is_left_out_and_its_buildings_kept(
    good_run: tuple[Path, Path, Path, gpd.GeoDataFrame], tmp_path: Path
) -> None:
    scene, checkpoint, out, before = good_run

    (scene / BAD_TILE).write_bytes(b"not a GeoTIFF at all")
    # An AOI on the first tile alone does not need the bad one: it runs as before.
    first_tile = "500000,3999920,500080,4000000"
    assert _run(scene, checkpoint, tmp_path / "first.gpkg", aoi=first_tile) == 0
    first_run = RunRecord.from_row(
        pyogrio.read_dataframe(tmp_path / "first.gpkg", layer="runs").to_dict("records")[-1]
    )
    assert first_run.unreadable_tiles == [BAD_TILE]
    assert "not a readable raster" in first_run.errors[0]
    first = gpd.read_file(tmp_path / "first.gpkg", layer="buildings", engine="pyogrio")
    in_first = before[before["source_tiles"] == "tile_r0_c0.tif"]
    assert len(first) >= len(in_first) > 0
    # The whole AOI again: the buildings the bad tile held are kept from the good run.
    assert _run(scene, checkpoint, out) == 0
    after = gpd.read_file(out, layer="buildings", engine="pyogrio")
    assert len(after) == len(before)
    runs = [RunRecord.from_row(r) for r in pyogrio.read_dataframe(out, layer="runs").to_dict("records")]
    assert runs[-1].unreadable_tiles == [BAD_TILE]
    assert not runs[-1].partial
    kept = after[after["run_id"] == runs[0].run_id]
    assert len(kept) > 0
    assert all(BAD_TILE in tiles for tiles in kept["source_tiles"])
