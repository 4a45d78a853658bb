"""What the embedding methods share: the coordinate grid, the per-instance bookkeeping of their
losses, their kernels, and seed-driven clustering.

Spatial embeddings and semi-convolutional embeddings both map every pixel to a point whose first
two coordinates are the pixel's position plus a learned offset, and find objects by growing each
one round a seed pixel with a kernel: a Gaussian with a learned per-axis bandwidth for the first,
a Laplacian with a learned scale for the second.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeVar, cast

import torch
from torch import nn
from torch.nn import functional as F

from .erfnet import BranchedERFNet
from .instances import Instance, TorchSegmenter, labels_to_instances
from .lovasz import lovasz_hinge

# Training instance ids carry their class: id = class index * CLASS_STRIDE + instance number.
CLASS_STRIDE = 1 << 16

# (embeddings (k, d, pixels), centres (k, d), raw bandwidths (k, s)) -> membership (k, pixels) in [0, 1]
Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def coordinate_grid(rows: int, cols: int, step: float, device: torch.device) -> torch.Tensor:
    """(2, rows, cols) pixel positions (x, then y) in embedding units."""
    y = torch.arange(rows, device=device, dtype=torch.float32) * step
    x = torch.arange(cols, device=device, dtype=torch.float32) * step
    return torch.stack([x[None, :].expand(rows, -1), y[:, None].expand(-1, cols)])


def gaussian_kernel(embeddings: torch.Tensor, centres: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """exp(-sum_d s_d (e_d - c_d)^2) with bandwidth s = exp(10 sigma), per axis or shared."""
    bandwidth = torch.exp(10 * sigmas)[:, :, None]
    return torch.exp(-(bandwidth * (embeddings - centres[:, :, None]) ** 2).sum(dim=1))


def laplacian_kernel(embeddings: torch.Tensor, centres: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """exp(-||e - c|| / scale) with scale = exp(sigma) (one sigma channel)."""
    distance = torch.linalg.vector_norm(embeddings - centres[:, :, None], dim=1)
    return torch.exp(-distance / torch.exp(sigmas[:, :1]))


class InstanceIndex:
    """The instances of a batch of id maps, for losses computed for all of them at once.

    Attributes:
        pixel_b, pixel_p: Image and flat pixel index of every instance pixel (m,).
        inst: Instance number (0 to n - 1) of every instance pixel (m,).
        n: Number of instances in the batch.
        image: Image of every instance (n,).
        label: Class of every instance (n,).
        counts: Pixels of every instance (n,).
    """

    def __init__(self, ids: torch.Tensor) -> None:
        """``ids``: (b, pixels) instance ids, 0 for background (see CLASS_STRIDE for the class)."""
        self.batch = ids.shape[0]
        ids = ids.long()
        span = ids.max() + 1
        self.pixel_b, self.pixel_p = torch.nonzero(ids > 0, as_tuple=True)
        keys, self.inst = torch.unique(
            self.pixel_b * span + ids[self.pixel_b, self.pixel_p], return_inverse=True
        )
        self.n = len(keys)
        self.image = keys // span
        self.label = (keys % span) // CLASS_STRIDE
        self.counts = torch.bincount(self.inst, minlength=self.n).float()

    def instance_mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean over each instance's pixels of per-pixel (m, ...) values -> (n, ...)."""
        total = values.new_zeros((self.n, *values.shape[1:])).index_add_(0, self.inst, values)
        return total / self.counts.view(-1, *([1] * (values.dim() - 1)))

    def image_mean(self, values: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over the batch of each image's mean of per-instance values (0 for an image without).

        ``image`` gives the image of each value when they are not one per instance.
        """
        image = self.image if image is None else image
        total = values.new_zeros(self.batch).index_add_(0, image, values)
        return (total / torch.bincount(image, minlength=self.batch).clamp(min=1)).mean()

    def pixels(self, maps: torch.Tensor) -> torch.Tensor:
        """The (m, channels) values at every instance pixel of (b, channels, pixels) maps."""
        return maps[self.pixel_b, :, self.pixel_p]

    def sigma_smoothness(self, sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each instance's mean raw bandwidth (n, s), and the variance of it inside instances,
        averaged per image (the bandwidth at any one pixel, a seed, should be the instance's)."""
        inside = self.pixels(sigmas)
        mean = self.instance_mean(inside)
        variance = self.instance_mean(((inside - mean[self.inst].detach()) ** 2).mean(dim=1))
        return mean, self.image_mean(variance)

    def seed_loss(self, seeds: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """Seed regression: every instance pixel to its own (detached) membership ``phi`` (m,) in
        its class's map, weighted 10; every other pixel of every map to 0."""
        target = torch.zeros_like(seeds)
        weight = torch.ones_like(seeds)
        at = (self.pixel_b, self.label[self.inst], self.pixel_p)
        target[at] = phi.detach()
        weight[at] = 10.0
        return ((weight * (seeds - target) ** 2).sum(dim=(1, 2)) / seeds.shape[2]).mean()

    def mask_loss(
        self,
        embeddings: torch.Tensor,
        centres: torch.Tensor,
        sigmas: torch.Tensor,
        kernel: Kernel,
        generator: torch.Generator,
        max_instances: int,
    ) -> torch.Tensor:
        """The Lovasz hinge of 2 phi - 1 against each instance's mask, over all of its image's
        pixels, averaged per image; at most ``max_instances`` instances (drawn) bound its memory.

        Args:
            embeddings: (b, d, pixels) pixel embeddings.
            centres: (n, d) each instance's centre.
            sigmas: (n, s) each instance's raw bandwidth.
            kernel: Membership of a pixel in an instance.
            generator: Draws the instances when there are too many.
            max_instances: Most instances per step.
        """
        device = embeddings.device
        if self.n > max_instances:
            pick = torch.randperm(self.n, generator=generator)[:max_instances].to(device).sort().values
        else:
            pick = torch.arange(self.n, device=device)
        row_of = torch.full((self.n,), -1, dtype=torch.long, device=device)
        row_of[pick] = torch.arange(len(pick), device=device)
        phi = kernel(embeddings[self.image[pick]], centres[pick], sigmas[pick])
        labels = torch.zeros_like(phi)
        picked = row_of[self.inst] >= 0
        labels[row_of[self.inst[picked]], self.pixel_p[picked]] = 1.0
        return self.image_mean(lovasz_hinge(2 * phi - 1, labels), self.image[pick])


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
    kernel: Kernel,
    foreground: float,
    seed_threshold: float,
    min_pixels: int,
    min_unclustered: float,
) -> Clusters:
    """Seed-driven clustering of every map of a batch in lock-step.

    Each step, every map whose best unclustered foreground seed is at least ``seed_threshold``
    takes that pixel's embedding as a centre and its sigma as bandwidth; the foreground pixels with
    a membership above 0.5 form the proposal. A proposal with at least ``min_pixels`` new pixels,
    which are more than ``min_unclustered`` of it, becomes an instance of those new pixels. Either
    way the proposal's pixels are clustered. Work per step is over foreground pixels only.

    Args:
        embeddings: (maps, d, h, w) pixel embeddings.
        sigmas: (maps, s, h, w) raw bandwidths.
        seeds: (maps, h, w) seed probabilities.
        kernel: Membership of a pixel in the instance of a seed.
        foreground: Seed above which a pixel takes part.
        seed_threshold: Lowest seed that starts an instance.
        min_pixels: Fewest pixels of a kept instance.
        min_unclustered: Least share of a proposal that must be unclustered.

    Returns:
        The instances of every map.
    """
    maps, dims, rows, cols = embeddings.shape
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
    emb = embeddings.new_zeros((maps, dims, width))
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
        phi = kernel(emb[active], emb[active, :, at], sig[active, :, at])
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
        unclustered[active, at] = False  # the seed itself, whatever its membership
    labels[where_map, where_pixel] = owner[where_map, slot]
    return Clusters(labels.view(maps, rows, cols), torch.cat(scores), torch.cat(owners))


def cluster_instances(
    embeddings: torch.Tensor,
    sigmas: torch.Tensor,
    seeds: torch.Tensor,
    kernel: Kernel,
    foreground: float,
    seed_threshold: float,
    min_pixels: int,
    min_unclustered: float,
) -> list[list[Instance]]:
    """Each chip's instances of every class, by descending score (see ``cluster``).

    Args:
        embeddings: (b, d, h, w) pixel embeddings.
        sigmas: (b, s, h, w) raw bandwidths.
        seeds: (b, classes, h, w) seed probabilities; an instance's label is its map's class.
        kernel, foreground, seed_threshold, min_pixels, min_unclustered: As for ``cluster``.
    """
    batch, classes = seeds.shape[:2]
    # One map per chip and class: (b, c) -> b * classes + c.
    clusters = cluster(
        embeddings.repeat_interleave(classes, dim=0),
        sigmas.repeat_interleave(classes, dim=0),
        seeds.flatten(0, 1),
        kernel,
        foreground,
        seed_threshold,
        min_pixels,
        min_unclustered,
    )
    labels = clusters.labels.cpu().numpy()
    scores: Mapping[int, float] = {
        number + 1: score for number, score in enumerate(clusters.scores.cpu().tolist())
    }
    found: list[list[Instance]] = [[] for _ in range(batch)]
    for m in range(batch * classes):
        chip, label = divmod(m, classes)
        for inst in labels_to_instances(labels[m], scores):
            found[chip].append(Instance(inst.mask, inst.row, inst.col, inst.score, label))
    return [sorted(chip, key=lambda i: -i.score) for chip in found]


class ClusteringSettings(Protocol):
    """The clustering settings an embedding method's config holds (frozen: read-only here)."""

    @property
    def foreground(self) -> float: ...

    @property
    def seed_threshold(self) -> float: ...

    @property
    def min_unclustered(self) -> float: ...

    def min_pixels(self, pixel_size_m: float | None) -> int: ...


class EmbeddingModel(Protocol):
    """An embedding method's model: raw embedding, bandwidth and seed logits from a branched ERFNet."""

    @property
    def config(self) -> ClusteringSettings: ...

    def __call__(self, images: torch.Tensor, /) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def embed(self, raw: torch.Tensor, /) -> torch.Tensor: ...


E = TypeVar("E", bound=nn.Module)  # and an EmbeddingModel


class EmbeddingSegmenter(TorchSegmenter[E]):
    """Inference for the embedding methods: the network at the chips' size, then seed-driven
    clustering with the method's ``kernel`` (the InstanceSegmenter interface)."""

    kernel: ClassVar[Kernel]

    @property
    def network(self) -> EmbeddingModel:
        """The model, as the embedding methods' models all are."""
        return cast(EmbeddingModel, self.model)

    @torch.inference_mode()
    def outputs(self, chips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embeddings, raw bandwidths and seed probabilities of a batch of chips, at the chips' size."""
        _, _, rows, cols = chips.shape
        multiple = BranchedERFNet.multiple
        padded = F.pad(chips, (0, -cols % multiple, 0, -rows % multiple)).to(self._device)
        with self.autocast():
            raw, sigmas, seeds = self.network(padded)
        embeddings = self.network.embed(raw)[..., :rows, :cols]
        return embeddings, sigmas.float()[..., :rows, :cols], torch.sigmoid(seeds.float()[..., :rows, :cols])

    @torch.inference_mode()
    def predict(self, chips: torch.Tensor, pixel_size: float | None = None) -> list[list[Instance]]:
        """Segment the objects of a batch of chips (see models.instances.InstanceSegmenter)."""
        return self.decode(*self.outputs(chips), pixel_size)

    def decode(
        self, embeddings: torch.Tensor, sigmas: torch.Tensor, seeds: torch.Tensor, pixel_size: float | None
    ) -> list[list[Instance]]:
        """Cluster the network's outputs into each chip's instances, by descending score."""
        cfg = self.network.config
        return cluster_instances(
            embeddings,
            sigmas,
            seeds,
            type(self).kernel,
            cfg.foreground,
            cfg.seed_threshold,
            cfg.min_pixels(pixel_size),
            cfg.min_unclustered,
        )
