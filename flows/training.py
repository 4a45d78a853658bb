"""Training flows: split the tiles, train with per-epoch validation, evaluate the best checkpoint."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from prefect import flow

from footprints.geo.stores import S3Options
from footprints.models.training import TrainConfig
from footprints.tasks.training import evaluate_checkpoint, split, train_model


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
