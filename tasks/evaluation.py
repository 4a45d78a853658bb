"""Running a segmenter over tiles and scoring its polygons with the project's scorer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import torch
from tqdm.auto import tqdm

from footprints.geo.layouts import Tile, TileSet
from footprints.geo.scoring import ScoreReport, score
from footprints.geo.stores import S3Options
from footprints.geo.vectorise import masks_to_polygons
from footprints.models.instances import InstanceSegmenter

from .tiles import TileRef, open_sources, read_each, read_model_input


@dataclass(frozen=True)
class EvalTile:
    """A tile to evaluate on: model input and truth polygons in its pixel coordinates."""

    image_id: str
    aoi: str
    image: np.ndarray
    truth: np.ndarray


def eval_tiles(refs: list[TileRef], s3: S3Options = S3Options()) -> list[EvalTile]:
    """Model input and truth polygons of tiles, read once for repeated evaluation (bad tiles skipped)."""

    def read(tile_set: TileSet, tile: Tile) -> EvalTile:
        return EvalTile(
            tile.image_id, tile.aoi, read_model_input(tile_set, tile), tile_set.pixel_labels(tile)
        )

    return read_each(refs, open_sources(sorted({r.source for r in refs}), s3), read)


def predict_polygons(segmenter: InstanceSegmenter, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Building polygons (pixel coordinates) and scores of one tile."""
    instances = segmenter.predict(torch.from_numpy(image)[None])[0]
    return masks_to_polygons(instances), np.array([i.score for i in instances])


def evaluate(segmenter: InstanceSegmenter, tiles: Iterable[EvalTile], progress: bool = False) -> ScoreReport:
    """SpaceNet F1 of a segmenter on tiles (20 px minimum area, IoU 0.5).

    Args:
        segmenter: The trained method.
        tiles: Tiles with truth.
        progress: Show a progress bar.

    Returns:
        Per-image, per-AOI and overall scores.
    """
    truth_rows, proposal_rows = [], []
    for tile in tqdm(list(tiles), desc="evaluate", disable=not progress):
        polygons, scores = predict_polygons(segmenter, tile.image)
        truth_rows += [(tile.image_id, tile.aoi, g) for g in tile.truth] or [(tile.image_id, tile.aoi, None)]
        proposal_rows += [(tile.image_id, g, s) for g, s in zip(polygons, scores, strict=True)]
    truth = gpd.GeoDataFrame(truth_rows, columns=["image_id", "aoi", "geometry"], geometry="geometry")
    proposals = gpd.GeoDataFrame(
        proposal_rows, columns=["image_id", "geometry", "confidence"], geometry="geometry"
    )
    return score(truth, proposals)
