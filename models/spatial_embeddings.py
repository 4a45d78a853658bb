"""Spatial embeddings with a learned clustering bandwidth (Neven et al. 2019).

A branched ERFNet predicts, for every pixel, an offset o that points at its instance's centre, a
bandwidth sigma (one value per axis: elliptical margins suit elongated buildings), and per class a
seed map that says how close the pixel's embedding lands to its centre. The embedding of pixel i is
e_i = x_i + tanh(o_i), where x_i is the pixel's position on a grid of fixed step, so a chip of any
size is embedded alike. Instance k with centre C_k and bandwidth s_k = exp(10 * mean sigma over k)
claims pixel i with probability phi_k(i) = exp(-sum_d s_k,d (e_i,d - C_k,d)^2).

Beyond the reference:
- The training loss is computed for every instance of a batch at once (one Lovasz sort for all of
  them); the seed term is per class, so another class's objects teach a seed map "not me".
- Clustering runs in torch on the model's device, for every chip and class of a batch in lock-step,
  with no cap on instances, a minimum size in m^2, and each accepted instance taking only the
  pixels no higher-seeded instance took before it (the reference let it overwrite them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .erfnet import BranchedERFNet
from .instances import Instance, TorchSegmenter, labels_to_instances
from .lovasz import lovasz_hinge

# Training instance ids carry their class: id = class index * CLASS_STRIDE + instance number.
CLASS_STRIDE = 1 << 16


@dataclass(frozen=True)
class SpatialEmbeddingsConfig:
    """Architecture and clustering settings, stored in every checkpoint.

    Attributes:
        width: Channels of the network's first stage (16 in the paper).
        dropout: Dropout of the encoder's dilated blocks.
        classes: Names of the classes, one seed map each.
        sigma_channels: 2 for a bandwidth per axis (elliptical margins), 1 for a circular one.
        pixel_step: Embedding-grid units per pixel; tanh bounds the offsets to one unit, so
            1 / pixel_step is the farthest (in pixels) a pixel can point.
        foreground: Seed value above which a pixel is an object's.
        seed_threshold: Lowest seed that starts a new instance.
        min_area_m2: Smallest instance kept, in m^2 at the pixel size the caller gives.
        pixel_size_m: Pixel size assumed when the caller gives none (0.3 m: SpaceNet's). Set it to
            1 for imagery without a ground size (Cityscapes): ``min_area_m2`` is then in pixels.
        min_unclustered: Share of an instance's pixels that must be new for it to be kept.
    """

    width: int = 16
    dropout: float = 0.3
    classes: tuple[str, ...] = ("building",)
    sigma_channels: int = 2
    pixel_step: float = 1 / 1024
    foreground: float = 0.5
    seed_threshold: float = 0.9
    min_area_m2: float = 4.0
    pixel_size_m: float = 0.3
    min_unclustered: float = 0.5

    def __post_init__(self) -> None:
        # Checkpoints store plain values: the tuple comes back as a list.
        object.__setattr__(self, "classes", tuple(self.classes))
        if self.sigma_channels not in (1, 2):
            raise ValueError(f"sigma_channels must be 1 or 2, not {self.sigma_channels}")
        if not self.classes:
            raise ValueError("at least one class is needed")

    def min_pixels(self, pixel_size_m: float | None) -> int:
        """The smallest instance in pixels, at ``pixel_size_m`` (None: ``self.pixel_size_m``)."""
        size = pixel_size_m or self.pixel_size_m
        return max(1, math.ceil(self.min_area_m2 / (size * size)))

    def to_dict(self) -> dict[str, object]:
        """Plain values, for checkpoints."""
        return asdict(self)


def coordinate_grid(rows: int, cols: int, step: float, device: torch.device) -> torch.Tensor:
    """(2, rows, cols) pixel positions (x, then y) in embedding units."""
    y = torch.arange(rows, device=device, dtype=torch.float32) * step
    x = torch.arange(cols, device=device, dtype=torch.float32) * step
    return torch.stack([x[None, :].expand(rows, -1), y[:, None].expand(-1, cols)])


class SpatialEmbeddingsModel(nn.Module):
    """The branched ERFNet: offsets and sigmas from one decoder, seed maps from the other."""

    def __init__(self, config: SpatialEmbeddingsConfig = SpatialEmbeddingsConfig()) -> None:
        super().__init__()
        self.config = config
        self.network = BranchedERFNet(
            (2 + config.sigma_channels, len(config.classes)), config.width, config.dropout
        )
        # Offsets start at zero (every pixel is its own centre) and sigmas at 1, a bandwidth of
        # exp(10): the network first learns where centres are before it learns how wide they are.
        head = self.network.head(0)
        assert head.bias is not None
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()
            head.bias[2:].fill_(1.0)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(b, 3, h, w) -> offsets (b, 2, h, w), sigmas (b, s, h, w), seed logits (b, classes, h, w)."""
        out = self.network(images)
        sigmas = 2 + self.config.sigma_channels
        return out[:, :2], out[:, 2:sigmas], out[:, sigmas:]

    def embed(self, offsets: torch.Tensor) -> torch.Tensor:
        """Embeddings e = x + tanh(o) of (b, 2, h, w) offsets."""
        _, _, rows, cols = offsets.shape
        grid = coordinate_grid(rows, cols, self.config.pixel_step, offsets.device)
        return grid + torch.tanh(offsets.float())

    def losses(
        self, images: torch.Tensor, ids: torch.Tensor, generator: torch.Generator, max_instances: int = 96
    ) -> dict[str, torch.Tensor]:
        """Training losses on a batch of images and their instance id maps (see embedding_losses)."""
        offsets, sigmas, seeds = self(images)
        return embedding_losses(
            self.embed(offsets), sigmas.float(), seeds.float(), ids, self.config, generator, max_instances
        )


def embedding_losses(
    embeddings: torch.Tensor,
    sigmas: torch.Tensor,
    seed_logits: torch.Tensor,
    ids: torch.Tensor,
    config: SpatialEmbeddingsConfig,
    generator: torch.Generator,
    max_instances: int,
) -> dict[str, torch.Tensor]:
    """The three loss terms, for every instance of the batch at once.

    Per image, each term is averaged over its instances (the seed term over its pixels), then over
    the images of the batch, so the scale does not depend on batch size or crowding.

    Args:
        embeddings: (b, 2, h, w) pixel embeddings.
        sigmas: (b, 1 or 2, h, w) raw bandwidth outputs.
        seed_logits: (b, classes, h, w) seed map logits.
        ids: (b, h, w) instance ids, 0 for background (see CLASS_STRIDE for the class).
        config: The model's settings (pixel step).
        generator: Draws the instances of the instance term when there are more than
            ``max_instances`` (to bound its memory); the other terms use all of them.
        max_instances: Most instances in the instance term per step.

    Returns:
        "instance" (Lovasz hinge), "smoothness" (variance of sigma inside instances, weighted 10)
        and "seed" (seed regression, foreground weighted 10).
    """
    batch, _, rows, cols = embeddings.shape
    pixels = rows * cols
    device = embeddings.device
    grid = coordinate_grid(rows, cols, config.pixel_step, device).flatten(1)
    emb = embeddings.flatten(2)
    sig = sigmas.flatten(2)
    seed = torch.sigmoid(seed_logits).flatten(2)
    ids = ids.to(device).flatten(1).long()

    pixel_b, pixel_p = torch.nonzero(ids > 0, as_tuple=True)
    keys, inst = torch.unique(pixel_b * (ids.max() + 1) + ids[pixel_b, pixel_p], return_inverse=True)
    n = len(keys)
    inst_b = keys // (ids.max() + 1)
    inst_class = (keys % (ids.max() + 1)) // CLASS_STRIDE
    counts = torch.bincount(inst, minlength=n).float()

    def instance_mean(values: torch.Tensor) -> torch.Tensor:
        """Mean over each instance's pixels of per-pixel (m, ...) values -> (n, ...)."""
        total = values.new_zeros((n, *values.shape[1:])).index_add_(0, inst, values)
        return total / counts.view(-1, *([1] * (values.dim() - 1)))

    def image_mean(values: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of each image's mean over its instances (0 without any)."""
        total = values.new_zeros(batch).index_add_(0, image, values)
        return (total / torch.bincount(image, minlength=batch).clamp(min=1)).mean()

    centre = instance_mean(grid[:, pixel_p].T)  # (n, 2): mean pixel position
    sig_pixels = sig[pixel_b, :, pixel_p]  # (m, s)
    mean_sigma = instance_mean(sig_pixels)
    bandwidth = torch.exp(10 * mean_sigma)  # (n, s), broadcast over both axes when s == 1

    variance = instance_mean(((sig_pixels - mean_sigma[inst].detach()) ** 2).mean(dim=1))
    smoothness = image_mean(variance, inst_b)

    # Seeds: each instance pixel regresses to its own phi (not pushed by the seed term: detached),
    # every other pixel of every class map to 0.
    emb_pixels = emb[pixel_b, :, pixel_p]
    phi_own = torch.exp(-(bandwidth[inst] * (emb_pixels - centre[inst]) ** 2).sum(dim=1))
    target = torch.zeros_like(seed)
    weight = torch.ones_like(seed)
    target[pixel_b, inst_class[inst], pixel_p] = phi_own.detach()
    weight[pixel_b, inst_class[inst], pixel_p] = 10.0
    seed_loss = ((weight * (seed - target) ** 2).sum(dim=(1, 2)) / pixels).mean()

    if n > max_instances:
        pick = torch.randperm(n, generator=generator)[:max_instances].to(device).sort().values
    else:
        pick = torch.arange(n, device=device)
    row_of = torch.full((n,), -1, dtype=torch.long, device=device)
    row_of[pick] = torch.arange(len(pick), device=device)
    diff = emb[inst_b[pick]] - centre[pick, :, None]  # (k, 2, pixels)
    phi = torch.exp(-(bandwidth[pick, :, None] * diff**2).sum(dim=1))
    labels = torch.zeros_like(phi)
    picked = row_of[inst] >= 0
    labels[row_of[inst[picked]], pixel_p[picked]] = 1.0
    instance_loss = image_mean(lovasz_hinge(2 * phi - 1, labels), inst_b[pick])

    if n == 0:  # keep every head in the graph, at zero
        zero = embeddings.sum() * 0 + sigmas.sum() * 0
        instance_loss, smoothness = instance_loss + zero, smoothness + zero
    return {"instance": instance_loss, "smoothness": 10 * smoothness, "seed": seed_loss}


@dataclass(frozen=True)
class Clusters:
    """Instances found in a batch of maps (one map per chip and class).

    Attributes:
        labels: (maps, h, w) instance number + 1 of each pixel, 0 for none.
        scores: (instances,) seed value of each instance, in order of number.
        maps: (instances,) map of each instance.
    """

    labels: torch.Tensor
    scores: torch.Tensor
    maps: torch.Tensor


def cluster(
    embeddings: torch.Tensor,
    sigmas: torch.Tensor,
    seeds: torch.Tensor,
    foreground: float,
    seed_threshold: float,
    min_pixels: int,
    min_unclustered: float,
) -> Clusters:
    """Seed-driven clustering of every map of a batch in lock-step.

    Each step, every map whose best unclustered foreground seed is at least ``seed_threshold``
    takes that pixel's embedding as a centre and its sigma as bandwidth; the foreground pixels with
    phi > 0.5 form the proposal. A proposal with at least ``min_pixels`` new pixels, which are
    more than ``min_unclustered`` of it, becomes an instance of those new pixels. Either way the
    proposal's pixels are clustered. Work per step is over foreground pixels only.

    Args:
        embeddings: (maps, 2, h, w) pixel embeddings.
        sigmas: (maps, s, h, w) raw bandwidths.
        seeds: (maps, h, w) seed probabilities.
        foreground: Seed above which a pixel takes part.
        seed_threshold: Lowest seed that starts an instance.
        min_pixels: Fewest pixels of a kept instance.
        min_unclustered: Least share of a proposal that must be unclustered.

    Returns:
        The instances of every map.
    """
    maps, _, rows, cols = embeddings.shape
    device = embeddings.device
    fg = seeds.flatten(1) > foreground
    where_map, where_pixel = torch.nonzero(fg, as_tuple=True)
    per_map = fg.sum(dim=1)
    width = int(per_map.max()) if maps else 0
    labels = torch.zeros((maps, rows * cols), dtype=torch.long, device=device)
    if width == 0:
        empty = torch.empty(0, device=device)
        return Clusters(labels.view(maps, rows, cols), empty, empty.long())
    # Compact each map's foreground into a row of a (maps, width) table, padded at the end.
    start = torch.cumsum(per_map, 0) - per_map
    slot = torch.arange(len(where_map), device=device) - start[where_map]
    emb = embeddings.new_zeros((maps, 2, width))
    emb[where_map, :, slot] = embeddings.flatten(2)[where_map, :, where_pixel]
    sig = sigmas.new_zeros((maps, sigmas.shape[1], width))
    sig[where_map, :, slot] = sigmas.flatten(2)[where_map, :, where_pixel]
    seed = seeds.new_zeros((maps, width))
    seed[where_map, slot] = seeds.flatten(1)[where_map, where_pixel]
    valid = torch.zeros((maps, width), dtype=torch.bool, device=device)
    valid[where_map, slot] = True
    unclustered = valid.clone()
    owner = torch.zeros((maps, width), dtype=torch.long, device=device)

    scores = [seed.new_zeros(0)]
    owners = [torch.zeros(0, dtype=torch.long, device=device)]
    found = 0
    while True:
        best, at = torch.where(unclustered, seed, -1.0).max(dim=1)
        active = torch.nonzero(best >= seed_threshold).squeeze(1)
        if len(active) == 0:
            break
        at = at[active]
        centre = emb[active, :, at]  # (k, 2)
        bandwidth = torch.exp(10 * sig[active, :, at])  # (k, s)
        phi = torch.exp(-(bandwidth[:, :, None] * (emb[active] - centre[:, :, None]) ** 2).sum(dim=1))
        proposal = (phi > 0.5) & valid[active]
        fresh = proposal & unclustered[active]
        size, new = proposal.sum(dim=1), fresh.sum(dim=1)
        accept = (new >= min_pixels) & (new > min_unclustered * size)
        number = found + torch.cumsum(accept.long(), 0)  # 1-based instance number of each accepted
        taken = fresh & accept[:, None]
        owner[active] = torch.where(taken, number[:, None], owner[active])
        scores.append(best[active][accept])
        owners.append(active[accept])
        found += int(accept.sum())
        unclustered[active] &= ~proposal
        unclustered[active, at] = False  # the seed itself, whatever its phi
    labels[where_map, where_pixel] = owner[where_map, slot]
    return Clusters(labels.view(maps, rows, cols), torch.cat(scores), torch.cat(owners))


class SpatialEmbeddingsSegmenter(TorchSegmenter[SpatialEmbeddingsModel]):
    """Inference with a trained SpatialEmbeddingsModel (the InstanceSegmenter interface)."""

    method = "spatial-embeddings"

    def __init__(self, model: SpatialEmbeddingsModel, device: torch.device | None = None) -> None:
        super().__init__(model, device)
        self.config = model.config

    @torch.inference_mode()
    def outputs(self, chips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embeddings, sigmas and seed probabilities of a batch of chips, at the chips' size."""
        _, _, rows, cols = chips.shape
        multiple = BranchedERFNet.multiple
        padded = F.pad(chips, (0, -cols % multiple, 0, -rows % multiple)).to(self._device)
        with torch.autocast(self._device.type, dtype=torch.bfloat16, enabled=self._device.type == "cuda"):
            offsets, sigmas, seeds = self.model(padded)
        embeddings = self.model.embed(offsets)[..., :rows, :cols]
        return embeddings, sigmas.float()[..., :rows, :cols], torch.sigmoid(seeds.float()[..., :rows, :cols])

    @torch.inference_mode()
    def predict(self, chips: torch.Tensor, pixel_size: float | None = None) -> list[list[Instance]]:
        """Segment the objects of a batch of chips (see models.instances.InstanceSegmenter)."""
        embeddings, sigmas, seeds = self.outputs(chips)
        return self.decode(embeddings, sigmas, seeds, pixel_size)

    def decode(
        self, embeddings: torch.Tensor, sigmas: torch.Tensor, seeds: torch.Tensor, pixel_size: float | None
    ) -> list[list[Instance]]:
        """Cluster the network's outputs into each chip's instances, by descending score."""
        cfg = self.config
        batch, classes = seeds.shape[:2]
        # One map per chip and class: (b, c) -> b * classes + c.
        clusters = cluster(
            embeddings.repeat_interleave(classes, dim=0),
            sigmas.repeat_interleave(classes, dim=0),
            seeds.flatten(0, 1),
            cfg.foreground,
            cfg.seed_threshold,
            cfg.min_pixels(pixel_size),
            cfg.min_unclustered,
        )
        labels = clusters.labels.cpu().numpy()
        scores = {number + 1: score for number, score in enumerate(clusters.scores.cpu().tolist())}
        found: list[list[Instance]] = [[] for _ in range(batch)]
        for m in range(batch * classes):
            chip, label = divmod(m, classes)
            for inst in labels_to_instances(labels[m], scores):
                found[chip].append(Instance(inst.mask, inst.row, inst.col, inst.score, label))
        return [sorted(chip, key=lambda i: -i.score) for chip in found]
