"""The training loop shared by the methods: Adam(W) with a cosine or polynomial schedule, an
optional fine-tune stage with batch-norm statistics frozen, a validation score per epoch,
best-checkpoint saving and resuming from the last epoch's state."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .data import Augmentation, ChipSampler
from .registry import Method

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        epochs: Number of epochs; each ends with a validation.
        steps_per_epoch: Optimiser steps per epoch.
        batch_size: Chips per step.
        chip: Side of the training chips (a multiple of 32).
        lr: Peak learning rate.
        weight_decay: Weight decay (decoupled for AdamW, L2 for Adam).
        optimiser: "adamw" or "adam".
        schedule: "cosine" (5% warm-up, then cosine decay to 1%) or "poly" (1 - t)^0.9 over the
            whole run, fine-tune stage included.
        finetune_epochs: Epochs after ``epochs`` on ``finetune_chip`` chips with batch-norm
            statistics frozen (0: no fine-tune stage).
        finetune_chip: Chip side of the fine-tune stage.
        seed: Seed of chip sampling and instance sampling.
        max_instances: Instances per step that train the instance term.
        augmentation: Random changes to each chip.
        pixel_size_m: Ground pixel size in metres the chips are resampled to (see
            data.ChipSampler), recorded in the checkpoint for inference to resample to
            (models/resampling.py); None trains on imagery as it comes.
    """

    epochs: int = 20
    steps_per_epoch: int = 100
    batch_size: int = 8
    chip: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimiser: str = "adamw"
    schedule: str = "cosine"
    finetune_epochs: int = 0
    finetune_chip: int = 512
    seed: int = 0
    max_instances: int = 96
    augmentation: Augmentation = field(default_factory=Augmentation)
    pixel_size_m: float | None = None

    def __post_init__(self) -> None:
        if self.optimiser not in OPTIMISERS:
            raise ValueError(f"unknown optimiser {self.optimiser!r}; known: {', '.join(OPTIMISERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; known: {', '.join(SCHEDULES)}")

    @property
    def total_epochs(self) -> int:
        """Epochs of both stages."""
        return self.epochs + self.finetune_epochs


@dataclass(frozen=True)
class EpochResult:
    """What one epoch achieved."""

    epoch: int
    loss: dict[str, float]
    val_score: float
    seconds: float


def warmup_cosine(total_steps: int, warmup: float = 0.05, floor: float = 0.01) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up, then cosine decay to ``floor``.

    It depends only on the step and the run's current length, so a resumed run that was given
    more epochs stretches the remaining decay instead of running past the end of its schedule.
    """
    warmup_steps = max(1, round(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def poly(total_steps: int, power: float = 0.9) -> Callable[[int], float]:
    """Learning-rate factor per step: (1 - step / total) ** power, the reference ERFNet schedule."""

    def factor(step: int) -> float:
        return max(0.0, 1 - step / max(1, total_steps)) ** power

    return factor


OPTIMISERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}
SCHEDULES = {"cosine": warmup_cosine, "poly": poly}


def freeze_batch_norm(model: nn.Module) -> None:
    """Put every batch-norm layer in eval mode: running statistics are used, not updated."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def last_path(best: Path) -> Path:
    """Where the resumable state of a run that saves its best model at ``best`` lives."""
    return best.with_name(best.stem + ".last" + best.suffix)


def train(
    model: nn.Module,
    method: Method,
    sampler: ChipSampler,
    config: TrainConfig,
    validate: Callable[[nn.Module], float],
    best: Path,
    *,
    metric: str = "F1",
    resume: bool = False,
    progress: bool = True,
    extra: dict | None = None,
) -> list[EpochResult]:
    """Train a model of ``method`` with the method's losses.

    After each epoch the model is validated; the best model so far is saved at ``best`` and the
    full state (optimiser, schedule, sampler) at ``last_path(best)``, so an interrupted run resumes
    where it stopped with ``resume=True``.

    Args:
        model: The model, with its configuration as ``config``.
        method: The method: its losses train the model, its name goes into checkpoints.
        sampler: Source of training chips.
        config: How to train.
        validate: Returns the validation score of the model (in eval mode), higher is better.
        best: Path of the best checkpoint.
        metric: Name of the validation score, for logs and checkpoints.
        resume: Continue from ``last_path(best)`` if it exists.
        progress: Show a progress bar.
        extra: More plain values to store in the checkpoints (data sources, split).

    Returns:
        One result per epoch, including those of a resumed run.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    optimiser = OPTIMISERS[config.optimiser](
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, SCHEDULES[config.schedule](config.total_epochs * config.steps_per_epoch)
    )
    generator = torch.Generator().manual_seed(config.seed)
    history: list[EpochResult] = []
    best_score, start = -math.inf, 0
    state_path = last_path(best)
    if resume and state_path.exists():
        state = load_checkpoint(state_path, ("state_dict", "optimiser", "schedule", "epoch"))
        model.load_state_dict(state["state_dict"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        sampler.rng.bit_generator.state = state["sampler"]
        history = [EpochResult(**h) for h in state["history"]]
        best_score, start = state["best_score"], state["epoch"]
        log.info("resuming from %s after epoch %d (best %s %.4f)", state_path, start, metric, best_score)
    if method.losses is None:
        raise ValueError(f"{method.name} has nothing to train")
    losses_of = method.losses
    model_config: Any = model.config  # every method's model carries its config dataclass
    common = {
        "method": method.name,
        "config": model_config.to_dict(),
        "training": asdict(config),
        **(extra or {}),
    }
    for epoch in range(start + 1, config.total_epochs + 1):
        started = time.perf_counter()
        model.train()
        stage = ""
        if epoch > config.epochs:
            # The fine-tune stage: larger chips, and batch-norm statistics kept from the first stage.
            freeze_batch_norm(model)
            sampler.chip = config.finetune_chip
            stage = " fine-tune"
        sums: dict[str, float] = {}
        bar = tqdm(
            range(config.steps_per_epoch),
            desc=f"epoch {epoch}/{config.total_epochs}{stage}",
            disable=not progress,
        )
        for _ in bar:
            images, ids = sampler.batch(config.batch_size)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                losses = losses_of(model, images.to(device), ids, generator, config.max_instances)
            loss = torch.stack(list(losses.values())).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
            schedule.step()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        model.eval()
        score = validate(model)
        mean = {k: v / config.steps_per_epoch for k, v in sums.items()}
        history.append(EpochResult(epoch, mean, score, time.perf_counter() - started))
        log.info("epoch %d: loss %s, validation %s %.4f", epoch, _fmt(mean), metric, score)
        if score > best_score:
            best_score = score
            metrics = {"metric": metric, "val_score": score, "epoch": epoch}
            save_checkpoint(best, {**common, "state_dict": model.state_dict(), "metrics": metrics})
        save_checkpoint(
            state_path,
            {
                **common,
                "state_dict": model.state_dict(),
                "optimiser": optimiser.state_dict(),
                "schedule": schedule.state_dict(),
                "generator": generator.get_state(),
                "sampler": sampler.rng.bit_generator.state,
                "history": [asdict(h) for h in history],
                "best_score": best_score,
                "epoch": epoch,
            },
        )
    return history


def _fmt(losses: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in losses.items())
