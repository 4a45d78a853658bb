"""Training: a small model overfits one synthetic tile; the Prefect flow trains, validates and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
import torch

from footprints.cli import main
from footprints.flows.training import train_flow
from footprints.geo.errors import InputError
from footprints.geo.stores import LocalStore, S3Options, open_store
from footprints.geo.synth import write_scene
from footprints.models.checkpoint import load_checkpoint, save_checkpoint
from footprints.models.data import Augmentation, ChipSampler
from footprints.models.deployed import Deployed
from footprints.models.registry import get_method, load_segmenter
from footprints.models.training import TrainConfig, last_path, train
from footprints.models.vec2instance import Vec2InstanceConfig, Vec2InstanceModel, Vec2InstanceSegmenter
from footprints.tasks.evaluation import eval_tiles, evaluate, predict_polygons
from footprints.tasks.tiles import TileRef, WindowedTile, open_sources, read_labelled_tile


@pytest.fixture(scope="module")
def one_tile(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 448 x 448 synthetic tile with 19 buildings, the largest 169 px (51 m) across."""
    folder = tmp_path_factory.mktemp("one_tile")
    write_scene(LocalStore(folder).write_bytes, 1, seed=0, tile_size=448)
    return str(folder)


def untrained_checkpoint(path: Path) -> Path:
    """A small model's checkpoint, as the training flow writes it."""
    model = Vec2InstanceModel(Vec2InstanceConfig(width=8))
    return save_checkpoint(
        path, {"method": "vec2instance", "config": model.config.to_dict(), "state_dict": model.state_dict()}
    )


@pytest.mark.slow
def test_small_model_overfits_one_tile(one_tile: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    tile_set = open_sources([one_tile])[one_tile]
    tiles = [read_labelled_tile(tile_set, t) for t in tile_set.tiles]
    val = eval_tiles([TileRef(one_tile, t.image_key) for t in tile_set.tiles])
    model = Vec2InstanceModel(Vec2InstanceConfig(width=8))
    still = Augmentation(scale=(1.0, 1.0), brightness=0.0, contrast=0.0)
    config = TrainConfig(epochs=10, steps_per_epoch=25, batch_size=2, chip=448, lr=3e-3, augmentation=still)
    history = train(
        model,
        get_method("vec2instance"),
        ChipSampler(tiles, config.chip, still, seed=0),
        config,
        lambda m: evaluate(Vec2InstanceSegmenter(m), val).overall["f1"],
        tmp_path / "m.pt",
        progress=False,
    )
    first, last = history[0].loss, history[-1].loss
    assert sum(last.values()) < 0.2 * sum(first.values())
    best = load_segmenter(tmp_path / "m.pt")
    report = evaluate(best, val)
    assert report.overall["f1"] >= 0.9, report.overall
    # The largest building (over 150 px across) is found whole: no 64 px limit.
    truth = val[0].truth
    extents = [max(b[2] - b[0], b[3] - b[1]) for b in shapely.bounds(truth)]
    largest = truth[int(np.argmax(extents))]
    assert max(extents) >= 150
    polygons, _ = predict_polygons(best, val[0].image)
    ious = shapely.area(shapely.intersection(polygons, largest)) / shapely.area(
        shapely.union(polygons, largest)
    )
    assert ious.max() >= 0.5


def test_windowed_tiles_cut_the_same_chips_as_tiles_in_memory(one_tile: str) -> None:
    tile_set = open_sources([one_tile])[one_tile]
    (tile,) = tile_set.tiles
    in_memory, windowed = read_labelled_tile(tile_set, tile), WindowedTile(tile_set, tile)
    assert windowed.shape == in_memory.shape == (448, 448)
    assert windowed.pixel_size_m == pytest.approx(0.3, rel=0.01)
    for top, left, side in [(0, 0, 448), (100, 37, 128), (-50, 400, 160), (440, -20, 64)]:
        image, ids = windowed.window(top, left, side)
        expected_image, expected_ids = in_memory.window(top, left, side)
        np.testing.assert_allclose(image, expected_image, atol=1e-6)
        np.testing.assert_array_equal(ids, expected_ids)
    assert windowed.window(0, 0, 448)[1].max() == 19  # every building


@pytest.mark.slow
def test_training_flow_reads_s3_validates_saves_and_resumes(
    prefect_api: None, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    scene = f"s3://{s3_bucket}/scene"
    s3 = S3Options(endpoint_url=s3_endpoint)
    write_scene(open_store(scene, s3).write_bytes, 2, seed=4, tile_size=256)
    out = tmp_path / "model.pt"
    kwargs = {
        "epochs": 2,
        "steps_per_epoch": 3,
        "batch_size": 2,
        "chip": 128,
        "val_fraction": 0.5,
        "progress": False,
        "s3": s3,
        "architecture": {"width": 8},
        "scale": (0.8, 1.25),
    }
    first = train_flow("vec2instance", [scene], str(out), **kwargs)
    assert [h["epoch"] for h in first["history"]] == [1, 2]
    assert out.exists()
    assert last_path(out).exists()
    saved = json.loads(out.with_suffix(".json").read_text())
    assert set(saved["validation"]) == {"overall", "aois", "images", "reliability"}
    assert len(saved["validation"]["images"]) == 1  # one of the two tiles is held out
    record = load_checkpoint(out)
    # Trained at 0.3 m by default, and so run: imagery of any other size is resampled to it.
    assert record["training"]["pixel_size_m"] == 0.3
    assert "pixel_range_m" not in record["data"]
    assert list(record["training"]["augmentation"]["scale"]) == [0.8, 1.25]
    assert record["calibration"]["fitted_on"] >= sum(saved["validation"]["overall"][k] for k in ("tp", "fp"))
    assert isinstance(load_segmenter(out), Deployed)

    resumed = train_flow("vec2instance", [scene], str(out), resume=True, **(kwargs | {"epochs": 3}))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][:2] == first["history"]


def test_eval_cli_scores_a_checkpoint(
    one_tile: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:

    path = untrained_checkpoint(tmp_path / "m.pt")
    assert main(["-q", "eval", "--model", str(path), "--data", one_tile, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["overall"]["tp"] + report["overall"]["fn"] == 19
    assert list(report["aois"]) == ["AOI_9_Synthetic"]


def test_eval_skips_a_corrupt_tile_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    write_scene(LocalStore(tmp_path / "scene").write_bytes, 2, seed=4, tile_size=256)
    broken = next((tmp_path / "scene").rglob("*_img2.tif"))
    broken.write_bytes(broken.read_bytes()[:3000])
    path = untrained_checkpoint(tmp_path / "m.pt")
    assert main(["-q", "eval", "--model", str(path), "--data", str(tmp_path / "scene"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [i["image_id"] for i in report["images"]] == ["AOI_9_Synthetic_img1"]
    assert any(f"skipped a tile: {broken}" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("scale", [(2.0, 1.0), (0.0, 1.4), (-0.5, 2.0)])
def test_training_refuses_an_impossible_scale_range_before_reading_anything(
    scale: tuple[float, float], tmp_path: Path
) -> None:
    with pytest.raises(InputError, match="needs 0 < MIN <= MAX"):
        train_flow.fn("vec2instance", [str(tmp_path / "absent")], str(tmp_path / "m.pt"), scale=scale)
