"""Prefect tasks of the training flows: split the tiles, train, evaluate the best checkpoint.

SpaceNet-layout sources are validated with the SpaceNet F1, Cityscapes with the official AP, and
the pointer network (on SpaceNet-layout data or COCO panoptic) with the single-segment mean IoU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import task
from prefect.runtime import task_run

from footprints.geo.errors import InputError
from footprints.geo.stores import S3Options
from footprints.models.calibration import Calibration, fit_calibration, reliability
from footprints.models.checkpoint import checkpoint_bytes, load_checkpoint, save_checkpoint
from footprints.models.cityscapes import find_frames, read_frame
from footprints.models.coco_panoptic import PanopticSource, read_labelled
from footprints.models.data import ChipSampler, LabelledTile, LabelledWindows
from footprints.models.deployed import Deployed, method_segmenter
from footprints.models.pointer import PointerSegmenter, mean_segment_iou
from footprints.models.registry import build_model, get_method, load_segmenter
from footprints.models.training import TrainConfig, train

from .evaluation import eval_tiles, evaluate, evaluate_cityscapes, evaluate_coco_panoptic
from .tiles import TileRef, WindowedTile, open_sources, read_each, read_labelled_tile, split_refs, split_tiles

log = logging.getLogger(__name__)


@task(name="split-tiles")
def split(
    sources: list[str],
    train_only: list[str],
    s3: S3Options,
    val_fraction: float,
    seed: int,
    choose_fraction: float = 0.0,
) -> dict[str, list[TileRef]]:
    """Split the tiles of every source into training, choosing and held-out validation tiles.

    The held-out tiles (``val``, ``val_fraction`` of each source) are drawn first, from the seed
    alone, so they stay the same whatever is chosen later; they only score the final model. The
    choosing tiles (``choose``, ``choose_fraction`` of the rest) pick the best epoch; without
    them (0) the held-out tiles pick it, and their score is optimistic. Every tile of a
    ``train_only`` source (synthetic pre-training data, say) goes to training, so validation is
    measured on the real sources alone.
    """
    train_refs, val_refs = split_tiles(open_sources(sources, s3), val_fraction, seed)
    train_refs, choose_refs = split_refs(train_refs, choose_fraction, seed + 1)
    train_refs += split_tiles(open_sources(train_only, s3), 0.0, seed)[0]
    log.info(
        "%d training, %d choosing and %d held-out validation tiles",
        len(train_refs),
        len(choose_refs),
        len(val_refs),
    )
    return {"train": train_refs, "choose": choose_refs or val_refs, "val": val_refs}


@task(name="train-model", retries=1, retry_delay_seconds=5)
def train_model(
    method: str,
    architecture: dict[str, Any],
    split_refs: dict[str, list[TileRef]],
    s3: S3Options,
    config: TrainConfig,
    out: Path,
    resume: bool,
    progress: bool,
) -> list[dict[str, Any]]:
    """Train a model on the training tiles, validating on the choosing tiles every epoch.

    A retry resumes from the last epoch's checkpoint, so a failure costs at most one epoch.
    """
    tile_sets = open_sources(sorted({r.source for r in split_refs["train"]}), s3)
    labelled = read_each(split_refs["train"], tile_sets, WindowedTile)
    entry = get_method(method)
    data: dict[str, Any] = {part: [asdict(r) for r in refs] for part, refs in split_refs.items()}
    sizes = [t.pixel_size_m for t in labelled if t.pixel_size_m]
    if config.pixel_size_m:
        trained_at = (config.pixel_size_m, config.pixel_size_m)
    elif sizes:  # trained on tiles as they come: at the range of their own sizes
        trained_at = (min(sizes), max(sizes))
        data["pixel_range_m"] = list(trained_at)
    else:
        trained_at = None
    choose = split_refs["choose"]
    if entry.validation == "segment-iou":
        val_sets = open_sources(sorted({r.source for r in choose}), s3)
        validate = _segment_iou(read_each(choose, val_sets, read_labelled_tile))
        return _train(method, architecture, labelled, validate, "IoU", config, out, resume, progress, data)
    val = eval_tiles(choose, s3)

    def validate_f1(trained: Any) -> float:
        # As it will run: on chips resampled into the pixel sizes it is trained at.
        segmenter = Deployed(entry.segmenter(trained, None), trained_at, None)
        return evaluate(segmenter, val).overall["f1"] if val else 0.0

    return _train(method, architecture, labelled, validate_f1, "F1", config, out, resume, progress, data)


@task(name="train-model-coco-panoptic", retries=1, retry_delay_seconds=5)
def train_coco_panoptic(
    method: str,
    architecture: dict[str, Any],
    train_data: PanopticSource,
    val_data: PanopticSource,
    min_area: int,
    config: TrainConfig,
    out: Path,
    resume: bool,
    progress: bool,
) -> list[dict[str, Any]]:
    """Train the pointer network on COCO panoptic images (crowd segments and segments under
    ``min_area`` pixels left out), validating with the single-segment mean IoU every epoch. A
    retry resumes from the last epoch's checkpoint."""
    labelled = [read_labelled(image, min_area) for image in train_data.find()]
    val_tiles = [read_labelled(image, min_area) for image in val_data.find()]
    data = {"train": asdict(train_data), "val": asdict(val_data), "min_area": min_area}
    validate = _segment_iou(val_tiles)
    return _train(method, architecture, labelled, validate, "IoU", config, out, resume, progress, data)


def _segment_iou(tiles: list[LabelledTile]) -> Callable[[Any], float]:
    """Validation by the single-segment mean IoU (see models.pointer.mean_segment_iou)."""

    def validate(trained: Any) -> float:
        return mean_segment_iou(PointerSegmenter(trained), tiles)

    return validate


@task(name="train-model-cityscapes", retries=1, retry_delay_seconds=5)
def train_cityscapes(
    method: str,
    architecture: dict[str, Any],
    root: str,
    splits: tuple[str, str],
    config: TrainConfig,
    out: Path,
    resume: bool,
    progress: bool,
) -> list[dict[str, Any]]:
    """Train on the Cityscapes frames of one split, validating with the official AP on another.

    Chips are centred near objects (they are small and sparse in street scenes). A retry
    resumes from the last epoch's checkpoint.
    """
    classes = architecture["classes"]
    train_frames, val_frames = (find_frames(root, split) for split in splits)
    labelled = [read_frame(frame, classes) for frame in train_frames]
    entry = get_method(method)
    work = out.with_name(out.stem + ".cityscapes")

    def validate(trained: Any) -> float:
        return evaluate_cityscapes(entry.segmenter(trained, None), val_frames, classes, work).ap

    data = {"root": root, "train": splits[0], "val": splits[1], "classes": list(classes)}
    return _train(
        method, architecture, labelled, validate, "AP", config, out, resume, progress, data, centred=True
    )


def _train(
    method: str,
    architecture: dict[str, Any],
    labelled: Sequence[LabelledWindows],
    validate: Any,
    metric: str,
    config: TrainConfig,
    out: Path,
    resume: bool,
    progress: bool,
    data: dict[str, Any],
    centred: bool = False,
) -> list[dict[str, Any]]:
    """Build the model and the chip sampler and run the training loop; a task retry resumes."""
    resume = resume or task_run.run_count > 1
    entry = get_method(method)
    model = build_model(method, architecture)
    augmentation, pixel_size = config.augmentation, config.pixel_size_m
    sampler = ChipSampler(labelled, config.chip, augmentation, config.seed, centred, pixel_size)
    history = train(
        model,
        entry,
        sampler,
        config,
        validate,
        out,
        metric=metric,
        resume=resume,
        progress=progress,
        extra={"data": data},
    )
    return [asdict(h) for h in history]


@task(name="calibrate-checkpoint")
def calibrate_checkpoint(out: Path, refs: list[TileRef], s3: S3Options) -> Calibration:
    """Calibrate the best checkpoint's scores on the choosing tiles, choose its threshold there
    for the best F1, and keep both in the checkpoint (see models/calibration.py)."""
    record = load_checkpoint(out)
    record.pop("calibration", None)  # a recalibration starts from the raw scores
    report = evaluate(load_segmenter(checkpoint_bytes(record)), eval_tiles(refs, s3))
    counted, truth = report.counted, int(report.overall["tp"] + report.overall["fn"])
    calibration = fit_calibration(report.confidence[counted], report.matched[counted], truth)
    save_checkpoint(out, {**record, "calibration": calibration.to_dict()})
    log.info(
        "scores calibrated on %d buildings of %d tiles; buildings under %.3f are dropped",
        calibration.fitted_on,
        len(refs),
        calibration.threshold,
    )
    return calibration


@task(name="evaluate-checkpoint")
def evaluate_checkpoint(out: Path, refs: list[TileRef], s3: S3Options) -> dict[str, Any]:
    """Scores of the best checkpoint on the held-out tiles, with the reliability of its scores
    there (score bins and their share of true positives)."""
    report = evaluate(load_segmenter(out), eval_tiles(refs, s3))
    scores, hits = report.confidence[report.counted], report.matched[report.counted]
    return {**report.to_dict(), "reliability": reliability(scores, hits)}


@task(name="evaluate-checkpoint-cityscapes")
def evaluate_checkpoint_cityscapes(out: Path, root: str, split: str) -> dict[str, Any]:
    """Official Cityscapes AP of the best checkpoint on a split."""
    work = out.with_name(out.stem + ".cityscapes")
    classes = load_checkpoint(out)["config"]["classes"]
    return evaluate_cityscapes(load_segmenter(out), find_frames(root, split), classes, work).to_dict()


@task(name="evaluate-checkpoint-panoptic")
def evaluate_checkpoint_panoptic(out: Path, data: PanopticSource, min_area: int) -> dict[str, Any]:
    """Class-agnostic PQ and the single-segment IoU of the best checkpoint on COCO panoptic images."""
    work = out.with_name(out.stem + ".panoptic")
    segmenter = method_segmenter(load_segmenter(out))
    if not isinstance(segmenter, PointerSegmenter):
        raise InputError(str(out), "is not a pointer network checkpoint")
    return evaluate_coco_panoptic(segmenter, data, min_area, work).to_dict()
