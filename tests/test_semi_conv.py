"""Semi-convolutional embeddings: the vectorised loss against a plain per-instance reference, and
the paper's point, trained here: position tells apart two objects that look the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from embedding_reference import crowded_ids, flat_lovasz_hinge

from footprints.models.embeddings import CLASS_STRIDE, laplacian_kernel
from footprints.models.semi_conv import SemiConvConfig, SemiConvModel, SemiConvSegmenter, semi_conv_losses
from footprints.models.training import OPTIMISERS


def reference_losses(
    emb: torch.Tensor, sig: torch.Tensor, seed_logits: torch.Tensor, ids: torch.Tensor, margin: float
) -> dict[str, torch.Tensor]:
    """The loss terms, one image, one instance and one pair at a time."""
    batch, classes, rows, cols = seed_logits.shape
    seed = torch.sigmoid(seed_logits)
    totals = {name: torch.zeros(()) for name in ("pull", "push", "mask", "smoothness", "seed")}
    for b in range(batch):
        numbers = [int(k) for k in torch.unique(ids[b]) if k > 0]
        terms = {name: torch.zeros(()) for name in totals}
        means = []
        for k in numbers:
            mask = ids[b] == k
            inside = emb[b][:, mask]  # (d, pixels)
            mean = inside.mean(dim=1)
            means.append(mean)
            terms["pull"] = terms["pull"] + (inside - mean[:, None]).norm(dim=0).mean()
            scale = sig[b][:, mask].mean(dim=1)
            terms["smoothness"] = terms["smoothness"] + ((sig[b][:, mask] - scale.detach()) ** 2).mean()
            phi = torch.exp(-(emb[b] - mean[:, None, None]).norm(dim=0) / torch.exp(scale[0]))
            terms["mask"] = terms["mask"] + flat_lovasz_hinge((2 * phi - 1).flatten(), mask.flatten())
            own = seed[b, k // CLASS_STRIDE][mask]
            terms["seed"] = terms["seed"] + 10 * ((own - phi[mask].detach()) ** 2).sum()
        for c in range(classes):
            mine = (ids[b] > 0) & (ids[b] // CLASS_STRIDE == c)
            terms["seed"] = terms["seed"] + (seed[b, c][~mine] ** 2).sum()
        pairs = [(i, j) for i in range(len(means)) for j in range(len(means)) if i != j]
        for i, j in pairs:
            terms["push"] = terms["push"] + torch.relu(1 + margin - (means[i] - means[j]).norm()) ** 2
        n = max(len(numbers), 1)
        totals["pull"] = totals["pull"] + terms["pull"] / n
        totals["mask"] = totals["mask"] + terms["mask"] / n
        totals["smoothness"] = totals["smoothness"] + terms["smoothness"] / n
        totals["push"] = totals["push"] + terms["push"] / max(len(pairs), 1)
        totals["seed"] = totals["seed"] + terms["seed"] / (rows * cols)
    out = {name: value / batch for name, value in totals.items()}
    out["smoothness"] = 10 * out["smoothness"]
    return out


def test_vectorised_loss_equals_the_per_instance_reference() -> None:
    torch.manual_seed(0)
    batch, dims, rows, cols = 3, 5, 40, 48
    ids = crowded_ids(batch, rows, cols, seed=1)
    assert [len(torch.unique(i)) - 1 for i in ids] == [6, 6, 0]
    emb = torch.randn(batch, dims, rows, cols).requires_grad_()
    sig = (0.2 * torch.randn(batch, 1, rows, cols)).requires_grad_()
    seeds = torch.randn(batch, 2, rows, cols).requires_grad_()
    generator = torch.Generator().manual_seed(0)

    got = semi_conv_losses(emb, sig, seeds, ids, 0.5, generator, max_instances=1000)
    want = reference_losses(emb, sig, seeds, ids, 0.5)
    assert set(got) == set(want)
    for name in want:
        assert got[name].item() == pytest.approx(want[name].item(), abs=1e-5), name
    assert want["push"] > 0  # some means start closer than the margin
    grads = torch.autograd.grad(sum(got.values()), [emb, sig, seeds])
    wanted = torch.autograd.grad(sum(want.values()), [emb, sig, seeds])
    for g, w in zip(grads, wanted, strict=True):
        assert torch.allclose(g, w, atol=1e-5)


def test_the_laplacian_kernel_is_one_half_at_scale_ln_2() -> None:
    centre = torch.zeros(1, 3)
    # Four points (columns) in three dimensions: the centre, at distance 0.5, 0 again, and 2.
    at = torch.tensor([[[0.0, 0.3, 0.0, 2.0], [0.0, 0.4, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    phi = laplacian_kernel(at, centre, torch.log(torch.tensor([[0.5 / np.log(2)]])))
    assert phi[0, 0] == pytest.approx(1.0)
    assert phi[0, 1] == pytest.approx(0.5, abs=1e-6)  # ||(0.3, 0.4, 0)|| = 0.5
    assert phi[0, 2] == pytest.approx(1.0)
    assert phi[0, 3] == pytest.approx(0.5**4, abs=1e-6)


def twin_scene(size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """Identical bright squares in a regular grid on a dark ground: every object looks the same,
    and a crop taken at a multiple of the grid's period looks the same wherever it is taken."""
    period, side = 24, 12
    image = torch.full((3, size, size), -1.0)
    ids = torch.zeros((size, size), dtype=torch.long)
    number = 0
    for r in range(6, size, period):
        for c in range(6, size, period):
            number += 1
            image[:, r : r + side, c : c + side] = 1.0
            ids[r : r + side, c : c + side] = number
    return image, ids


def train_briefly(positional: bool, steps: int = 150) -> SemiConvSegmenter:
    """A tiny model of either embedding trained on crops of the twin scene."""
    torch.manual_seed(0)
    config = SemiConvConfig(width=4, dropout=0.0, embedding_dim=2, positional=positional, min_area_m2=40)
    model = SemiConvModel(config)
    image, ids = twin_scene()
    optimiser = OPTIMISERS["adam"](model.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        # Crops shifted by whole periods, so that no crop can tell one square from another by
        # where the image's border is.
        offsets = rng.integers(0, 2, size=(4, 2)) * 24
        crops = torch.stack([image[:, r : r + 72, c : c + 72] for r, c in offsets])
        crop_ids = torch.stack([ids[r : r + 72, c : c + 72] for r, c in offsets])
        losses = model.losses(crops, crop_ids, generator)
        optimiser.zero_grad()
        torch.stack(list(losses.values())).sum().backward()
        optimiser.step()
    return SemiConvSegmenter(model.eval(), torch.device("cpu"))


def test_position_tells_apart_objects_that_look_the_same() -> None:
    image, ids = twin_scene()
    crop, truth = image[:, :72, :72], ids[:72, :72]
    objects = len(torch.unique(truth)) - 1
    found = {
        positional: train_briefly(positional).predict(crop[None], 1.0)[0] for positional in (True, False)
    }
    # The semi-convolutional embedding finds every square, whole; the convolutional one, which
    # must embed them all alike, merges them (into one blob when trained as here).
    assert sorted(int(i.mask.sum()) for i in found[True]) == [12 * 12] * objects
    assert len(found[False]) <= objects // 3, [int(i.mask.sum()) for i in found[False]]
