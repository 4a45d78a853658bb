"""Semi-convolutional embeddings (Novotny et al. 2018).

A convolutional network is translation invariant: two objects that look alike get alike
embeddings, wherever they are, so no clustering of its output can tell them apart. A
semi-convolutional operator mixes in the pixel's position: Psi_u = Phi_u + [u; 0], where the
first two channels of the network's output Phi are offsets added to the pixel's coordinates u
(on the fixed-step grid of the embedding methods, so a chip of any size embeds alike) and the
other channels are free. An object's pixels should then land close together, and far from other
objects' (the paper's margin condition: closer than 1 - M inside an object, farther than 1 + M
across two).

Losses, for all instances of a batch at once (models.embeddings.InstanceIndex):
- pull: the mean distance of an instance's embeddings to their mean;
- push: a squared hinge between the means of every two instances of an image, closer than 1 + M;
- mask (the paper's robust variant): membership exp(-||Psi_u - c|| / sigma), a Laplacian kernel
  round the instance's mean c with a learned scale sigma, scored by the Lovasz hinge;
- smoothness of sigma inside each instance, and the seed maps regressed to each pixel's own
  membership, as in spatial embeddings, since inference grows each object round a seed pixel
  with that pixel's embedding and sigma.

``positional=False`` drops the [u; 0] term: the purely convolutional embedding of the same network,
which the tests train beside the real one to show what position adds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .embeddings import EmbeddingSegmenter, InstanceIndex, coordinate_grid, laplacian_kernel
from .erfnet import BranchedERFNet


@dataclass(frozen=True)
class SemiConvConfig:
    """Architecture, embedding and clustering settings, stored in every checkpoint.

    Attributes:
        width: Channels of the network's first stage.
        dropout: Dropout of the encoder's dilated blocks.
        classes: Names of the classes, one seed map each.
        embedding_dim: Channels of the embedding: 2 positional, the rest free (at least 2).
        positional: Add the pixel's coordinates to the first two channels (False: a plain
            convolutional embedding, for comparison).
        pixel_step: Embedding units per pixel of the coordinates (1/32: a 32 px building spans one
            unit, the scale of the margin).
        margin: M of the margin condition; instance means are pushed at least 1 + M apart.
        foreground: Seed value above which a pixel is an object's.
        seed_threshold: Lowest seed that starts a new instance.
        min_area_m2: Smallest instance kept, in m^2 at the pixel size the caller gives.
        pixel_size_m: Pixel size assumed when the caller gives none (1 for imagery without a
            ground size, such as Cityscapes: ``min_area_m2`` is then in pixels).
        min_unclustered: Share of an instance's pixels that must be new for it to be kept.
    """

    width: int = 16
    dropout: float = 0.3
    classes: tuple[str, ...] = ("building",)
    embedding_dim: int = 8
    positional: bool = True
    pixel_step: float = 1 / 32
    margin: float = 0.5
    foreground: float = 0.5
    seed_threshold: float = 0.9
    min_area_m2: float = 4.0
    pixel_size_m: float = 0.3
    min_unclustered: float = 0.5

    def __post_init__(self) -> None:
        # Checkpoints store plain values: the tuple comes back as a list.
        object.__setattr__(self, "classes", tuple(self.classes))
        if self.embedding_dim < 2:
            raise ValueError(f"embedding_dim must be at least 2, not {self.embedding_dim}")
        if not self.classes:
            raise ValueError("at least one class is needed")

    def min_pixels(self, pixel_size_m: float | None) -> int:
        """The smallest instance in pixels, at ``pixel_size_m`` (None: ``self.pixel_size_m``)."""
        size = pixel_size_m or self.pixel_size_m
        return max(1, math.ceil(self.min_area_m2 / (size * size)))

    def to_dict(self) -> dict[str, object]:
        """Plain values, for checkpoints."""
        return asdict(self)


class SemiConvModel(nn.Module):
    """A branched ERFNet: embedding and scale from one decoder, seed maps from the other."""

    def __init__(self, config: SemiConvConfig = SemiConvConfig()) -> None:
        super().__init__()
        self.config = config
        self.network = BranchedERFNet(
            (config.embedding_dim + 1, len(config.classes)), config.width, config.dropout
        )
        # Phi starts at zero, so every pixel first embeds at its own position, and the scale at 1.
        head = self.network.head(0)
        assert head.bias is not None
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(b, 3, h, w) -> Phi (b, d, h, w), raw log-scale (b, 1, h, w), seed logits (b, classes, h, w)."""
        out = self.network(images)
        dims = self.config.embedding_dim
        return out[:, :dims], out[:, dims : dims + 1], out[:, dims + 1 :]

    def embed(self, phi: torch.Tensor) -> torch.Tensor:
        """Psi = Phi + [u; 0] of (b, d, h, w) network outputs (Phi itself when not positional)."""
        if not self.config.positional:
            return phi.float()
        _, _, rows, cols = phi.shape
        grid = coordinate_grid(rows, cols, self.config.pixel_step, phi.device)
        return phi.float() + F.pad(grid, (0, 0, 0, 0, 0, phi.shape[1] - 2))

    def losses(
        self, images: torch.Tensor, ids: torch.Tensor, generator: torch.Generator, max_instances: int = 96
    ) -> dict[str, torch.Tensor]:
        """Training losses on a batch of images and their instance id maps (see semi_conv_losses)."""
        phi, sigmas, seeds = self(images)
        return semi_conv_losses(
            self.embed(phi), sigmas.float(), seeds.float(), ids, self.config.margin, generator, max_instances
        )


def semi_conv_losses(
    embeddings: torch.Tensor,
    sigmas: torch.Tensor,
    seed_logits: torch.Tensor,
    ids: torch.Tensor,
    margin: float,
    generator: torch.Generator,
    max_instances: int,
) -> dict[str, torch.Tensor]:
    """The loss terms, for every instance of the batch at once.

    Each term is averaged per image over its instances (push: over its pairs of instances; seed:
    over its pixels), then over the images of the batch.

    Args:
        embeddings: (b, d, h, w) embeddings Psi.
        sigmas: (b, 1, h, w) raw log-scales of the kernel.
        seed_logits: (b, classes, h, w) seed map logits.
        ids: (b, h, w) instance ids, 0 for background (see embeddings.CLASS_STRIDE).
        margin: M of the margin condition.
        generator: Draws the instances of the mask term when there are more than ``max_instances``.
        max_instances: Most instances in the mask term per step.

    Returns:
        "pull", "push", "mask" (Lovasz hinge of the Laplacian membership), "smoothness" (variance
        of the log-scale inside instances, weighted 10) and "seed" (foreground weighted 10).
    """
    device = embeddings.device
    index = InstanceIndex(ids.to(device).flatten(1))
    emb = embeddings.flatten(2)
    inside = index.pixels(emb)  # (m, d)
    centre = index.instance_mean(inside)  # (n, d)
    distance = torch.linalg.vector_norm(inside - centre[index.inst], dim=1)
    pull = index.image_mean(index.instance_mean(distance))

    # Every ordered pair of distinct instances of one image, once each way.
    first, second = torch.nonzero(
        (index.image[:, None] == index.image[None, :]) & ~torch.eye(index.n, dtype=torch.bool, device=device),
        as_tuple=True,
    )
    apart = torch.linalg.vector_norm(centre[first] - centre[second], dim=1)
    push = index.image_mean(torch.relu(1 + margin - apart) ** 2, index.image[first])

    scale, smoothness = index.sigma_smoothness(sigmas.flatten(2))
    own = laplacian_kernel(inside[:, :, None], centre[index.inst], scale[index.inst])[:, 0]
    seed = index.seed_loss(torch.sigmoid(seed_logits).flatten(2), own)
    mask = index.mask_loss(emb, centre, scale, laplacian_kernel, generator, max_instances)
    if index.n == 0:  # keep every head in the graph, at zero
        zero = embeddings.sum() * 0 + sigmas.sum() * 0
        pull, push, mask, smoothness = pull + zero, push + zero, mask + zero, smoothness + zero
    return {"pull": pull, "push": push, "mask": mask, "smoothness": 10 * smoothness, "seed": seed}


class SemiConvSegmenter(EmbeddingSegmenter[SemiConvModel]):
    """Inference with a trained SemiConvModel: clustering with the Laplacian kernel."""

    method = "semi-conv"
    kernel = staticmethod(laplacian_kernel)

    def __init__(self, model: SemiConvModel, device: torch.device | None = None) -> None:
        super().__init__(model, device)
        self.config = model.config
