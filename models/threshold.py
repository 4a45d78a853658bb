"""The brightness-threshold baseline as a method: nothing to train, the floor a model must clear.

Each chip's mean brightness is thresholded (Otsu) and its bright connected regions are the
buildings (geo/baseline.py), each scored by its mean brightness. Running it as a method puts it
through the same chipping, dedup and scoring as every model, so the comparison is like for like.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from footprints.geo.baseline import bright_regions

from .instances import Instance, labels_to_instances


@dataclass(frozen=True)
class ThresholdConfig:
    """Settings of the baseline.

    Attributes:
        min_pixels: Smallest region kept, pixels.
    """

    min_pixels: int = 20

    def to_dict(self) -> dict[str, int]:
        """Plain values, for checkpoints."""
        return asdict(self)


class ThresholdModel(nn.Module):
    """No weights: the module only carries the configuration, as every method's model does."""

    def __init__(self, config: ThresholdConfig = ThresholdConfig()) -> None:
        super().__init__()
        self.config = config


class ThresholdSegmenter:
    """Bright connected regions of each chip (the InstanceSegmenter interface)."""

    def __init__(self, model: ThresholdModel, device: torch.device | None = None) -> None:
        self.config = model.config

    @property
    def device(self) -> torch.device:
        """The CPU: thresholding gains nothing from a GPU."""
        return torch.device("cpu")

    def predict(self, chips: torch.Tensor, pixel_size: float | None = None) -> list[list[Instance]]:
        """Segment the buildings of a batch of chips (see models.instances.InstanceSegmenter).

        Its settings are in pixels, so ``pixel_size`` is not used.
        """
        found = []
        for chip in chips.cpu().numpy():
            labels, scores = bright_regions(chip.mean(axis=0), min_pixels=self.config.min_pixels)
            found.append(labels_to_instances(labels, scores))
        return found
