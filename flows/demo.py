"""The main job on the embedded default: a synthetic AOI through the AOI flow, once with the shipped
model and once with the brightness-threshold baseline (the floor a model must clear), each scored
against the scene's truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
from prefect import flow

from footprints.geo.labels import to_pixels
from footprints.geo.layouts import find_tiles
from footprints.geo.preview import render_preview
from footprints.geo.runs import RunRecord
from footprints.geo.scoring import ScoreReport, score_footprints
from footprints.geo.stores import LocalStore
from footprints.geo.synth import scene_truth, write_scene
from footprints.tasks.tiles import read_raw

from .aoi import aoi_flow

GSD_M = 0.3
TILE_SIDE_M = 195.0  # 650 px at 0.3 m, SpaceNet-2's tile


@dataclass
class DemoResult:
    """What the main job made: both runs, their scores and the preview image."""

    run: RunRecord
    model: ScoreReport
    baseline_run: RunRecord
    baseline: ScoreReport
    preview: Path


@flow(name="demo", log_prints=True)
def demo_flow(
    out: Path,
    tiles: int = 4,
    seed: int = 0,
    model: str | None = None,
    progress: bool = True,
    pixel_size_m: float = GSD_M,
) -> DemoResult:
    """Write a synthetic AOI under ``out/scene``, run the AOI flow over all of it into
    ``out/buildings.gpkg`` with the model and into ``out/baseline.gpkg`` with the threshold
    baseline, and score both against the scene's whole buildings.

    Also writes ``out/preview.png``: the first tile with truth (green) and found buildings (red).

    Args:
        out: Output folder.
        tiles: Number of tiles in the AOI.
        seed: Seed of the scene.
        model: Checkpoint of the model to run; None takes the shipped model.
        progress: Show progress bars.
        pixel_size_m: Pixel size the scene is drawn at; its ground extent and buildings stay the
            same (tiles of 195 m), so runs at two sizes see the same buildings.
    """
    store = LocalStore(out / "scene")
    side = round(TILE_SIDE_M / pixel_size_m)
    write_scene(store.write_bytes, tiles, seed, tile_size=side, gsd_m=pixel_size_m, progress=progress)
    tile_set = find_tiles(store)
    bbox = tile_set.bbox()
    run = aoi_flow(bbox, str(store.root), str(out / "buildings.gpkg"), model=model, progress=progress)
    baseline_run = aoi_flow(
        bbox, str(store.root), str(out / "baseline.gpkg"), method="threshold", progress=progress
    )

    truth = scene_truth(tile_set)
    found = gpd.read_file(run.out, layer="buildings", engine="pyogrio")
    baseline = gpd.read_file(baseline_run.out, layer="buildings", engine="pyogrio")
    first = tile_set.tiles[0]
    info = tile_set.info(first)
    preview = render_preview(
        read_raw(tile_set, first),
        out / "preview.png",
        to_pixels(truth.geometry, info.transform, info.crs),
        to_pixels(found.geometry, info.transform, info.crs),
    )
    return DemoResult(
        run,
        score_footprints(truth, found, pixel_size_m),
        baseline_run,
        score_footprints(truth, baseline, pixel_size_m),
        preview,
    )
