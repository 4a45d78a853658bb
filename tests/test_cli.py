"""The command line end to end: synthetic scenes to S3, and the main job's baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from footprints.cli import main
from footprints.geo.layouts import find_tiles
from footprints.geo.stores import S3Options, open_store


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


def test_main_job_scores_the_default_model_and_the_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-q", "demo", "--out", str(tmp_path), "--tiles", "4", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "preview.png").stat().st_size > 10_000
    truth = tmp_path / "scene/AOI_9_Synthetic_Train/summaryData/AOI_9_Synthetic_Train_Building_Solutions.csv"
    f1 = {}
    for name in ("model", "baseline"):
        # The proposals files are valid SpaceNet CSVs: scoring them again gives the printed figures.
        proposals = tmp_path / f"{name}_proposals.csv"
        assert main(["score", "--truth", str(truth), "--proposals", str(proposals), "--json"]) == 0
        overall = json.loads(capsys.readouterr().out)["overall"]
        assert f"{overall['f1']:.4f}" in printed
        assert overall["tp"] + overall["fn"] > 50
        f1[name] = overall["f1"]
    # A brightness threshold must not solve the synthetic scenes; the shipped model does far better.
    assert f1["baseline"] < 0.3
    assert f1["model"] > 0.6
