"""Running a segmenter over tiles and scoring it: SpaceNet F1 of its polygons with the project's
scorer, Cityscapes AP and COCO panoptic quality with the official code."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from footprints.geo.layouts import Tile, TileSet
from footprints.geo.raster import ground_pixel_size
from footprints.geo.scoring import ScoreReport, score
from footprints.geo.stores import S3Options
from footprints.geo.vectorise import masks_to_polygons
from footprints.models.cityscapes import Frame, read_frame, write_predictions
from footprints.models.cityscapes_eval import CityscapesAP, evaluate_instances
from footprints.models.coco_panoptic import PanopticSource, read_labelled, write_prediction
from footprints.models.instances import InstanceSegmenter
from footprints.models.panoptic_eval import PanopticQuality, panoptic_quality
from footprints.models.pointer import PointerSegmenter

from .tiles import TileRef, open_sources, read_each, read_model_input


@dataclass(frozen=True)
class EvalTile:
    """A tile to evaluate on: model input, truth polygons in its pixel coordinates, and the ground
    size of its pixels in metres (None where its CRS does not say)."""

    image_id: str
    aoi: str
    image: np.ndarray
    truth: np.ndarray
    pixel_size: float | None = None


def eval_tiles(refs: list[TileRef], s3: S3Options = S3Options()) -> list[EvalTile]:
    """Model input and truth polygons of tiles, read once for repeated evaluation (bad tiles skipped)."""

    def read(tile_set: TileSet, tile: Tile) -> EvalTile:
        info = tile_set.info(tile)
        return EvalTile(
            tile.image_id,
            tile.aoi,
            read_model_input(tile_set, tile),
            tile_set.pixel_labels(tile),
            ground_pixel_size(info.transform, info.crs),
        )

    return read_each(refs, open_sources(sorted({r.source for r in refs}), s3), read)


def resampled(tile: EvalTile, factor: float) -> EvalTile:
    """The same tile imaged at pixels ``factor`` times finer (above 1) or coarser (below 1): its
    image resampled (bilinearly when enlarged, by averaging when shrunk), its truth and pixel size
    scaled to match, to check that a model finds the same buildings at any pixel size."""
    _, rows, cols = tile.image.shape
    size = (max(1, round(rows * factor)), max(1, round(cols * factor)))
    image = torch.from_numpy(tile.image)[None]
    if factor >= 1:
        image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
    else:
        image = F.interpolate(image, size=size, mode="area")
    scale = np.array([size[1] / cols, size[0] / rows])
    truth = shapely.transform(tile.truth, lambda xy: xy * scale)
    pixel_size = tile.pixel_size / factor if tile.pixel_size else None
    return replace(tile, image=image[0].numpy(), truth=truth, pixel_size=pixel_size)


def predict_polygons(
    segmenter: InstanceSegmenter, image: np.ndarray, pixel_size: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Building polygons (pixel coordinates) and scores of one tile."""
    instances = segmenter.predict(torch.from_numpy(image)[None], pixel_size)[0]
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
        polygons, scores = predict_polygons(segmenter, tile.image, tile.pixel_size)
        truth_rows += [(tile.image_id, tile.aoi, g) for g in tile.truth] or [(tile.image_id, tile.aoi, None)]
        proposal_rows += [(tile.image_id, g, s) for g, s in zip(polygons, scores, strict=True)]
    truth = gpd.GeoDataFrame(truth_rows, columns=["image_id", "aoi", "geometry"], geometry="geometry")
    proposals = gpd.GeoDataFrame(
        proposal_rows, columns=["image_id", "geometry", "confidence"], geometry="geometry"
    )
    return score(truth, proposals)


def evaluate_cityscapes(
    segmenter: InstanceSegmenter,
    frames: Sequence[Frame],
    classes: Sequence[str],
    work: Path,
    progress: bool = False,
) -> CityscapesAP:
    """Official Cityscapes instance AP of a segmenter on frames.

    Args:
        segmenter: A trained method whose classes are ``classes``.
        frames: Frames with ground truth.
        classes: The segmenter's classes, in the order of its instances' labels.
        work: Folder for the predictions in Cityscapes' format (emptied first).
        progress: Show a progress bar.

    Returns:
        AP and AP50 per class of ``classes`` and their means.
    """
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    listings = []
    for frame in tqdm(list(frames), desc="evaluate", disable=not progress):
        image = read_frame(frame, classes).image
        instances = segmenter.predict(torch.from_numpy(image)[None])[0]
        listings.append(write_predictions(work, frame, instances, classes, image.shape[1:]))
    return evaluate_instances(listings, [f.instances for f in frames], work, classes)


@dataclass(frozen=True)
class PanopticReport:
    """A pointer network's scores on COCO panoptic images.

    Attributes:
        quality: Class-agnostic PQ, SQ, RQ of its sequential full-image segmentation.
        segment_iou: Mean IoU of the segment found under a pointer inside each known segment.
        segments: Known segments (crowds and those under the minimum area left out).
        images: Images scored.
    """

    quality: PanopticQuality
    segment_iou: float
    segments: int
    images: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain values, for JSON."""
        return {
            **self.quality.to_dict(),
            "segment_iou": round(self.segment_iou, 6),
            "segments": self.segments,
            "images": self.images,
        }


def evaluate_coco_panoptic(
    segmenter: PointerSegmenter, data: PanopticSource, min_area: int, work: Path, progress: bool = False
) -> PanopticReport:
    """Score a pointer network on COCO panoptic images.

    Each image is segmented whole by sequential pointing; its segments are written as a panoptic
    PNG and JSON annotation in ``work`` and scored by panopticapi's own code, class-agnostic (see
    models.panoptic_eval). The single-segment metric points at every known segment in turn.

    Args:
        segmenter: The trained pointer network.
        data: The images with their panoptic ground truth.
        min_area: Segments under this many pixels (and crowds) are not pointed at.
        work: Folder for the predictions (emptied first).
        progress: Show a progress bar.
    """
    shutil.rmtree(work, ignore_errors=True)
    images = data.find()
    predictions, ious = [], []
    for image in tqdm(images, desc="evaluate", disable=not progress):
        tile = read_labelled(image, min_area)
        pixels = torch.from_numpy(tile.image)
        found = segmenter.segment_everything(pixels[None])[0].instances
        rows, cols = tile.ids.shape
        masks = [instance.full_mask((rows, cols)) for instance in found]
        predictions.append(write_prediction(work, image, masks, category_id=1))
        ious += segmenter.segment_ious(pixels, tile.ids)
    quality = panoptic_quality(Path(data.json_file), Path(data.annotations), predictions, work)
    return PanopticReport(quality, float(np.mean(ious)) if ious else 0.0, len(ious), len(images))
