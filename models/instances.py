"""What every instance segmenter returns, and the interface the AOI flow and evaluation call.

A method takes a batch of normalised chips and returns, per chip, a list of instances: a boolean
mask crop, where that crop sits in the chip, and a score. Crops keep memory and polygonising
proportional to the buildings, not to the chip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class Instance:
    """One detected building in a chip.

    Attributes:
        mask: Boolean (rows, cols) crop of the building's pixels.
        row: Chip row of the crop's top-left pixel.
        col: Chip column of the crop's top-left pixel.
        score: Confidence in [0, 1].
    """

    mask: np.ndarray
    row: int
    col: int
    score: float


class InstanceSegmenter(Protocol):
    """A trained method ready for inference."""

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        ...

    def predict(self, chips: torch.Tensor) -> list[list[Instance]]:
        """Segment the buildings of a batch of chips.

        Args:
            chips: (batch, 3, rows, cols) float tensor, bands normalised to [0, 1].

        Returns:
            Per chip, its instances in descending score.
        """
        ...
