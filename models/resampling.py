"""Inference at the pixel sizes a model was trained at, whatever the imagery's.

A network learns buildings at the pixel sizes it was shown: the same roof imaged at 0.15 m is
twice as many pixels across as at 0.3 m, and a model trained around 0.3 m misses or splits it.
Checkpoints of ground imagery record the pixel sizes they were trained at: the one size every
tile was resampled to (``training.pixel_size_m``), or the range of the tiles' own sizes for a
model trained on tiles as they came (``data.pixel_range_m``). `predict_at` resamples each batch
of chips whose pixel size lies outside that range to its nearer end, runs the method, and maps
every instance back onto the chips' own pixels, so that callers (the AOI flow, evaluation) keep
working in the imagery's pixels and georeference outlines as before.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from .instances import Instance, InstanceSegmenter

# Imagery within this ratio of the trained pixel sizes is used as it is: training jitters the
# scale by more than this (models.data.Augmentation), and resampling costs time and sharpness.
TOLERANCE = 1.15


def predict_at(
    segmenter: InstanceSegmenter,
    chips: torch.Tensor,
    pixel_size: float | None,
    trained_m: tuple[float, float],
) -> list[list[Instance]]:
    """Segment a batch of chips (see models.instances.InstanceSegmenter) at the pixel sizes the
    model was trained at.

    Args:
        segmenter: The method's segmenter.
        chips: The batch, in the imagery's pixels.
        pixel_size: Their ground pixel size in metres; None runs them as they are.
        trained_m: The lowest and highest pixel size the model was trained at (equal for a model
            trained at one size). Chips finer or coarser than these by more than TOLERANCE are
            resampled to the nearer one.

    Returns:
        Per chip, its instances in the chips' own pixels.
    """
    target = min(max(pixel_size, trained_m[0]), trained_m[1]) if pixel_size else 1.0
    factor = pixel_size / target if pixel_size else 1.0
    if 1 / TOLERANCE <= factor <= TOLERANCE:
        return segmenter.predict(chips, pixel_size)
    rows, cols = chips.shape[-2:]
    size = (max(1, round(rows * factor)), max(1, round(cols * factor)))
    # Finer imagery is shrunk by averaging the pixels under each new one (sharper than an
    # antialiased bilinear filter, and no aliasing of roof texture); coarser imagery is enlarged
    # bilinearly.
    mode = "area" if factor < 1 else "bilinear"
    resampled = F.interpolate(chips.float(), size, mode=mode)
    found = segmenter.predict(resampled, target)
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
