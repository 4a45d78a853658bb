"""Training flows: split the data, train with per-epoch validation, evaluate the best checkpoint."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from prefect import flow

from footprints.geo.errors import InputError
from footprints.geo.stores import S3Options
from footprints.models.cityscapes import check_classes
from footprints.models.coco_panoptic import PanopticSource
from footprints.models.registry import get_method
from footprints.models.training import TrainConfig
from footprints.tasks.training import (
    calibrate_checkpoint,
    evaluate_checkpoint,
    evaluate_checkpoint_cityscapes,
    evaluate_checkpoint_panoptic,
    split,
    train_cityscapes,
    train_coco_panoptic,
    train_model,
)


@flow(name="train", log_prints=True)
def train_flow(
    method: str,
    sources: list[str],
    out: str,
    train_only: list[str] | None = None,
    dataset: str = "spacenet",
    classes: list[str] | None = None,
    splits: tuple[str, str] = ("train", "val"),
    epochs: int = 20,
    steps_per_epoch: int = 100,
    batch_size: int = 8,
    chip: int = 256,
    lr: float | None = None,
    finetune_epochs: int = 0,
    finetune_chip: int = 512,
    val_fraction: float = 0.2,
    choose_fraction: float = 0.15,
    pixel_size_m: float | None = 0.3,
    scale: tuple[float, float] | None = None,
    seed: int = 0,
    resume: bool = False,
    architecture: dict[str, Any] | None = None,
    s3: S3Options = S3Options(),
    progress: bool = True,
    panoptic: PanopticSource | None = None,
    val_panoptic: PanopticSource | None = None,
    min_area: int = 100,
) -> dict[str, Any]:
    """Train one method on SpaceNet-layout data (folders or S3 prefixes), on Cityscapes or (the
    pointer network) on COCO panoptic.

    Args:
        method: A method name (``vec2instance``, ``spatial-embeddings``).
        sources: For SpaceNet: folders or ``s3://`` prefixes of tiles with labels, in any layout
            geo.layouts reads. For Cityscapes: one folder, the root of leftImg8bit/ and gtFine/.
            For COCO panoptic: none (see ``panoptic``).
        out: Path of the best checkpoint; the resumable state goes beside it (``*.last.pt``) and the
            validation report to ``*.json``.
        train_only: More SpaceNet sources, used for training only (not validated on).
        dataset: ``spacenet`` (validated with the SpaceNet F1, or the pointer network's
            single-segment IoU), ``cityscapes`` (the official AP) or ``coco-panoptic`` (the
            single-segment IoU, then PQ).
        classes: Cityscapes classes to learn (e.g. ``["car", "person"]``).
        splits: Cityscapes splits to train and validate on.
        epochs: Epochs, each validated.
        steps_per_epoch: Optimiser steps per epoch.
        batch_size: Chips per step.
        chip: Training chip side.
        lr: Peak learning rate; None for the method's own (its recipe).
        finetune_epochs: Epochs of a fine-tune stage after ``epochs``, on ``finetune_chip``
            chips with batch-norm statistics frozen.
        finetune_chip: Chip side of the fine-tune stage.
        val_fraction: Share of each SpaceNet source's tiles held out: they score the final model
            and choose nothing.
        choose_fraction: Share of each SpaceNet source's other tiles that choose the best epoch
            (0: the held-out tiles choose it).
        pixel_size_m: SpaceNet: the ground pixel size in metres to train at (every tile resampled
            to it, the scale jittered around it, recorded in the checkpoint for inference to
            resample to); None trains on tiles as they come and records the range of their sizes.
            On the shared samples' held-out tiles resampled to 0.15, 0.3 and 0.5 m, a 0.3 m model
            scored 0.39 at each size, one trained on tiles as they come 0.33, 0.26 and 0.23
            (README.md, "Pixel sizes"). Cityscapes and COCO have no ground size: their images
            are used as they come.
        scale: Range of the random scale each training chip is resampled by (around
            ``pixel_size_m`` where given); None for models.data.Augmentation's default.
        seed: Seed of the split, the sampling and the initial weights.
        resume: Continue an interrupted run from its last epoch.
        architecture: Architecture settings of the method (see its Config class).
        s3: How to reach S3 sources.
        progress: Show progress bars.
        panoptic: COCO panoptic: the training images, PNGs and JSON.
        val_panoptic: COCO panoptic: the validation set (None: the training set itself).
        min_area: COCO panoptic: segments under this many pixels are left out, as crowds are.

    Returns:
        The per-epoch history and the best checkpoint's validation scores.

    Raises:
        InputError: A scale range that is not 0 < MIN <= MAX, an unknown dataset, Cityscapes
            without classes or with more than one root,
            or COCO panoptic without its data or for a method other than the pointer network.
    """
    torch.manual_seed(seed)
    entry = get_method(method)
    given = {"lr": lr} if lr is not None else {}
    config = replace(
        TrainConfig(),
        **{
            **entry.recipe,
            **given,
            "epochs": epochs,
            "steps_per_epoch": steps_per_epoch,
            "batch_size": batch_size,
            "chip": chip,
            "finetune_epochs": finetune_epochs,
            "finetune_chip": finetune_chip,
            "seed": seed,
        },
    )
    if scale is not None:
        if not 0 < scale[0] <= scale[1]:
            raise InputError(f"scale {scale[0]:g} to {scale[1]:g}", "needs 0 < MIN <= MAX")
        config = replace(config, augmentation=replace(config.augmentation, scale=scale))
    out_path = Path(out)
    if dataset == "cityscapes":
        if len(sources) != 1:
            raise InputError(", ".join(sources), "Cityscapes training takes one root folder")
        names = check_classes(classes or [])
        # Cityscapes has no ground size: the minimum instance size is in pixels (the paper's 128).
        settings = {"classes": list(names), "pixel_size_m": 1.0, "min_area_m2": 128.0, **(architecture or {})}
        history = train_cityscapes(method, settings, sources[0], splits, config, out_path, resume, progress)
        report = evaluate_checkpoint_cityscapes(out_path, sources[0], splits[1])
    elif dataset == "spacenet":
        refs = split(sources, train_only or [], s3, val_fraction, seed, choose_fraction)
        at_size = replace(config, pixel_size_m=pixel_size_m)
        history = train_model(method, architecture or {}, refs, s3, at_size, out_path, resume, progress)
        if get_method(method).validation == "f1":  # scores of buildings, not of pointed segments
            calibrate_checkpoint(out_path, refs["choose"], s3)
        report = evaluate_checkpoint(out_path, refs["val"], s3)
    elif dataset == "coco-panoptic":
        if entry.validation != "segment-iou":
            raise InputError(method, "trains on COCO panoptic only as the pointer network (pointer)")
        if panoptic is None:
            raise InputError("coco-panoptic", "needs its images, panoptic PNGs and panoptic JSON")
        val_data = val_panoptic or panoptic
        # COCO has no ground size: the smallest segment is in pixels. A spread pointer trains
        # far sooner, and segments as wide as the image need image-wide context; most segments
        # are small, and the metric weighs them as the large (see PointerConfig).
        settings = {
            "pixel_size_m": 1.0,
            "min_area_m2": float(min_area),
            "pointer_sigma_px": 3.0,
            "context": True,
            "target_power": 0.5,
            **(architecture or {}),
        }
        history = train_coco_panoptic(
            method, settings, panoptic, val_data, min_area, config, out_path, resume, progress
        )
        report = evaluate_checkpoint_panoptic(out_path, val_data, min_area)
    else:
        raise InputError(dataset, "unknown dataset; known: spacenet, cityscapes, coco-panoptic")
    summary = {"history": history, "validation": report}
    out_path.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    return summary
