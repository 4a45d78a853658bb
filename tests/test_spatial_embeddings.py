"""Spatial embeddings: the vectorised loss against a plain per-instance reference, and the
clustering decoder on embeddings whose answer is known."""

from __future__ import annotations

import pytest
import torch
from embedding_reference import crowded_ids, flat_lovasz_hinge

from footprints.models.checkpoint import checkpoint_bytes
from footprints.models.embeddings import CLASS_STRIDE, cluster, coordinate_grid, gaussian_kernel
from footprints.models.registry import build_model, load_segmenter
from footprints.models.spatial_embeddings import (
    SpatialEmbeddingsConfig,
    SpatialEmbeddingsModel,
    SpatialEmbeddingsSegmenter,
    embedding_losses,
)


def reference_losses(
    emb: torch.Tensor, sig: torch.Tensor, seed_logits: torch.Tensor, ids: torch.Tensor, step: float
) -> dict[str, torch.Tensor]:
    """The three loss terms, one image and one instance at a time."""
    batch, classes, rows, cols = seed_logits.shape
    grid = coordinate_grid(rows, cols, step, emb.device)
    seed = torch.sigmoid(seed_logits)
    instance_total = var_total = seed_total = torch.zeros(())
    for b in range(batch):
        numbers = [int(k) for k in torch.unique(ids[b]) if k > 0]
        instance = var = seeds = torch.zeros(())
        for k in numbers:
            mask = ids[b] == k
            centre = grid[:, mask].mean(dim=1)
            inside = sig[b][:, mask]
            mean = inside.mean(dim=1)
            var = var + ((inside - mean[:, None].detach()) ** 2).mean()
            bandwidth = torch.exp(10 * mean)
            phi = torch.exp(-(bandwidth[:, None, None] * (emb[b] - centre[:, None, None]) ** 2).sum(dim=0))
            instance = instance + flat_lovasz_hinge((2 * phi - 1).flatten(), mask.flatten())
            seeds = seeds + 10 * ((seed[b, k // CLASS_STRIDE][mask] - phi[mask].detach()) ** 2).sum()
        for c in range(classes):
            mine = (ids[b] > 0) & (ids[b] // CLASS_STRIDE == c)
            seeds = seeds + (seed[b, c][~mine] ** 2).sum()
        n = max(len(numbers), 1)
        instance_total = instance_total + instance / n
        var_total = var_total + var / n
        seed_total = seed_total + seeds / (rows * cols)
    return {
        "instance": instance_total / batch,
        "smoothness": 10 * var_total / batch,
        "seed": seed_total / batch,
    }


def test_vectorised_loss_equals_the_per_instance_reference() -> None:
    torch.manual_seed(0)
    config = SpatialEmbeddingsConfig(classes=("car", "person"), pixel_step=1 / 64)
    batch, rows, cols = 3, 40, 48
    ids = crowded_ids(batch, rows, cols, seed=1)
    # Several instances per image, of several sizes and both classes; the last image empty.
    assert [len(torch.unique(i)) - 1 for i in ids] == [6, 6, 0]
    grid = coordinate_grid(rows, cols, config.pixel_step, torch.device("cpu"))
    emb = (grid + 0.3 * torch.randn(batch, 2, rows, cols).tanh()).requires_grad_()
    sig = (0.4 + 0.1 * torch.randn(batch, 2, rows, cols)).requires_grad_()
    seeds = torch.randn(batch, 2, rows, cols).requires_grad_()
    generator = torch.Generator().manual_seed(0)

    got = embedding_losses(emb, sig, seeds, ids, config, generator, max_instances=1000)
    want = reference_losses(emb, sig, seeds, ids, config.pixel_step)
    for name in want:
        assert got[name].item() == pytest.approx(want[name].item(), abs=1e-5), name
    grads = torch.autograd.grad(sum(got.values()), [emb, sig, seeds])
    wanted = torch.autograd.grad(sum(want.values()), [emb, sig, seeds])
    # Sorting ties may order equal errors differently: the subgradients agree to float noise.
    for g, w in zip(grads, wanted, strict=True):
        assert torch.allclose(g, w, atol=1e-4)


def test_gradients_reach_every_output_head() -> None:
    config = SpatialEmbeddingsConfig(width=4)
    model = SpatialEmbeddingsModel(config)
    ids = crowded_ids(2, 64, 64, seed=2) % CLASS_STRIDE  # one class
    losses = model.losses(torch.rand(2, 3, 64, 64), ids, torch.Generator().manual_seed(0), 96)
    sum(losses.values()).backward()
    # ConvTranspose2d weights are (in, out, k, k): output channels on dim 1.
    head = model.network.head(0).weight.grad
    seed_head = model.network.head(1).weight.grad
    assert head is not None
    assert seed_head is not None
    offsets, sigmas = head[:, :2], head[:, 2:]
    for name, grad in (("offset", offsets), ("sigma", sigmas), ("seed", seed_head)):
        assert grad.abs().sum() > 0, name


def test_the_sampled_instance_term_has_the_scale_of_the_full_one() -> None:
    torch.manual_seed(3)
    config = SpatialEmbeddingsConfig(pixel_step=1 / 64)
    ids = crowded_ids(4, 48, 48, seed=4) % CLASS_STRIDE
    grid = coordinate_grid(48, 48, config.pixel_step, torch.device("cpu"))
    emb = grid + 0.05 * torch.randn(4, 2, 48, 48)
    sig = torch.full((4, 2, 48, 48), 0.5)
    seeds = torch.zeros(4, 1, 48, 48)
    full = embedding_losses(emb, sig, seeds, ids, config, torch.Generator().manual_seed(0), 1000)
    draws = [
        embedding_losses(emb, sig, seeds, ids, config, torch.Generator().manual_seed(s), 6)["instance"]
        for s in range(20)
    ]
    assert float(torch.stack(draws).mean()) == pytest.approx(float(full["instance"]), rel=0.1)


def blob_outputs(
    boxes: list[tuple[int, int, int, int]], rows: int, cols: int, step: float, sigma: float = 0.6
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Outputs of a perfect network: every pixel of a box embeds at the box's centre, seed 1."""
    grid = coordinate_grid(rows, cols, step, torch.device("cpu"))
    emb = grid.clone()
    seeds = torch.zeros(1, rows, cols)
    for r0, c0, r1, c1 in boxes:
        centre = grid[:, r0:r1, c0:c1].mean(dim=(1, 2))
        emb[:, r0:r1, c0:c1] = centre[:, None, None]
        seeds[0, r0:r1, c0:c1] = 0.95
    return emb[None], torch.full((1, 2, rows, cols), sigma), seeds


def test_clustering_recovers_every_instance_without_a_cap() -> None:
    # 400 separate 3 x 3 buildings in one chip (the reference stops at 255).
    boxes = [(4 * r, 4 * c, 4 * r + 3, 4 * c + 3) for r in range(20) for c in range(20)]
    emb, sig, seeds = blob_outputs(boxes, 80, 80, step=1 / 64)
    found = cluster(emb, sig, seeds, gaussian_kernel, 0.5, 0.9, 1, 0.5)
    labels = found.labels[0]
    assert len(found.scores) == 400
    for r0, c0, r1, c1 in boxes:
        region = labels[r0:r1, c0:c1]
        assert (region == region[0, 0]).all()
        assert region[0, 0] > 0
    assert len(torch.unique(labels[labels > 0])) == 400
    assert (labels > 0).sum() == 400 * 9


def test_decoding_is_metric_and_batched_like_one_chip_at_a_time() -> None:
    config = SpatialEmbeddingsConfig(width=4, pixel_step=1 / 64, min_area_m2=8.0)
    segmenter = SpatialEmbeddingsSegmenter(SpatialEmbeddingsModel(config), torch.device("cpu"))
    # Buildings of 100 and 49 pixels: 9 and 4.4 m^2 at 0.3 m; 4 and 2 m^2 at 0.2 m.
    chips = [
        blob_outputs([(5, 5, 15, 15), (30, 30, 37, 37)], 48, 48, 1 / 64),
        blob_outputs([(20, 4, 30, 14)], 48, 48, 1 / 64),
    ]
    emb, sig, seeds = (torch.cat(parts) for parts in zip(*chips, strict=True))
    seeds = seeds[:, None]  # one class
    at_03 = segmenter.decode(emb, sig, seeds, 0.3)
    assert [[int(i.mask.sum()) for i in chip] for chip in at_03] == [[100], [100]]
    assert (at_03[0][0].row, at_03[0][0].col, at_03[0][0].score) == (5, 5, pytest.approx(0.95))
    assert segmenter.decode(emb, sig, seeds, 0.2) == [[], []]
    alone = [
        segmenter.decode(e[None], s[None], d[None], 0.3)[0] for e, s, d in zip(emb, sig, seeds, strict=True)
    ]
    for batched, single in zip(at_03, alone, strict=True):
        assert [(i.row, i.col, i.score) for i in batched] == [(i.row, i.col, i.score) for i in single]
        assert all((a.mask == b.mask).all() for a, b in zip(batched, single, strict=True))


def test_checkpoints_of_the_method_load_and_predict_on_any_chip_size() -> None:
    config = {"width": 4, "classes": ["car", "person"]}
    model = build_model("spatial-embeddings", config)
    content = checkpoint_bytes(
        {"method": "spatial-embeddings", "config": model.config.to_dict(), "state_dict": model.state_dict()}
    )
    segmenter = load_segmenter(content, torch.device("cpu"))
    assert isinstance(segmenter, SpatialEmbeddingsSegmenter)
    assert segmenter.config.classes == ("car", "person")
    embeddings, sigmas, seeds = segmenter.outputs(torch.rand(2, 3, 37, 50))
    assert embeddings.shape == (2, 2, 37, 50)
    assert seeds.shape == (2, 2, 37, 50)
    assert sigmas.shape[1] == 2
    # An untrained model: offsets 0, so every pixel embeds at its own position.
    grid = coordinate_grid(37, 50, model.config.pixel_step, torch.device("cpu"))
    assert torch.allclose(embeddings, grid.expand_as(embeddings))
