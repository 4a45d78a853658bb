"""What every instance segmenter returns, the interface the AOI flow and evaluation call, and the
helpers every method shares to produce it.

A method takes a batch of normalised chips and returns, per chip, a list of instances: a boolean
mask crop, where that crop sits in the chip, and a score. Crops keep memory and polygonising
proportional to the buildings, not to the chip.

Methods that label every pixel with an instance id (the embedding methods, the brightness
threshold) turn that label map into instances with `labels_to_instances`; methods whose instances
may overlap (Vec2Instance draws each building's mask independently) settle who owns a pixel with
`resolve_overlaps`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

from footprints.geo.errors import InputError

M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class Instance:
    """One detected building in a chip.

    Attributes:
        mask: Boolean (rows, cols) crop of the building's pixels.
        row: Chip row of the crop's top-left pixel.
        col: Chip column of the crop's top-left pixel.
        score: Confidence in [0, 1].
        label: Index of its class in the method's classes (0 for methods of buildings alone).
    """

    mask: np.ndarray
    row: int
    col: int
    score: float
    label: int = 0

    def full_mask(self, shape: tuple[int, ...]) -> np.ndarray:
        """The mask on a whole (rows, cols) chip or image."""
        full = np.zeros(shape, bool)
        h, w = self.mask.shape
        full[self.row : self.row + h, self.col : self.col + w] = self.mask
        return full


class InstanceSegmenter(Protocol):
    """A trained method ready for inference."""

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        ...

    def predict(self, chips: torch.Tensor, pixel_size: float | None = None) -> list[list[Instance]]:
        """Segment the buildings of a batch of chips.

        Args:
            chips: (batch, 3, rows, cols) float tensor, bands normalised to [0, 1].
            pixel_size: Ground size of a pixel in metres, where known, for methods whose
                settings are metric (others ignore it).

        Returns:
            Per chip, its instances in descending score.
        """
        ...


# Overrides the choice of inference precision: "float32" or "bfloat16" (see inference_dtype).
PRECISION_VARIABLE = "FOOTPRINTS_PRECISION"


@functools.cache
def _cpu_has_bfloat16() -> bool:
    """Whether this machine's CPU multiplies bfloat16 natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: not known, so not used
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def inference_dtype(device: torch.device) -> torch.dtype:
    """The precision the networks run in on ``device``: bfloat16 where the hardware computes it
    natively (CUDA, CPUs with AVX512-BF16 or AMX), float32 elsewhere.

    On this project's 2-core CPU bfloat16 ran the default model's network about twice as fast
    as float32 (both channels-last, batch norms folded) at the same F1 (benchmarks/README.md). The environment
    variable FOOTPRINTS_PRECISION ("float32" or "bfloat16") overrides the choice.

    Raises:
        InputError: FOOTPRINTS_PRECISION holds something else.
    """
    chosen = os.environ.get(PRECISION_VARIABLE, "").strip().lower()
    if chosen in ("float32", "bfloat16"):
        return getattr(torch, chosen)
    if chosen:
        raise InputError(PRECISION_VARIABLE, f"must be float32 or bfloat16, not {chosen!r}")
    native = device.type == "cuda" or (device.type == "cpu" and _cpu_has_bfloat16())
    return torch.bfloat16 if native else torch.float32


class TorchSegmenter(Generic[M]):
    """What the segmenters of torch methods share: the device (CUDA when present, unless given),
    the model on it in eval mode and channels-last layout, and the precision its networks run in.

    Channels-last lets oneDNN (CPU) and cuDNN (tensor cores) pick their fastest convolutions:
    1.3 to 1.5 times the float32 speed of the default model's network on this project's CPU,
    with the same outputs to 1e-5.
    """

    def __init__(self, model: M, device: torch.device | None = None) -> None:
        self._device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        # Module.to takes memory_format, though torch's type overloads leave it out.
        model = model.to(self._device).to(memory_format=torch.channels_last)  # pyright: ignore[reportCallIssue]
        self.model: M = model.eval()
        self.dtype = inference_dtype(self._device)

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self._device

    def autocast(self) -> torch.autocast:
        """Run the networks in the segmenter's precision (decoding stays in float32)."""
        return torch.autocast(self._device.type, dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16)


def instance_boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounding boxes of every instance in a label map.

    Args:
        labels: (rows, cols) integer map of instance ids, 0 for background.

    Returns:
        (instance ids, boxes as x0, y0, x1, y1 in pixel edges), sorted by id.
    """
    rows, cols = np.nonzero(labels)
    values = labels[rows, cols]
    if values.size == 0:
        return np.empty(0, np.int64), np.empty((0, 4), np.float32)
    unique, inverse = np.unique(values, return_inverse=True)
    x0 = np.full(unique.size, np.iinfo(np.int64).max)
    y0 = x0.copy()
    x1 = np.full(unique.size, -1)
    y1 = x1.copy()
    np.minimum.at(x0, inverse, cols)
    np.minimum.at(y0, inverse, rows)
    np.maximum.at(x1, inverse, cols)
    np.maximum.at(y1, inverse, rows)
    return unique.astype(np.int64), np.stack([x0, y0, x1 + 1, y1 + 1], axis=1).astype(np.float32)


def labels_to_instances(
    labels: np.ndarray, scores: Mapping[int, float] | None = None, min_pixels: int = 1
) -> list[Instance]:
    """The instances of a label map, each as a mask crop of its bounding box.

    Args:
        labels: (rows, cols) integer map of instance ids, 0 for background.
        scores: Confidence of each id; ids without one (or all, when None) score 1.
        min_pixels: Instances with fewer pixels are dropped.

    Returns:
        The instances, in descending score (ties in id order).
    """
    ids, boxes = instance_boxes(labels)
    found = []
    for value, (x0, y0, x1, y1) in zip(ids.tolist(), boxes.astype(int).tolist(), strict=True):
        mask = labels[y0:y1, x0:x1] == value
        if mask.sum() < min_pixels:
            continue
        score = 1.0 if scores is None else float(scores.get(value, 1.0))
        found.append(Instance(mask, y0, x0, score))
    return sorted(found, key=lambda i: -i.score)


def resolve_overlaps(
    pixel: torch.Tensor,
    owner: torch.Tensor,
    score: torch.Tensor,
    pixels: int,
    min_pixels: int,
    min_owned: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Give every claimed pixel to the highest-scoring instance that claims it, in one pass.

    An instance that keeps fewer than ``min_pixels`` pixels, or less than ``min_owned`` of those
    it claimed, is a duplicate of a better one and is dropped.

    Args:
        pixel: (m,) flat index of each claimed pixel, in a space of ``pixels`` pixels (for a
            batch, chip index times chip pixels plus the pixel's index in its chip).
        owner: (m,) instance making each claim, in 0..n-1.
        score: (n,) score of each instance; ties go to the lower index.
        pixels: Size of the flat index space.
        min_pixels: Fewest pixels a kept instance owns.
        min_owned: Least share of its claimed pixels a kept instance owns.

    Returns:
        (keep: (n,) whether each instance is kept, owned: (m,) whether each claim was won).
    """
    n = len(score)
    rank = torch.empty(n, dtype=torch.long, device=score.device)
    rank[torch.argsort(score, descending=True, stable=True)] = torch.arange(n, device=score.device)
    claim = torch.full((pixels,), n, dtype=torch.long, device=score.device)
    claim.scatter_reduce_(0, pixel, rank[owner], reduce="amin")
    owned = claim[pixel] == rank[owner]
    total = torch.bincount(owner, minlength=n)
    kept_pixels = torch.bincount(owner[owned], minlength=n)
    keep = (kept_pixels >= min_pixels) & (kept_pixels >= min_owned * total.clamp(min=1))
    return keep, owned
