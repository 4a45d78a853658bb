"""The main job until the AOI flow lands: a synthetic AOI, the default model and the threshold
baseline over it, both scored against the scene's truth."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
from tqdm.auto import tqdm

from footprints.geo.baseline import threshold_buildings
from footprints.geo.layouts import find_tiles
from footprints.geo.preview import render_preview
from footprints.geo.scoring import ScoreReport, score
from footprints.geo.stores import LocalStore
from footprints.geo.synth import write_scene
from footprints.models.registry import DEFAULT_MODEL, load_segmenter
from footprints.tasks.evaluation import predict_polygons
from footprints.tasks.tiles import model_input, read_raw


def proposals_frame(rows: list[tuple[str, np.ndarray, np.ndarray]]) -> gpd.GeoDataFrame:
    """Proposals of many tiles as one table: image_id, confidence, geometry (pixels)."""
    ids = [image_id for image_id, polygons, _ in rows for _ in polygons]
    geometry = np.concatenate([polygons for _, polygons, _ in rows]) if rows else np.empty(0, dtype=object)
    confidence = np.concatenate([scores for _, _, scores in rows]) if rows else np.empty(0)
    return gpd.GeoDataFrame({"image_id": ids, "confidence": confidence}, geometry=geometry)


def write_spacenet_csv(proposals: gpd.GeoDataFrame, path: Path) -> None:
    """Proposals in the SpaceNet CSV form that ``footprints score`` reads."""
    table = proposals.assign(PolygonWKT_Pix=proposals.geometry.to_wkt())
    table = table.rename(columns={"image_id": "ImageId", "confidence": "Confidence"})
    table.drop(columns="geometry").rename_axis("BuildingId").to_csv(path)


def run_demo(
    out: Path, tiles: int = 4, seed: int = 0, model: Path = DEFAULT_MODEL, progress: bool = True
) -> dict[str, ScoreReport]:
    """Write a synthetic AOI under ``out/scene``, run the model and the baseline, score both.

    Writes ``out/{model,baseline}_proposals.csv`` (SpaceNet CSV form) and ``out/preview.png``: the
    first tile with truth (green) and the model's buildings (red).

    Args:
        out: Output folder.
        tiles: Number of tiles in the AOI.
        seed: Seed of the scene.
        model: Checkpoint of the model to run.
        progress: Show progress bars.

    Returns:
        Scores by name: "model" and "baseline".
    """
    store = LocalStore(out / "scene")
    write_scene(store.write_bytes, tiles, seed, progress=progress)
    tile_set = find_tiles(store)
    truth = tile_set.summary_labels()
    segmenter = load_segmenter(model)
    found: dict[str, list] = {"model": [], "baseline": []}
    for index, tile in enumerate(tqdm(tile_set.tiles, desc="segment", disable=not progress)):
        raw = read_raw(tile_set, tile)
        polygons, scores = predict_polygons(segmenter, model_input(raw, tile_set.info(tile).nodata))
        found["model"].append((tile.image_id, polygons, scores))
        found["baseline"].append((tile.image_id, *threshold_buildings(raw)))
        if index == 0:
            tile_truth = truth.geometry[truth["image_id"] == tile.image_id].to_numpy()
            render_preview(raw, out / "preview.png", tile_truth, polygons)
    reports = {}
    for name, rows in found.items():
        proposals = proposals_frame(rows)
        write_spacenet_csv(proposals, out / f"{name}_proposals.csv")
        reports[name] = score(truth, proposals)
    return reports
