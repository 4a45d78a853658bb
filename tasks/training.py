"""Prefect tasks of the training flows: split the tiles, train, evaluate the best checkpoint."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import task
from prefect.runtime import task_run

from footprints.geo.stores import S3Options
from footprints.models.data import ChipSampler
from footprints.models.registry import build_model, get_method, load_segmenter
from footprints.models.training import TrainConfig, train

from .evaluation import eval_tiles, evaluate
from .tiles import TileRef, open_sources, read_each, read_labelled_tile, split_tiles

log = logging.getLogger(__name__)


@task(name="split-tiles")
def split(
    sources: list[str], train_only: list[str], s3: S3Options, val_fraction: float, seed: int
) -> dict[str, list[TileRef]]:
    """Find the tiles of every source and split them into training and validation tiles.

    Every tile of a ``train_only`` source (synthetic pre-training data, say) goes to training, so
    the validation score is measured on the real sources alone.
    """
    train_refs, val_refs = split_tiles(open_sources(sources, s3), val_fraction, seed)
    train_refs += split_tiles(open_sources(train_only, s3), 0.0, seed)[0]
    log.info("%d training and %d validation tiles", len(train_refs), len(val_refs))
    return {"train": train_refs, "val": val_refs}


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
    """Train a model on the training tiles, validating on the validation tiles every epoch.

    A retry resumes from the last epoch's checkpoint, so a failure costs at most one epoch.
    """
    resume = resume or task_run.run_count > 1
    tile_sets = open_sources(sorted({r.source for r in split_refs["train"]}), s3)
    labelled = read_each(split_refs["train"], tile_sets, read_labelled_tile)
    val = eval_tiles(split_refs["val"], s3)
    entry = get_method(method)
    model = build_model(method, architecture)
    sampler = ChipSampler(labelled, config.chip, config.augmentation, config.seed)

    def validate(trained: Any) -> float:
        return evaluate(entry.segmenter(trained, None), val).overall["f1"] if val else 0.0

    extra = {
        "data": {
            "train": [asdict(r) for r in split_refs["train"]],
            "val": [asdict(r) for r in split_refs["val"]],
        }
    }
    history = train(
        model, entry, sampler, config, validate, out, resume=resume, progress=progress, extra=extra
    )
    return [asdict(h) for h in history]


@task(name="evaluate-checkpoint")
def evaluate_checkpoint(out: Path, refs: list[TileRef], s3: S3Options) -> dict[str, Any]:
    """Scores of the best checkpoint on the validation tiles."""
    return evaluate(load_segmenter(out), eval_tiles(refs, s3)).to_dict()
