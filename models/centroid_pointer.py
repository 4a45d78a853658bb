"""Centroid-pointer: the centroid detector's peaks point the pointer network at each building.

The pointer network (models/pointer.py) answers "the segment that contains this pixel, inside
this region". Here the centroid detector (models/centroid.py) finds each building's centre and
size, and the pointer network draws the building under each centre: a third mask head beside
Vec2Instance and the embedding methods.

The pointer network looks at each building through a crop centred on its peak and scaled to its
detected size (``margin`` times it), resampled to a fixed patch, with the pointer at the crop's
centre; its logits are pasted back onto the chip at full resolution (models/crops.py). Every
building of a batch goes through the network in one batched forward pass per round:

- round 1: every peak, the ROI the whole chip;
- round r > 1: the peaks that drew a building but lost it to higher-scoring ones, and whose
  centre no building took, with the ROI the chip minus the buildings already found, so that
  what they draw now is what is left (the second of two touching buildings, say). A peak that
  drew nothing is not tried again. ``rounds`` bounds it.

Training: the detector's losses (models/centroid.py) and the pointer network's cross-entropy
inside the ROI on crops round the true buildings, jittered in position and scale as the
detector's errors would be, with the pointer inside the eroded building, other buildings
randomly removed from the ROI, and some pointers on background (answer: nothing), which is how
a false peak comes to draw no building.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .backbone import UNet
from .centroid import CentroidHead, Peaks, centre_losses, centre_targets, find_peaks
from .crops import PasteSettings, paste_masks, sample_crops, training_crops
from .instances import Instance, TorchSegmenter
from .pointer import PointerConfig, PointerModel, prompts_for, roi_cross_entropy


@dataclass(frozen=True)
class CentroidPointerConfig:
    """Architecture, training-sampler and decoding settings, stored in every checkpoint.

    Attributes:
        width: Channels of the detector backbone's first stage.
        stride: Output stride of the centre heatmap.
        pointer_width: Channels of the pointer network's first stage.
        patch: Side of the resampled crop the pointer network sees (a multiple of 32).
        margin: Crop side over building size: context around the building.
        peak_threshold: Minimum centre probability.
        min_distance: Minimum distance between centres, pixels.
        mask_threshold: Probability above which a pixel is the building's.
        min_pixels: Smallest instance kept, pixels.
        min_owned: Share of its pixels an instance must keep after higher-scoring ones took theirs.
        max_instances: Most instances per chip.
        rounds: Most rounds of pointing per chip (see the module's notes).
        erosion_px: Training: pointers lie this far inside their building where it is wide enough.
        drop_others: Training: the share of the other buildings removed from the ROI.
        background_pointers: Training: the share of crops whose pointer is on no building.
    """

    width: int = 16
    stride: int = 2
    pointer_width: int = 16
    patch: int = 64
    margin: float = 1.5
    peak_threshold: float = 0.2
    min_distance: float = 4.0
    mask_threshold: float = 0.5
    min_pixels: int = 12
    min_owned: float = 0.5
    max_instances: int = 256
    rounds: int = 2
    erosion_px: int = 2
    drop_others: float = 0.5
    background_pointers: float = 0.1

    def pointer_config(self) -> PointerConfig:
        """The pointer network's settings."""
        return PointerConfig(
            width=self.pointer_width,
            erosion_px=self.erosion_px,
            drop_others=self.drop_others,
            background_pointers=self.background_pointers,
            threshold=self.mask_threshold,
        )

    def to_dict(self) -> dict[str, float | int]:
        """Plain values, for checkpoints."""
        return asdict(self)


class CentroidPointerModel(nn.Module):
    """The centroid detector and the pointer network, trained together."""

    def __init__(self, config: CentroidPointerConfig = CentroidPointerConfig()) -> None:
        super().__init__()
        if config.patch % PointerModel.multiple:
            raise ValueError(f"patch must be a multiple of {PointerModel.multiple}, not {config.patch}")
        self.config = config
        self.backbone = UNet(3, config.width, config.stride)
        self.centres = CentroidHead(self.backbone.out_channels)
        self.pointer = PointerModel(config.pointer_config())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Centre maps (heat logits, log size, offset) of a batch of images."""
        return self.centres(self.backbone(images))

    def losses(
        self, images: torch.Tensor, ids: torch.Tensor, generator: torch.Generator, max_instances: int = 96
    ) -> dict[str, torch.Tensor]:
        """The detector's losses and the pointer network's on up to ``max_instances`` building crops."""
        cfg = self.config
        targets = centre_targets(ids, cfg.stride)
        heat, log_size, offset = self(images)
        losses = centre_losses(heat, log_size, offset, targets, cfg.stride)
        n = targets.batch.numel()
        if n == 0:
            return losses | {"pointer": images.sum() * 0}
        device = images.device
        pick, batch, centre, side = training_crops(targets, generator, max_instances, cfg.margin, 0.2, device)
        crops = sample_crops(images, batch, centre, side, cfg.patch)
        crop_ids = crop_labels(ids.to(device), batch, centre, side, cfg.patch).cpu()
        chosen = targets.ids[pick].clone()
        chosen[torch.rand(len(pick), generator=generator) < cfg.background_pointers] = 0
        pointers, rois, masks = prompts_for(crop_ids, chosen, self.pointer.config, generator)
        logits = self.pointer(crops, pointers.to(device), rois.to(device))
        return losses | {"pointer": roi_cross_entropy(logits, masks.to(device), rois.to(device))}


def crop_labels(
    ids: torch.Tensor, batch: torch.Tensor, centre: torch.Tensor, side: torch.Tensor, patch: int
) -> torch.Tensor:
    """(n, patch, patch) instance ids seen through the crops of ``sample_crops`` (nearest
    neighbour, 0 outside the image)."""
    labels = sample_crops(ids.float()[:, None], batch, centre, side, patch, mode="nearest")
    return labels[:, 0].round().long()


class CentroidPointerSegmenter(TorchSegmenter[CentroidPointerModel]):
    """Inference with a trained CentroidPointerModel (the InstanceSegmenter interface)."""

    method = "centroid-pointer"
    chunk = 256  # crops per forward pass of the pointer network

    def __init__(self, model: CentroidPointerModel, device: torch.device | None = None) -> None:
        super().__init__(model, device)
        self.config = model.config

    @torch.inference_mode()
    def detect(self, images: torch.Tensor) -> Peaks:
        """The building centres the detector finds in (b, 3, rows, cols) chips, sides multiples
        of 32."""
        cfg = self.config
        with self.autocast():
            heat, log_size, offset = self.model(images)
        return find_peaks(
            heat, log_size, offset, cfg.stride, cfg.peak_threshold, cfg.min_distance, cfg.max_instances
        )

    @torch.inference_mode()
    def pointer_logits(
        self, images: torch.Tensor, taken: torch.Tensor, peaks: Peaks, side: torch.Tensor, at: torch.Tensor
    ) -> torch.Tensor:
        """(n, 1, patch, patch) logits of "in the pointed segment" over each crop.

        Args:
            images: (b, 3, rows, cols) chips.
            taken: (b, rows, cols) pixels already given to buildings: outside every ROI.
            peaks: The crops' centres and images.
            side: (n,) crop sides in pixels.
            at: (n, 2) pointer of each crop, as (x, y) in crop coordinates in [-1, 1].
        """
        patch = self.config.patch
        out = []
        for start in range(0, len(side), self.chunk):
            part = slice(start, start + self.chunk)
            batch, centre, crop_side = peaks.batch[part], peaks.centre[part], side[part]
            crops = sample_crops(images, batch, centre, crop_side, patch)
            rois = 1 - sample_crops(taken.float()[:, None], batch, centre, crop_side, patch)
            pixel = ((at[part] + 1) / 2 * patch).long().clamp(0, patch - 1)
            pointers = torch.zeros_like(rois)
            pointers[torch.arange(len(pixel)), 0, pixel[:, 1], pixel[:, 0]] = 1.0
            with self.autocast():
                logits = self.model.pointer(crops, pointers, (rois > 0.5).float()).float()
            out.append(logits[:, 1:] - logits[:, :1])
        return torch.cat(out) if out else images.new_zeros((0, 1, patch, patch))

    @torch.inference_mode()
    def predict(self, chips: torch.Tensor, pixel_size: float | None = None) -> list[list[Instance]]:
        """Segment the buildings of a batch of chips (see models.instances.InstanceSegmenter).

        Its settings are in pixels, so ``pixel_size`` is not used.
        """
        cfg = self.config
        batch_size, _, rows, cols = chips.shape
        padded = F.pad(chips, (0, -cols % UNet.multiple, 0, -rows % UNet.multiple)).to(self._device)
        peaks = self.detect(padded)
        inside = (peaks.centre[:, 0] < cols) & (peaks.centre[:, 1] < rows)
        peaks = peaks.select(inside)
        side = (peaks.size * cfg.margin).clamp(min=8.0)
        settings = PasteSettings(cfg.patch, cfg.mask_threshold, cfg.min_pixels, cfg.min_owned)
        # At the padded size, which the pointer network's crops read; instances live in the chip.
        taken = torch.zeros(padded.shape[:1] + padded.shape[2:], dtype=torch.bool, device=self._device)
        found: list[list[Instance]] = [[] for _ in range(batch_size)]
        pending = torch.arange(len(side), device=self._device)
        for _ in range(cfg.rounds):
            if len(pending) == 0:
                break
            these = peaks.select(pending)
            centred = torch.zeros((len(pending), 2), device=self._device)
            logits = self.pointer_logits(padded, taken, these, side[pending], centred)

            def draw(
                members: torch.Tensor, coords: torch.Tensor, logits: torch.Tensor = logits
            ) -> torch.Tensor:
                return F.grid_sample(logits[members], coords, align_corners=False)

            allowed = ~taken[:, :rows, :cols]
            pasted = paste_masks(draw, these, side[pending], (rows, cols), batch_size, settings, allowed)
            for b, instances in enumerate(pasted.instances):
                found[b] += instances
                for i in instances:
                    h, w = i.mask.shape
                    mask = torch.from_numpy(i.mask).to(self._device)
                    taken[b, i.row : i.row + h, i.col : i.col + w] |= mask
            x = these.centre[:, 0].long().clamp(0, cols - 1)
            y = these.centre[:, 1].long().clamp(0, rows - 1)
            # Tried again: what drew a building but lost it to better ones, unless one took its centre.
            pending = pending[~pasted.kept & pasted.drew & ~taken[these.batch, y, x]]
        return [sorted(chip, key=lambda i: -i.score) for chip in found]

    @torch.inference_mode()
    def segment_at(self, chips: torch.Tensor, points: torch.Tensor) -> list[Instance | None]:
        """The building under a point of each chip, or None where there is none.

        The building is one the detector found whose box holds the point (the nearest such
        centre); the pointer network draws it in that building's crop, pointed at the point
        itself, and it is the answer when what it draws holds the point. Its score is the
        network's probability at the point. Where no detected building's box holds the point
        there is no building.

        Args:
            chips: (n, 3, rows, cols) chips in [0, 1].
            points: (n, 2) the point of each chip, (x, y) in pixels.
        """
        cfg = self.config
        n, _, rows, cols = chips.shape
        padded = F.pad(chips, (0, -cols % UNet.multiple, 0, -rows % UNet.multiple)).to(self._device)
        points = points.to(self._device).float()
        peaks = self.detect(padded)
        distance = (peaks.centre - points[peaks.batch]).abs().amax(1)
        holding = distance <= peaks.size / 2
        chosen = torch.full((n,), -1, dtype=torch.long, device=self._device)
        for i in range(n):
            mine = torch.nonzero(holding & (peaks.batch == i)).squeeze(1)
            if len(mine):
                chosen[i] = mine[torch.argmin(distance[mine])]
        found: list[Instance | None] = [None] * n
        some = torch.nonzero(chosen >= 0).squeeze(1)
        if len(some) == 0:
            return found
        crops = peaks.select(chosen[some])
        crops = Peaks(torch.arange(len(some), device=self._device), crops.centre, crops.size, crops.score)
        side = (crops.size * cfg.margin).clamp(min=8.0)
        at = (points[some] - crops.centre) / (side[:, None] / 2)
        taken = torch.zeros((len(some), *padded.shape[2:]), dtype=torch.bool, device=self._device)
        logits = self.pointer_logits(padded[some], taken, crops, side, at)
        under = F.grid_sample(logits, at[:, None, None, :], align_corners=False)[:, 0, 0, 0]
        crops = Peaks(crops.batch, crops.centre, crops.size, torch.sigmoid(under))

        def draw(members: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
            return F.grid_sample(logits[members], coords, align_corners=False)

        settings = PasteSettings(cfg.patch, cfg.mask_threshold, 1, 0.0)
        drawn = paste_masks(draw, crops, side, (rows, cols), len(some), settings).instances
        for i, chip, point in zip(some.tolist(), drawn, points[some].cpu().tolist(), strict=True):
            found[i] = _holding(chip, point)
        return found


def _holding(instances: list[Instance], point: list[float]) -> Instance | None:
    """The instance whose mask holds the pixel of ``point`` (x, y), if any."""
    col, row = int(point[0]), int(point[1])
    for instance in instances:
        r, c = row - instance.row, col - instance.col
        if 0 <= r < instance.mask.shape[0] and 0 <= c < instance.mask.shape[1] and instance.mask[r, c]:
            return instance
    return None
