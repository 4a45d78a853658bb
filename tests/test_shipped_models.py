"""Every shipped building model, through the main job on a synthetic AOI: the GeoPackage's
buildings scored against the scene's truth."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest

from footprints.cli import main
from footprints.geo.layouts import find_tiles
from footprints.geo.scoring import score_footprints
from footprints.geo.stores import LocalStore
from footprints.geo.synth import scene_truth, write_scene
from footprints.models.registry import get_method

# The F1 each model must beat on the scene; measured: spatial embeddings 0.72, semi-conv 0.64,
# centroid-pointer 0.83.
# The brightness-threshold baseline scores about 0.1 on such scenes. (Vec2Instance, the default,
# is scored by the main job's own test in test_cli.py.)
FLOORS = {"spatial-embeddings": 0.6, "semi-conv": 0.5, "centroid-pointer": 0.7}


@pytest.mark.slow
@pytest.mark.parametrize("method", FLOORS)
def test_the_shipped_model_finds_the_buildings_of_a_scene_through_footprints_run(
    method: str, prefect_api: str, tmp_path: Path
) -> None:
    shipped = get_method(method).checkpoint
    assert shipped is not None
    assert shipped.stat().st_size < 10_000_000
    store = LocalStore(tmp_path / "scene")
    write_scene(store.write_bytes, 4, 5, gsd_m=0.3)
    tile_set = find_tiles(store)
    out = tmp_path / "buildings.gpkg"
    command = ["-q", "run", f"--aoi={tile_set.bbox()}", "--source", str(store.root), "--out", str(out)]
    assert main([*command, "--model", str(shipped), "--workers", "1"]) == 0
    found = gpd.read_file(out, layer="buildings", engine="pyogrio")
    assert set(found["method"]) == {method}
    report = score_footprints(scene_truth(tile_set), found, 0.3).overall
    assert report["f1"] > FLOORS[method], report
