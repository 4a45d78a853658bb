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

from .embeddings import EmbeddingSegmenter, InstanceIndex, coordinate_grid, gaussian_kernel
from .erfnet import BranchedERFNet


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
        ids: (b, h, w) instance ids, 0 for background (see embeddings.CLASS_STRIDE for the class).
        config: The model's settings (pixel step).
        generator: Draws the instances of the instance term when there are more than
            ``max_instances`` (to bound its memory); the other terms use all of them.
        max_instances: Most instances in the instance term per step.

    Returns:
        "instance" (Lovasz hinge), "smoothness" (variance of sigma inside instances, weighted 10)
        and "seed" (seed regression, foreground weighted 10).
    """
    _, _, rows, cols = embeddings.shape
    device = embeddings.device
    index = InstanceIndex(ids.to(device).flatten(1))
    emb = embeddings.flatten(2)
    grid = coordinate_grid(rows, cols, config.pixel_step, device).flatten(1)
    # An instance's centre is the mean position of its pixels, its bandwidth their mean sigma.
    centre = index.instance_mean(grid[:, index.pixel_p].T)  # (n, 2)
    mean_sigma, smoothness = index.sigma_smoothness(sigmas.flatten(2))
    own = gaussian_kernel(index.pixels(emb)[:, :, None], centre[index.inst], mean_sigma[index.inst])[:, 0]
    seed_loss = index.seed_loss(torch.sigmoid(seed_logits).flatten(2), own)
    instance_loss = index.mask_loss(emb, centre, mean_sigma, gaussian_kernel, generator, max_instances)
    if index.n == 0:  # keep every head in the graph, at zero
        zero = embeddings.sum() * 0 + sigmas.sum() * 0
        instance_loss, smoothness = instance_loss + zero, smoothness + zero
    return {"instance": instance_loss, "smoothness": 10 * smoothness, "seed": seed_loss}


class SpatialEmbeddingsSegmenter(EmbeddingSegmenter[SpatialEmbeddingsModel]):
    """Inference with a trained SpatialEmbeddingsModel: clustering with the Gaussian kernel."""

    method = "spatial-embeddings"
    kernel = staticmethod(gaussian_kernel)

    def __init__(self, model: SpatialEmbeddingsModel, device: torch.device | None = None) -> None:
        super().__init__(model, device)
        self.config = model.config
