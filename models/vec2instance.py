"""Vec2Instance: a CNN predicts the weights of a small coordinate MLP that draws a building's mask.

An instance mask is a function f(u, v) -> {0, 1} of position relative to the building's centre.
The instance network looks at a crop centred on a detected centre and outputs the parameters of a
2 -> hidden (tanh) -> 1 MLP, laid out as [x-weights, y-weights, hidden biases, output weights,
output bias] (4 * hidden + 1 values). Evaluating that MLP on a coordinate grid gives the mask.

Beyond the reference:
- The crop is scaled to the building (its side is the detected size times a margin) and resampled
  to a fixed patch, so a 200 px building is segmented like a 20 px one: no 64 px size limit.
- Coordinates are normalised to [-1, 1] over the crop, not raw integers.
- Decoding evaluates every instance's MLP in a few batched matrix products (instances grouped by
  size), on at most the training patch's grid with the logits interpolated to every pixel of the
  crop, then resolves overlaps in one vectorised pass that keeps the higher-scoring instance (the
  reference kept the lower).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .backbone import UNet, conv_block
from .centroid import CentreTargets, CentroidHead, Peaks, centre_losses, centre_targets, find_peaks
from .instances import Instance, TorchSegmenter, resolve_overlaps


@dataclass(frozen=True)
class Vec2InstanceConfig:
    """Architecture and decoding settings, stored in every checkpoint.

    Attributes:
        width: Channels of the centroid backbone's first stage.
        stride: Output stride of the centre heatmap.
        patch: Side of the resampled crop the instance network sees.
        hidden: Hidden units of the coordinate MLP.
        margin: Crop side over building size: context around the building.
        peak_threshold: Minimum centre probability.
        min_distance: Minimum distance between centres, pixels.
        mask_threshold: MLP output probability that counts as building.
        min_pixels: Smallest instance kept, pixels.
        min_owned: Share of its pixels an instance must keep after higher-scoring ones took theirs.
        max_instances: Most instances per chip.
    """

    width: int = 16
    stride: int = 2
    patch: int = 48
    hidden: int = 64
    margin: float = 1.3
    peak_threshold: float = 0.2
    min_distance: float = 4.0
    mask_threshold: float = 0.5
    min_pixels: int = 12
    min_owned: float = 0.5
    max_instances: int = 256

    @property
    def n_params(self) -> int:
        """Length of the MLP parameter vector."""
        return 4 * self.hidden + 1

    def to_dict(self) -> dict[str, float | int]:
        """Plain values, for checkpoints."""
        return asdict(self)


class InstanceNet(nn.Module):
    """Crop (3 bands + 2 coordinate channels) -> MLP parameter vector."""

    coords: torch.Tensor

    def __init__(self, patch: int, n_params: int, width: int = 24) -> None:
        super().__init__()
        channels = [5, width, 2 * width, 3 * width, 4 * width]
        self.features = nn.Sequential(
            *(conv_block(channels[i], channels[i + 1], stride=2) for i in range(len(channels) - 1))
        )
        side = math.ceil(patch / 16)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels[-1] * side * side, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, n_params),
        )
        coords = torch.linspace(-1 + 1 / patch, 1 - 1 / patch, patch)
        self.register_buffer(
            "coords", torch.stack(torch.meshgrid(coords, coords, indexing="xy"))[None], persistent=False
        )

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """(n, 3, patch, patch) -> (n, n_params)."""
        # Coordinate channels tell the network where the crop's centre is: the building to draw.
        x = torch.cat([crops, self.coords.expand(crops.shape[0], -1, -1, -1).to(crops.dtype)], dim=1)
        return self.head(self.features(x))


def coordinate_mlp(params: torch.Tensor, coords: torch.Tensor, hidden: int) -> torch.Tensor:
    """Evaluate each instance's MLP on its coordinates.

    Args:
        params: (n, 4 * hidden + 1) parameter vectors.
        coords: (n, q, 2) normalised (u, v) coordinates, or (q, 2) shared by all.
        hidden: Hidden units.

    Returns:
        (n, q) mask logits.
    """
    wx, wy, bias, w_out = (params[:, i * hidden : (i + 1) * hidden, None] for i in range(4))
    b_out = params[:, 4 * hidden, None]
    if coords.dim() == 2:
        coords = coords.expand(params.shape[0], -1, -1)
    # (n, q, 2) @ (n, 2, hidden): one batched product for the hidden layer of every instance;
    # tanh in place, since (n, q, hidden) is the largest tensor of decoding.
    weights = torch.cat([wx, wy], dim=2).transpose(1, 2)
    h = torch.baddbmm(bias.transpose(1, 2), coords, weights).tanh_()
    return torch.bmm(h, w_out).squeeze(2) + b_out


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
    images: torch.Tensor, batch: torch.Tensor, centre: torch.Tensor, side: torch.Tensor, patch: int
) -> torch.Tensor:
    """Crops of many instances from a batch of images, one grid_sample call per image.

    Args:
        images: (b, c, rows, cols).
        batch: (n,) image of each crop.
        centre: (n, 2) centres in pixels.
        side: (n,) sides in pixels.
        patch: Output side.

    Returns:
        (n, c, patch, patch); zeros outside the image.
    """
    grids = crop_grids(centre, side, (images.shape[-2], images.shape[-1]), patch)
    crops = images.new_zeros((len(batch), images.shape[1], patch, patch))
    for b in torch.unique(batch).tolist():
        index = torch.nonzero(batch == b).squeeze(1)
        # Stack this image's grids along rows: one call samples all of its crops.
        grid = grids[index].reshape(1, -1, patch, 2)
        sampled = F.grid_sample(images[b : b + 1], grid.to(images.dtype), align_corners=False)
        crops[index] = sampled.reshape(images.shape[1], len(index), patch, patch).transpose(0, 1)
    return crops


class Vec2InstanceModel(nn.Module):
    """The centroid network and the instance network, trained together."""

    def __init__(self, config: Vec2InstanceConfig = Vec2InstanceConfig()) -> None:
        super().__init__()
        self.config = config
        self.backbone = UNet(3, config.width, config.stride)
        self.centres = CentroidHead(self.backbone.out_channels)
        self.instances = InstanceNet(config.patch, config.n_params)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Centre maps (heat logits, log size, offset) of a batch of images."""
        return self.centres(self.backbone(images))

    def losses(
        self, images: torch.Tensor, ids: torch.Tensor, generator: torch.Generator, max_instances: int = 96
    ) -> dict[str, torch.Tensor]:
        """Training losses on a batch of images and their instance id maps.

        The instance network is trained on crops around the true centres, jittered in position and
        scale as the centroid network's own errors would be, so that it learns to draw the building
        at the crop's centre from an imperfect crop.
        """
        cfg = self.config
        targets = centre_targets(ids, cfg.stride)
        heat, log_size, offset = self(images)
        losses = centre_losses(heat, log_size, offset, targets, cfg.stride)
        losses["mask"] = self._mask_loss(images, ids, targets, generator, max_instances)
        return losses

    def _mask_loss(
        self,
        images: torch.Tensor,
        ids: torch.Tensor,
        targets: CentreTargets,
        generator: torch.Generator,
        max_instances: int,
    ) -> torch.Tensor:
        cfg = self.config
        n = targets.batch.numel()
        if n == 0:
            return images.sum() * 0
        pick = torch.randperm(n, generator=generator)[:max_instances]
        batch, ids_picked = targets.batch[pick], targets.ids[pick]
        size = targets.size[pick]
        jitter = (torch.rand((len(pick), 3), generator=generator) - 0.5) * 2
        centre = targets.centre[pick] + jitter[:, :2] * 0.1 * size[:, None]
        side = size * cfg.margin * torch.exp(jitter[:, 2] * 0.15)
        device = images.device
        batch, centre, side = batch.to(device), centre.to(device), side.to(device)
        crops = sample_crops(images, batch, centre, side, cfg.patch)
        # The target: this building's own mask, resampled through the same crop.
        own = (ids.to(device)[batch] == ids_picked.to(device)[:, None, None]).float()[:, None]
        grids = crop_grids(centre, side, (ids.shape[-2], ids.shape[-1]), cfg.patch)
        target = F.grid_sample(own, grids, align_corners=False).flatten(1)
        steps = torch.linspace(-1 + 1 / cfg.patch, 1 - 1 / cfg.patch, cfg.patch, device=device)
        coords = torch.stack(torch.meshgrid(steps, steps, indexing="xy"), dim=-1).reshape(-1, 2)
        logits = coordinate_mlp(self.instances(crops), coords, cfg.hidden).float()
        bce = F.binary_cross_entropy_with_logits(logits, target)
        prob = torch.sigmoid(logits)
        dice = 1 - (2 * (prob * target).sum(1) + 1) / (prob.sum(1) + target.sum(1) + 1)
        return bce + dice.mean()


class Vec2InstanceSegmenter(TorchSegmenter[Vec2InstanceModel]):
    """Inference with a trained Vec2InstanceModel (the InstanceSegmenter interface)."""

    method = "vec2instance"

    def __init__(self, model: Vec2InstanceModel, device: torch.device | None = None) -> None:
        super().__init__(model, device)
        self.config = model.config

    @torch.inference_mode()
    def predict(self, chips: torch.Tensor, pixel_size: float | None = None) -> list[list[Instance]]:
        """Segment the buildings of a batch of chips (see models.instances.InstanceSegmenter).

        Its settings are in pixels, so ``pixel_size`` is not used.
        """
        cfg = self.config
        batch_size, _, rows, cols = chips.shape
        multiple = UNet.multiple
        padded = F.pad(chips, (0, -cols % multiple, 0, -rows % multiple)).to(self._device)
        with torch.autocast(self._device.type, dtype=torch.bfloat16, enabled=self._device.type == "cuda"):
            heat, log_size, offset = self.model(padded)
            peaks = find_peaks(
                heat, log_size, offset, cfg.stride, cfg.peak_threshold, cfg.min_distance, cfg.max_instances
            )
            inside = (peaks.centre[:, 0] < cols) & (peaks.centre[:, 1] < rows)
            peaks = Peaks(peaks.batch[inside], peaks.centre[inside], peaks.size[inside], peaks.score[inside])
            side = (peaks.size * cfg.margin).clamp(min=4.0)
            params = self.model.instances(sample_crops(padded, peaks.batch, peaks.centre, side, cfg.patch))
        return decode_masks(params.float(), peaks, side, (rows, cols), batch_size, cfg)


HIDDEN_BUDGET = 2**22  # elements of the (instances, pixels, hidden) tensor per evaluation


def padded_sides(extent: torch.Tensor) -> torch.Tensor:
    """Crop sides rounded up to a quarter of their power of two (8, 10, 12, 14, 16, 20, 24, ...).

    Instances of one padded side are evaluated together; the steps grow with the size, so padding
    adds at most a quarter to a side and there are few distinct sides.
    """
    step = torch.exp2(torch.floor(torch.log2(extent.float().clamp(min=8))) - 2).long()
    return torch.div(extent + step - 1, step, rounding_mode="floor") * step


def _chunks(sides: torch.Tensor, hidden: int, patch: int) -> list[tuple[torch.Tensor, int]]:
    """(instance indexes, padded side) per batched evaluation, within the memory budget."""
    chunks = []
    for side in torch.unique(sides).tolist():
        members = torch.nonzero(sides == side).squeeze(1)
        samples = min(side, patch) ** 2
        size = max(1, HIDDEN_BUDGET // (samples * hidden))
        chunks += [(members[i : i + size], side) for i in range(0, len(members), size)]
    return chunks


def decode_masks(
    params: torch.Tensor,
    peaks: Peaks,
    side: torch.Tensor,
    shape: tuple[int, int],
    batch_size: int,
    config: Vec2InstanceConfig,
) -> list[list[Instance]]:
    """Draw every instance over its crop's pixels, resolve overlaps, cut mask crops.

    Instances are grouped by padded crop size (see padded_sides); each group is evaluated in
    batched matrix products, in chunks that bound the memory of the hidden layer. Overlaps are
    resolved by score (see instances.resolve_overlaps): each pixel belongs to the highest-scoring
    instance that claims it, and an instance left with less than ``min_owned`` of its pixels is
    dropped as a duplicate.
    """
    rows, cols = shape
    device = params.device
    n = len(params)
    if n == 0:
        return [[] for _ in range(batch_size)]
    x0 = torch.floor(peaks.centre[:, 0] - side / 2).clamp(0, cols - 1).long()
    y0 = torch.floor(peaks.centre[:, 1] - side / 2).clamp(0, rows - 1).long()
    x1 = torch.ceil(peaks.centre[:, 0] + side / 2).clamp(1, cols).long()
    y1 = torch.ceil(peaks.centre[:, 1] + side / 2).clamp(1, rows).long()
    extent = torch.maximum(x1 - x0, y1 - y0)
    threshold = math.log(config.mask_threshold / (1 - config.mask_threshold))  # on logits

    pixel_index, pixel_owner, masks = [], [], []
    for members, s in _chunks(padded_sides(extent), config.hidden, config.patch):
        # The MLP is sampled on at most the training patch's grid (it was fitted there) and its
        # logits are interpolated to every pixel: large buildings cost no more than the patch.
        g = min(s, config.patch)
        offsets = (torch.arange(g, device=device, dtype=torch.float32) + 0.5) * (s / g)
        u = (x0[members, None] + offsets[None] - peaks.centre[members, 0, None]) / (side[members, None] / 2)
        v = (y0[members, None] + offsets[None] - peaks.centre[members, 1, None]) / (side[members, None] / 2)
        coords = torch.stack([u[:, None, :].expand(-1, g, -1), v[:, :, None].expand(-1, -1, g)], dim=-1)
        logits = coordinate_mlp(params[members], coords.reshape(len(members), -1, 2), config.hidden)
        logits = logits.reshape(-1, 1, g, g)
        if g < s:
            logits = F.interpolate(logits, size=(s, s), mode="bilinear", align_corners=False)
        inside = (torch.arange(s, device=device)[None, None, :] < (x1 - x0)[members, None, None]) & (
            torch.arange(s, device=device)[None, :, None] < (y1 - y0)[members, None, None]
        )
        mask = (logits[:, 0] >= threshold) & inside
        which, r, c = torch.nonzero(mask, as_tuple=True)
        owner = members[which]
        flat = (peaks.batch[owner] * rows + y0[owner] + r) * cols + x0[owner] + c
        pixel_index.append(flat)
        pixel_owner.append(owner)
        masks.append((members, mask))

    flat = torch.cat(pixel_index)
    owner = torch.cat(pixel_owner)
    keep, owned = resolve_overlaps(
        flat, owner, peaks.score, batch_size * rows * cols, config.min_pixels, config.min_owned
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
    return [[inst for _, inst in sorted(chip, key=lambda t: -t[0])] for chip in results]
