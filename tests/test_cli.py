"""The command line end to end: synthetic scenes to S3, and the main job."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest

from footprints.cli import main
from footprints.geo.layouts import find_tiles
from footprints.geo.scoring import score_footprints
from footprints.geo.stores import S3Options, open_store
from footprints.geo.synth import scene_truth


def test_synth_writes_a_spacenet2_aoi_to_s3(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"s3://{s3_bucket}/synthetic"
    assert (
        main(["-q", "synth", "--out", uri, "--tiles", "2", "--seed", "7", "--endpoint-url", s3_endpoint]) == 0
    )
    assert "wrote 2 tiles" in capsys.readouterr().out
    tile_set = find_tiles(open_store(uri, S3Options(endpoint_url=s3_endpoint), tmp_path))
    assert tile_set.layout == "spacenet2"
    assert [t.image_id for t in tile_set.tiles] == ["AOI_9_Synthetic_img1", "AOI_9_Synthetic_img2"]
    assert tile_set.summary_keys == (
        "AOI_9_Synthetic_Train/summaryData/AOI_9_Synthetic_Train_Building_Solutions.csv",
    )
    truth = tile_set.summary_labels()
    for tile in tile_set.tiles:
        from_geojson = tile_set.pixel_labels(tile)
        from_csv = truth.geometry[(truth["image_id"] == tile.image_id) & ~truth.geometry.is_empty]
        assert len(from_geojson) == len(from_csv) > 0


@pytest.mark.slow
def test_main_job_runs_the_aoi_flow_and_scores_its_geopackage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-q", "demo", "--out", str(tmp_path), "--tiles", "4", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    gpkg = tmp_path / "buildings.gpkg"
    assert str(gpkg) in printed
    assert (tmp_path / "preview.png").stat().st_size > 10_000
    # The printed F1 is the GeoPackage's, scored again here against the scene's whole buildings.
    truth = scene_truth(find_tiles(open_store(tmp_path / "scene")))
    found = gpd.read_file(gpkg, layer="buildings", engine="pyogrio")
    overall = score_footprints(truth, found, 0.3).overall
    assert f"model: F1 {overall['f1']:.3f}" in printed
    assert overall["tp"] + overall["fn"] > 100
    # A brightness threshold does not solve the synthetic scenes; the shipped model does far better.
    baseline_f1 = float(printed.split("threshold baseline: F1 ")[1].split()[0])
    assert baseline_f1 < 0.3
    assert overall["f1"] > 0.6
