"""Inference at the pixel size a model was trained at, whatever the imagery's.

A network learns buildings at the pixel sizes it was shown: the same roof imaged at 0.15 m is
twice as many pixels across as at 0.3 m, and a model trained around 0.3 m misses or splits it.
Checkpoints of ground imagery record the pixel size their chips were resampled to in training
(``training.pixel_size_m``); `predict_at` resamples each batch of chips to it, runs the method,
and maps every instance back onto the chips' own pixels, so that callers (the AOI flow,
evaluation) keep working in the imagery's pixels and georeference outlines as before.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from .instances import Instance, InstanceSegmenter

# Imagery within this ratio of the trained pixel size is used as it is: training jitters the
# scale by more than this (models.data.Augmentation), and resampling costs time and sharpness.
TOLERANCE = 1.15


def predict_at(
    segmenter: InstanceSegmenter, chips: torch.Tensor, pixel_size: float | None, trained_m: float
) -> list[list[Instance]]:
    """Segment a batch of chips (see models.instances.InstanceSegmenter) resampled to the pixel
    size ``trained_m`` the model was trained at, when ``pixel_size`` is known and differs from it
    by more than TOLERANCE; the instances come back in the chips' own pixels."""
    factor = pixel_size / trained_m if pixel_size else 1.0
    if 1 / TOLERANCE <= factor <= TOLERANCE:
        return segmenter.predict(chips, pixel_size)
    rows, cols = chips.shape[-2:]
    size = (max(1, round(rows * factor)), max(1, round(cols * factor)))
    # Antialiasing matters when shrinking finer imagery: without it roof texture aliases.
    resampled = F.interpolate(chips.float(), size, mode="bilinear", antialias=True, align_corners=False)
    found = segmenter.predict(resampled, trained_m)
    return [rescale_instances(instances, size, (rows, cols)) for instances in found]


def rescale_instances(
    instances: list[Instance], shape: tuple[int, int], target: tuple[int, int]
) -> list[Instance]:
    """Instances found on an image of ``shape`` (rows, cols), mapped onto the same image
    resampled to ``target``; masks are resampled bilinearly and cut at one half, and instances
    that vanish at the new size are dropped."""
    row_scale, col_scale = target[0] / shape[0], target[1] / shape[1]
    mapped = []
    for inst in instances:
        h, w = inst.mask.shape
        r0, c0 = round(inst.row * row_scale), round(inst.col * col_scale)
        r1 = min(target[0], max(r0 + 1, round((inst.row + h) * row_scale)))
        c1 = min(target[1], max(c0 + 1, round((inst.col + w) * col_scale)))
        mask = torch.from_numpy(inst.mask.astype(np.float32))[None, None]
        mask = F.interpolate(mask, size=(r1 - r0, c1 - c0), mode="bilinear", align_corners=False)[0, 0] >= 0.5
        if mask.any():
            mapped.append(Instance(mask.numpy(), r0, c0, inst.score, inst.label))
    return mapped
