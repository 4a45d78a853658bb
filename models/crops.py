"""Square crops round detected buildings, and masks drawn in them pasted back onto the chip.

The methods driven by the centroid detector (Vec2Instance, centroid-pointer) look at each
building through a crop centred on its detected centre and scaled to its detected size,
resampled to a fixed patch. What they draw there (an MLP's logits, the pointer network's
logits) is read back at every pixel of the crop's box in the chip, and overlaps between
buildings are settled by score, in batched operations over every building of a batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .centroid import CentreTargets, Peaks
from .instances import Instance, resolve_overlaps

# (instance indexes, (m, g, g, 2) crop coordinates in [-1, 1]) -> (m, 1, g, g) mask logits
Draw = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SAMPLE_BUDGET = 2**22  # elements of the largest tensor one draw call may make


@dataclass(frozen=True)
class PasteSettings:
    """How drawn masks become instances.

    Attributes:
        patch: Side of the grid the masks were made on: crops are sampled on at most that grid
            and their logits interpolated to every pixel.
        mask_threshold: Probability that counts as building.
        min_pixels: Fewest pixels a kept instance owns.
        min_owned: Least share of its pixels an instance keeps after higher-scoring ones took theirs.
        channels: Elements made per sample by a draw call (the MLP's hidden units), for its budget.
    """

    patch: int
    mask_threshold: float
    min_pixels: int
    min_owned: float
    channels: int = 1


@dataclass(frozen=True)
class Pasted:
    """What ``paste_masks`` made.

    Attributes:
        instances: Per chip, its kept instances in descending score.
        kept: (n,) whether each instance was kept.
        drew: (n,) whether each instance drew any pixel it was allowed to take.
    """

    instances: list[list[Instance]]
    kept: torch.Tensor
    drew: torch.Tensor


def crop_grids(centre: torch.Tensor, side: torch.Tensor, shape: tuple[int, int], patch: int) -> torch.Tensor:
    """Sampling grids (for grid_sample) of square crops, in the image's normalised coordinates.

    Args:
        centre: (n, 2) crop centres (x, y) in pixels.
        side: (n,) crop sides in pixels.
        shape: (rows, cols) of the image.
        patch: Output side of each crop.

    Returns:
        (n, patch, patch, 2) grids.
    """
    rows, cols = shape
    steps = torch.linspace(-1 + 1 / patch, 1 - 1 / patch, patch, device=centre.device)
    u = centre[:, 0, None] + steps[None] * side[:, None] / 2  # (n, patch) pixel x
    v = centre[:, 1, None] + steps[None] * side[:, None] / 2
    gx = (2 * u / cols - 1)[:, None, :].expand(-1, patch, -1)
    gy = (2 * v / rows - 1)[:, :, None].expand(-1, -1, patch)
    return torch.stack([gx, gy], dim=-1)


def sample_crops(
    images: torch.Tensor,
    batch: torch.Tensor,
    centre: torch.Tensor,
    side: torch.Tensor,
    patch: int,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Crops of many instances from a batch of images, one grid_sample call per image.

    Args:
        images: (b, c, rows, cols).
        batch: (n,) image of each crop.
        centre: (n, 2) centres in pixels.
        side: (n,) sides in pixels.
        patch: Output side.
        mode: Interpolation, as for ``grid_sample`` ("nearest" for labels).

    Returns:
        (n, c, patch, patch); zeros outside the image.
    """
    grids = crop_grids(centre, side, (images.shape[-2], images.shape[-1]), patch)
    crops = images.new_zeros((len(batch), images.shape[1], patch, patch))
    for b in torch.unique(batch).tolist():
        index = torch.nonzero(batch == b).squeeze(1)
        # Stack this image's grids along rows: one call samples all of its crops.
        grid = grids[index].reshape(1, -1, patch, 2)
        sampled = F.grid_sample(images[b : b + 1], grid.to(images.dtype), mode=mode, align_corners=False)
        crops[index] = sampled.reshape(images.shape[1], len(index), patch, patch).transpose(0, 1)
    return crops


def training_crops(
    targets: CentreTargets,
    generator: torch.Generator,
    max_instances: int,
    margin: float,
    scale_jitter: float,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crops round up to ``max_instances`` true buildings, jittered as the detector errs: the
    centre by up to 10% of the building's size, the side (``margin`` times the size) by a factor
    of up to exp(+-``scale_jitter``).

    Returns:
        (the buildings picked, as positions in ``targets``; each crop's image, centre and side,
        on ``device``).
    """
    pick = torch.randperm(targets.batch.numel(), generator=generator)[:max_instances]
    size = targets.size[pick]
    jitter = (torch.rand((len(pick), 3), generator=generator) - 0.5) * 2
    centre = targets.centre[pick] + jitter[:, :2] * 0.1 * size[:, None]
    side = size * margin * torch.exp(jitter[:, 2] * scale_jitter)
    return pick, targets.batch[pick].to(device), centre.to(device), side.to(device)


def padded_sides(extent: torch.Tensor) -> torch.Tensor:
    """Crop sides rounded up to a quarter of their power of two (8, 10, 12, 14, 16, 20, 24, ...).

    Instances of one padded side are drawn together; the steps grow with the size, so padding
    adds at most a quarter to a side and there are few distinct sides.
    """
    step = torch.exp2(torch.floor(torch.log2(extent.float().clamp(min=8))) - 2).long()
    return torch.div(extent + step - 1, step, rounding_mode="floor") * step


def padded_rows(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` with the last repeated up to a count rounded up as crop sides are (padded_sides).

    oneDNN builds and caches kernels for each batch size it meets: with every chip's count of
    buildings, a run kept building new ones while its cache grew by about 100 MiB per worker
    (benchmarks/README.md). Batches of a few distinct sizes keep it small; the copies' results
    are dropped by the caller.
    """
    count = len(rows)
    if not count:
        return rows
    extra = int(padded_sides(torch.tensor([count]))[0]) - count
    return torch.cat([rows, rows[-1:].expand(extra, *rows.shape[1:])])


def _chunks(sides: torch.Tensor, channels: int, patch: int) -> list[tuple[torch.Tensor, int]]:
    """(instance indexes, padded side) per draw call, within the memory budget."""
    chunks = []
    for side in torch.unique(sides).tolist():
        members = torch.nonzero(sides == side).squeeze(1)
        samples = min(side, patch) ** 2
        size = max(1, SAMPLE_BUDGET // (samples * channels))
        chunks += [(members[i : i + size], side) for i in range(0, len(members), size)]
    return chunks


def paste_masks(
    draw: Draw,
    peaks: Peaks,
    side: torch.Tensor,
    shape: tuple[int, int],
    batch_size: int,
    settings: PasteSettings,
    allowed: torch.Tensor | None = None,
) -> Pasted:
    """Draw every instance over its crop's pixels, resolve overlaps, cut mask crops.

    Instances are grouped by padded crop size (see padded_sides) and drawn group by group, in
    chunks that bound memory. Overlaps are resolved by score (see instances.resolve_overlaps):
    each pixel belongs to the highest-scoring instance that claims it, and an instance left with
    less than ``min_owned`` of its pixels is dropped as a duplicate.

    Args:
        draw: Mask logits of some instances at crop coordinates (x, y in [-1, 1] over the crop).
        peaks: The instances' centres (their crops' centres), images and scores.
        side: (n,) crop sides in pixels.
        shape: (rows, cols) of the chips.
        batch_size: Chips in the batch.
        settings: Thresholds and the drawing grid.
        allowed: (batch, rows, cols) pixels instances may take (None: all).

    Returns:
        The instances of each chip, and which were kept and which drew anything.
    """
    rows, cols = shape
    device = side.device
    n = len(side)
    if n == 0:
        none = torch.zeros(0, dtype=torch.bool, device=device)
        return Pasted([[] for _ in range(batch_size)], none, none)
    x0 = torch.floor(peaks.centre[:, 0] - side / 2).clamp(0, cols - 1).long()
    y0 = torch.floor(peaks.centre[:, 1] - side / 2).clamp(0, rows - 1).long()
    x1 = torch.ceil(peaks.centre[:, 0] + side / 2).clamp(1, cols).long()
    y1 = torch.ceil(peaks.centre[:, 1] + side / 2).clamp(1, rows).long()
    extent = torch.maximum(x1 - x0, y1 - y0)
    threshold = math.log(settings.mask_threshold / (1 - settings.mask_threshold))  # on logits

    pixel_index, pixel_owner, masks = [], [], []
    for members, s in _chunks(padded_sides(extent), settings.channels, settings.patch):
        # Drawn on at most the patch's grid (where the masks were learnt), then interpolated to
        # every pixel: large buildings cost no more than the patch.
        g = min(s, settings.patch)
        offsets = (torch.arange(g, device=device, dtype=torch.float32) + 0.5) * (s / g)
        u = (x0[members, None] + offsets[None] - peaks.centre[members, 0, None]) / (side[members, None] / 2)
        v = (y0[members, None] + offsets[None] - peaks.centre[members, 1, None]) / (side[members, None] / 2)
        coords = torch.stack([u[:, None, :].expand(-1, g, -1), v[:, :, None].expand(-1, -1, g)], dim=-1)
        logits = draw(padded_rows(members), padded_rows(coords))[: len(members)]
        if g < s:
            logits = F.interpolate(logits, size=(s, s), mode="bilinear", align_corners=False)
        inside = (torch.arange(s, device=device)[None, None, :] < (x1 - x0)[members, None, None]) & (
            torch.arange(s, device=device)[None, :, None] < (y1 - y0)[members, None, None]
        )
        mask = (logits[:, 0] >= threshold) & inside
        which, r, c = torch.nonzero(mask, as_tuple=True)
        owner = members[which]
        flat = (peaks.batch[owner] * rows + y0[owner] + r) * cols + x0[owner] + c
        if allowed is not None:
            free = allowed.flatten()[flat]
            mask[which[~free], r[~free], c[~free]] = False
            flat, owner = flat[free], owner[free]
        pixel_index.append(flat)
        pixel_owner.append(owner)
        masks.append((members, mask))

    flat = torch.cat(pixel_index)
    owner = torch.cat(pixel_owner)
    keep, owned = resolve_overlaps(
        flat, owner, peaks.score, batch_size * rows * cols, settings.min_pixels, settings.min_owned
    )

    # Clear the pixels each instance lost to a higher-scoring neighbour, then cut the crops.
    lost_flat = flat[~owned]
    lost_owner = owner[~owned]
    lost_r = lost_flat // cols % rows - y0[lost_owner]
    lost_c = lost_flat % cols - x0[lost_owner]
    results: list[list[tuple[float, Instance]]] = [[] for _ in range(batch_size)]
    for members, mask in masks:
        position = torch.full((n,), -1, dtype=torch.long, device=device)
        position[members] = torch.arange(len(members), device=device)
        in_level = position[lost_owner] >= 0
        mask[position[lost_owner[in_level]], lost_r[in_level], lost_c[in_level]] = False
        mask_np = mask.cpu().numpy()
        for j, i in enumerate(members.tolist()):
            if not keep[i]:
                continue
            h, w = int(y1[i] - y0[i]), int(x1[i] - x0[i])
            instance = Instance(mask_np[j, :h, :w].copy(), int(y0[i]), int(x0[i]), float(peaks.score[i]))
            results[int(peaks.batch[i])].append((instance.score, instance))
    drew = torch.bincount(owner, minlength=n) > 0
    return Pasted([[inst for _, inst in sorted(chip, key=lambda t: -t[0])] for chip in results], keep, drew)
