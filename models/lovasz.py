"""The Lovasz hinge (Berman et al. 2018): a convex surrogate of 1 - IoU that gradient descent can
optimise directly, here for many masks at once (one row per mask, one sort for all rows)."""

from __future__ import annotations

import torch


def lovasz_hinge(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The Lovasz hinge of each row of logits against its binary labels.

    Args:
        logits: (n, pixels) real scores, positive meaning "in the mask".
        labels: (n, pixels) 0/1 targets.

    Returns:
        (n,) the loss of each row; 0 for an empty row.
    """
    if logits.numel() == 0:
        return logits.sum(dim=1)
    labels = labels.to(logits.dtype)
    errors = 1 - logits * (2 * labels - 1)
    errors_sorted, order = torch.sort(errors, dim=1, descending=True)
    truth = torch.gather(labels, 1, order)
    # The gradient of the Lovasz extension of the Jaccard loss at the sorted errors: the change in
    # 1 - IoU as each pixel, in order of decreasing error, is counted as wrong.
    total = truth.sum(dim=1, keepdim=True)
    intersection = total - truth.cumsum(dim=1)
    union = total + (1 - truth).cumsum(dim=1)
    jaccard = 1 - intersection / union
    grad = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)
    return (torch.relu(errors_sorted) * grad).sum(dim=1)
