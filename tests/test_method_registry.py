"""A method registered from a test runs through `footprints run` and `footprints eval`, with no
change to flows/ or tasks/: the registry is the whole contract between a method and the pipeline.

The toy method is block_scene.py's connected-components segmenter, which reads the block scene
perfectly, so anything short of F1 1.0 is the pipeline's fault.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from block_scene import CRS, block_checkpoint, scene_polygons, scene_transform, write_block_scene

from footprints.cli import build_parser, main
from footprints.geo.labels import apply_affine
from footprints.geo.scoring import score_footprints

SCENE_BBOX = "500000,3999840,500160,4000000"


def truth() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        geometry=apply_affine(np.array(scene_polygons(), dtype=object), scene_transform()), crs=CRS
    )


@pytest.fixture(scope="module")
def labelled_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The block scene's tiles, each with a same-stem GeoJSON of every building (clipped on reading)."""
    folder = tmp_path_factory.mktemp("labelled-blocks")
    for tile in write_block_scene(folder):
        truth().to_file(tile.with_suffix(".geojson"), driver="GeoJSON", engine="pyogrio")
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return block_checkpoint(tmp_path_factory.mktemp("model") / "blocks.pt")


def test_the_command_line_offers_the_registered_method() -> None:
    run = build_parser().parse_args(["run", "--aoi", "0,0,1,1", "--source", ".", "--out", "x.gpkg"])
    assert run.method is None
    chosen = build_parser().parse_args(
        ["run", "--aoi", "0,0,1,1", "--source", ".", "--out", "x.gpkg", "--method", "blocks"]
    )
    assert chosen.method == "blocks"


@pytest.mark.slow
def test_a_registered_method_runs_through_footprints_run(
    prefect_api: str, labelled_scene: Path, checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "blocks.gpkg"
    options = ["--chip-size", "64", "--overlap", "24", "--simplify", "0", "--min-area", "1", "--workers", "1"]
    code = main(
        [
            "-q",
            "run",
            "--aoi",
            SCENE_BBOX,
            "--aoi-crs",
            CRS,
            "--source",
            str(labelled_scene),
            "--model",
            str(checkpoint),
            "--method",
            "blocks",
            "--out",
            str(out),
            *options,
        ]
    )
    assert code == 0
    found = gpd.read_file(out, layer="buildings", engine="pyogrio")
    assert set(found["method"]) == {"blocks"}
    report = score_footprints(truth(), found, 0.5).overall
    assert report["f1"] == 1.0, report


def test_a_registered_method_runs_through_footprints_eval(
    labelled_scene: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-q", "eval", "--model", str(checkpoint), "--data", str(labelled_scene), "--json"]) == 0
    overall = json.loads(capsys.readouterr().out)["overall"]
    assert overall["f1"] == 1.0, overall
    assert overall["tp"] >= len(scene_polygons())  # buildings on seams count once per tile


def test_a_checkpoint_of_another_method_is_refused(
    labelled_scene: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["-q", "eval", "--model", str(checkpoint), "--method", "threshold", "--data", str(labelled_scene)]
    )
    assert code == 2
    assert f"{checkpoint}: is a blocks checkpoint, not threshold" in capsys.readouterr().err
