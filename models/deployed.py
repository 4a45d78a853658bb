"""A trained method as a checkpoint deploys it: at its trained pixel size, with calibrated scores.

A checkpoint may record, beside its method's weights, the ground pixel sizes its model was trained
at (models/resampling.py) and a calibration of its scores with the threshold that keeps a building
(models/calibration.py). `Deployed` applies both around the method's own `predict`; everything
else (the model, the method's name, its precision) is the method's segmenter's.
"""

from __future__ import annotations

from typing import Any

import torch

from .calibration import Calibration
from .instances import Instance, InstanceSegmenter
from .resampling import predict_at


class Deployed:
    """A method's segmenter with what its checkpoint adds at inference.

    Args:
        inner: The method's segmenter.
        pixel_range_m: The lowest and highest ground pixel size in metres its model was trained
            at; None runs it on imagery as it comes.
        calibration: The calibration of its scores; None keeps the raw scores and every instance.
    """

    def __init__(
        self,
        inner: InstanceSegmenter,
        pixel_range_m: tuple[float, float] | None,
        calibration: Calibration | None,
    ) -> None:
        self.inner = inner
        self.pixel_range_m = pixel_range_m
        self.calibration = calibration

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self.inner.device

    def predict(self, chips: torch.Tensor, pixel_size: float | None = None) -> list[list[Instance]]:
        """Segment a batch of chips (see models.instances.InstanceSegmenter): resampled into the
        trained pixel sizes where they lie outside, scores calibrated, in the chips' own pixels."""
        if self.pixel_range_m is None:
            found = self.inner.predict(chips, pixel_size)
        else:
            found = predict_at(self.inner, chips, pixel_size, self.pixel_range_m)
        return found if self.calibration is None else [self.calibration.apply(f) for f in found]


def method_segmenter(segmenter: InstanceSegmenter) -> InstanceSegmenter:
    """The method's own segmenter, without what a checkpoint adds (for method-specific calls,
    such as the pointer network's segments at points)."""
    return segmenter.inner if isinstance(segmenter, Deployed) else segmenter
