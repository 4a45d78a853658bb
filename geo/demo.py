"""The main job until the AOI flow lands: a synthetic AOI, the threshold baseline, its score."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
from tqdm.auto import tqdm

from .baseline import threshold_buildings
from .layouts import find_tiles
from .preview import render_preview
from .raster import read_window
from .scoring import ScoreReport, score
from .stores import LocalStore
from .synth import write_scene


def run_demo(out: Path, tiles: int = 4, seed: int = 0, progress: bool = True) -> ScoreReport:
    """Write a synthetic AOI under ``out/scene``, run the baseline over it and score it.

    Also writes the proposals (``out/baseline_proposals.csv``, SpaceNet CSV form) and a preview of
    the first tile with truth and proposals outlined (``out/preview.png``).

    Args:
        out: Output folder.
        tiles: Number of tiles in the AOI.
        seed: Seed of the scene.
        progress: Show progress bars.

    Returns:
        The baseline's scores against the scene's truth.
    """
    store = LocalStore(out / "scene")
    write_scene(store.write_bytes, tiles, seed, progress=progress)
    tile_set = find_tiles(store)
    truth = tile_set.summary_labels()
    ids, geoms, scores = [], [], []
    for index, tile in enumerate(tqdm(tile_set.tiles, desc="baseline", disable=not progress)):
        image = read_window(tile_set.image_path(tile), name=store.describe(tile.image_key))
        polygons, confidence = threshold_buildings(image)
        ids += [tile.image_id] * len(polygons)
        geoms += list(polygons)
        scores += list(confidence)
        if index == 0:
            tile_truth = truth.geometry[truth["image_id"] == tile.image_id].to_numpy()
            render_preview(image, out / "preview.png", tile_truth, polygons)
    proposals = gpd.GeoDataFrame(
        {"image_id": ids, "confidence": scores}, geometry=np.array(geoms, dtype=object)
    )
    proposals.assign(PolygonWKT_Pix=proposals.geometry.to_wkt()).rename(
        columns={"image_id": "ImageId", "confidence": "Confidence"}
    ).rename_axis("BuildingId").drop(columns="geometry").to_csv(out / "baseline_proposals.csv")
    return score(truth, proposals)
