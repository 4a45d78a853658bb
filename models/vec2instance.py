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
from .crops import PasteSettings, crop_grids, padded_rows, paste_masks, sample_crops, training_crops
from .instances import Instance, TorchSegmenter


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
        device = images.device
        pick, batch, centre, side = training_crops(
            targets, generator, max_instances, cfg.margin, 0.15, device
        )
        ids_picked = targets.ids[pick]
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
        with self.autocast():
            heat, log_size, offset = self.model(padded)
            peaks = find_peaks(
                heat, log_size, offset, cfg.stride, cfg.peak_threshold, cfg.min_distance, cfg.max_instances
            )
            inside = (peaks.centre[:, 0] < cols) & (peaks.centre[:, 1] < rows)
            peaks = peaks.select(inside)
            side = (peaks.size * cfg.margin).clamp(min=4.0)
            crops = sample_crops(padded, peaks.batch, peaks.centre, side, cfg.patch)
            params = self.model.instances(padded_rows(crops))[: len(crops)]
        return decode_masks(params.float(), peaks, side, (rows, cols), batch_size, cfg)


def decode_masks(
    params: torch.Tensor,
    peaks: Peaks,
    side: torch.Tensor,
    shape: tuple[int, int],
    batch_size: int,
    config: Vec2InstanceConfig,
) -> list[list[Instance]]:
    """Draw every instance's MLP over its crop's pixels, resolve overlaps, cut mask crops (see
    crops.paste_masks)."""

    def draw(members: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        m, g = coords.shape[:2]
        return coordinate_mlp(params[members], coords.reshape(m, -1, 2), config.hidden).reshape(m, 1, g, g)

    settings = PasteSettings(
        config.patch, config.mask_threshold, config.min_pixels, config.min_owned, channels=config.hidden
    )
    return paste_masks(draw, peaks, side, shape, batch_size, settings).instances
