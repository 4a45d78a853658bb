"""Training flows: split the tiles, train with per-epoch validation, evaluate the best checkpoint."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from prefect import flow, task

from footprints.geo.stores import S3Options
from footprints.models.data import ChipSampler
from footprints.models.registry import METHODS, build_model, load_segmenter
from footprints.models.training import TrainConfig, train
from footprints.tasks.evaluation import eval_tiles, evaluate
from footprints.tasks.tiles import TileRef, open_sources, read_labelled_tile, resolve, split_tiles

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


# A retry resumes from the last epoch's checkpoint, so an interrupted run loses at most one epoch.
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
    """Train a model on the training tiles, validating on the validation tiles every epoch."""
    tile_sets = open_sources(sorted({r.source for r in split_refs["train"]}), s3)
    labelled = [read_labelled_tile(*resolve(tile_sets, ref)) for ref in split_refs["train"]]
    val = eval_tiles(split_refs["val"], s3)
    segmenter_type = METHODS[method][2]
    model = build_model(method, architecture)
    sampler = ChipSampler(labelled, config.chip, config.augmentation, config.seed)

    def validate(trained: Any) -> float:
        return evaluate(segmenter_type(trained), val).overall["f1"] if val else 0.0

    extra = {
        "data": {
            "train": [asdict(r) for r in split_refs["train"]],
            "val": [asdict(r) for r in split_refs["val"]],
        }
    }
    history = train(
        model, method, sampler, config, validate, out, resume=resume, progress=progress, extra=extra
    )
    return [asdict(h) for h in history]


@task(name="evaluate-checkpoint")
def evaluate_checkpoint(out: Path, refs: list[TileRef], s3: S3Options) -> dict[str, Any]:
    """Scores of the best checkpoint on the validation tiles."""
    return evaluate(load_segmenter(out), eval_tiles(refs, s3)).to_dict()


@flow(name="train", log_prints=True)
def train_flow(
    method: str,
    sources: list[str],
    out: str,
    train_only: list[str] | None = None,
    epochs: int = 20,
    steps_per_epoch: int = 100,
    batch_size: int = 8,
    chip: int = 256,
    lr: float = 2e-3,
    val_fraction: float = 0.2,
    seed: int = 0,
    resume: bool = False,
    architecture: dict[str, Any] | None = None,
    s3: S3Options = S3Options(),
    progress: bool = True,
) -> dict[str, Any]:
    """Train one method on SpaceNet-layout data from folders or S3 prefixes.

    Args:
        method: A method name (``vec2instance``).
        sources: Folders or ``s3://`` prefixes of tiles with labels, in any layout geo.layouts reads.
        out: Path of the best checkpoint; the resumable state goes beside it (``*.last.pt``) and the
            validation report to ``*.json``.
        train_only: More sources, used for training only (not validated on).
        epochs: Epochs, each validated with the SpaceNet F1.
        steps_per_epoch: Optimiser steps per epoch.
        batch_size: Chips per step.
        chip: Training chip side.
        lr: Peak learning rate.
        val_fraction: Share of each source's tiles held out for validation.
        seed: Seed of the split, the sampling and the initial weights.
        resume: Continue an interrupted run from its last epoch.
        architecture: Architecture settings of the method (see its Config class).
        s3: How to reach S3 sources.
        progress: Show progress bars.

    Returns:
        The per-epoch history and the best checkpoint's validation scores.
    """
    import torch

    torch.manual_seed(seed)
    config = replace(
        TrainConfig(),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        chip=chip,
        lr=lr,
        seed=seed,
    )
    out_path = Path(out)
    refs = split(sources, train_only or [], s3, val_fraction, seed)
    history = train_model(method, architecture or {}, refs, s3, config, out_path, resume, progress)
    report = evaluate_checkpoint(out_path, refs["val"], s3)
    summary = {"history": history, "validation": report}
    out_path.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    return summary
