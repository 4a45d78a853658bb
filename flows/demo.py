"""The main job on the embedded default: a synthetic AOI, the AOI flow with the shipped model, and
its F1 against the scene's truth (with a brightness-threshold baseline as the floor)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np

from footprints.geo.baseline import threshold_buildings
from footprints.geo.labels import to_map, to_pixels
from footprints.geo.layouts import TileSet, find_tiles
from footprints.geo.preview import render_preview
from footprints.geo.scoring import ScoreReport, score_footprints
from footprints.geo.stores import LocalStore
from footprints.geo.synth import scene_truth, write_scene
from footprints.models.registry import DEFAULT_MODEL
from footprints.tasks.tiles import read_raw

from .aoi import RunSummary, aoi_flow

GSD_M = 0.3


@dataclass
class DemoResult:
    """What the main job made: the run, the GeoPackage's scores and the preview image."""

    run: RunSummary
    model: ScoreReport
    baseline: ScoreReport
    preview: Path


def scene_bbox(tile_set: TileSet) -> str:
    """The ``minx,miny,maxx,maxy`` of all tiles of a scene whose tiles share one CRS."""
    bounds = np.array([tile_set.info(t).bounds for t in tile_set.tiles])
    return ",".join(str(v) for v in (*bounds[:, :2].min(axis=0), *bounds[:, 2:].max(axis=0)))


def run_demo(
    out: Path, tiles: int = 4, seed: int = 0, model: Path = DEFAULT_MODEL, progress: bool = True
) -> DemoResult:
    """Write a synthetic AOI under ``out/scene``, run the AOI flow over all of it into
    ``out/buildings.gpkg``, and score the buildings against the scene's whole buildings.

    Also writes ``out/preview.png``: the first tile with truth (green) and found buildings (red).

    Args:
        out: Output folder.
        tiles: Number of tiles in the AOI.
        seed: Seed of the scene.
        model: Checkpoint of the model to run.
        progress: Show progress bars.
    """
    store = LocalStore(out / "scene")
    write_scene(store.write_bytes, tiles, seed, gsd_m=GSD_M, progress=progress)
    tile_set = find_tiles(store)
    summary = aoi_flow(
        scene_bbox(tile_set),
        str(store.root),
        str(out / "buildings.gpkg"),
        model=str(model),
        progress=progress,
    )

    truth = scene_truth(tile_set)
    found = gpd.read_file(summary.out, layer="buildings", engine="pyogrio")
    baseline = []
    for index, tile in enumerate(tile_set.tiles):
        raw = read_raw(tile_set, tile)
        info = tile_set.info(tile)
        polygons, scores = threshold_buildings(raw)
        frame = gpd.GeoDataFrame({"score": scores}, geometry=to_map(polygons, info.transform), crs=info.crs)
        baseline.append(frame.to_crs(truth.crs))
        if index == 0:
            preview = render_preview(
                raw,
                out / "preview.png",
                to_pixels(truth.geometry, info.transform, info.crs),
                to_pixels(found.geometry, info.transform, info.crs),
            )
    baseline_found = gpd.GeoDataFrame(gpd.pd.concat(baseline, ignore_index=True), crs=truth.crs)
    return DemoResult(
        summary,
        score_footprints(truth, found, GSD_M),
        score_footprints(truth, baseline_found, GSD_M),
        preview,
    )
