"""What the embedding methods' loss tests share: the Lovasz hinge written out for one mask, and
crowded instance maps to compare the vectorised losses against per-instance references on."""

from __future__ import annotations

import numpy as np
import torch

from footprints.models.embeddings import CLASS_STRIDE


def flat_lovasz_hinge(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Berman et al.'s Lovasz hinge of one mask, written out as in the paper."""
    errors = 1 - logits * (2 * labels.float() - 1)
    errors_sorted, order = torch.sort(errors, descending=True)
    gt = labels.float()[order]
    intersection = gt.sum() - gt.cumsum(0)
    union = gt.sum() + (1 - gt).cumsum(0)
    jaccard = 1 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
    return torch.dot(torch.relu(errors_sorted), jaccard)


def crowded_ids(batch: int, rows: int, cols: int, seed: int) -> torch.Tensor:
    """Instance maps with rectangles of many sizes, of two classes, and one empty image."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((batch, rows, cols), np.int64)
    for b in range(batch - 1):
        for k in range(1, 7):
            h, w = rng.integers(2, 16, size=2)
            r, c = rng.integers(0, rows - h), rng.integers(0, cols - w)
            ids[b, r : r + h, c : c + w] = (k % 2) * CLASS_STRIDE + k
    return torch.from_numpy(ids)
