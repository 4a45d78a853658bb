"""Centroid-pointer: the detector's peaks point the pointer network at each building, in batched
rounds, the ROI shrinking by the buildings already found."""

from __future__ import annotations

import torch

from footprints.models.centroid import Peaks
from footprints.models.centroid_pointer import (
    CentroidPointerConfig,
    CentroidPointerModel,
    CentroidPointerSegmenter,
)
from footprints.models.crops import sample_crops

SIDE = 64


def two_buildings() -> torch.Tensor:
    """Building 1 (20 x 20 px) and, touching it, building 2 (8 x 20 px)."""
    ids = torch.zeros((SIDE, SIDE), dtype=torch.long)
    ids[10:30, 10:30] = 1
    ids[10:30, 30:38] = 2
    return ids


class Oracle(CentroidPointerSegmenter):
    """Given peaks, and a pointer network that draws, for a pointer inside building k,
    ``answers[k]`` inside the ROI; it counts the crops of every forward pass."""

    def __init__(
        self, peaks: Peaks, ids: torch.Tensor, answers: dict[int, torch.Tensor], rounds: int
    ) -> None:
        config = CentroidPointerConfig(width=4, pointer_width=4, rounds=rounds, min_pixels=4)
        super().__init__(CentroidPointerModel(config), torch.device("cpu"))
        self.peaks, self.ids, self.answers = peaks, ids, answers
        self.passes: list[int] = []

    def detect(self, images: torch.Tensor) -> Peaks:
        return self.peaks

    def pointer_logits(
        self, images: torch.Tensor, taken: torch.Tensor, peaks: Peaks, side: torch.Tensor, at: torch.Tensor
    ) -> torch.Tensor:
        self.passes.append(len(side))
        pointed = (peaks.centre + at * side[:, None] / 2).long()
        drawn = torch.stack(
            [
                self.answers.get(int(self.ids[y, x]), torch.zeros_like(self.ids, dtype=torch.bool))
                & ~taken[int(b)]
                for b, (x, y) in zip(peaks.batch, pointed.tolist(), strict=True)
            ]
        )
        crops = sample_crops(
            drawn.float()[:, None], torch.arange(len(side)), peaks.centre, side, self.config.patch
        )
        return (crops * 2 - 1) * 10


def peaks(centres: list[tuple[float, float]], scores: list[float]) -> Peaks:
    n = len(centres)
    return Peaks(
        torch.zeros(n, dtype=torch.long), torch.tensor(centres), torch.full((n,), 20.0), torch.tensor(scores)
    )


def found_masks(segmenter: CentroidPointerSegmenter) -> list[torch.Tensor]:
    found = segmenter.predict(torch.zeros((1, 3, SIDE, SIDE)))[0]
    return [torch.from_numpy(instance.full_mask((SIDE, SIDE))) for instance in found]


def test_a_second_round_with_the_found_buildings_out_of_the_roi_separates_touching_buildings() -> None:
    ids = two_buildings()
    # Pointed at building 2 with the whole chip as ROI, the network draws both buildings; a
    # second peak inside building 1 is a duplicate of it.
    answers = {1: ids == 1, 2: ids > 0}
    detected = peaks([(20.0, 20.0), (34.0, 20.0), (22.0, 22.0)], [0.9, 0.8, 0.5])
    oracle = Oracle(detected, ids, answers, rounds=2)
    masks = found_masks(oracle)
    assert [m.tolist() for m in masks] == [(ids == 1).tolist(), (ids == 2).tolist()]
    # Round 1 points at all three peaks at once; round 2 only at building 2's, whose drawing
    # lost to building 1's and whose centre no building took (the duplicate's lies in building 1).
    assert oracle.passes == [3, 1]

    one_round = Oracle(detected, ids, answers, rounds=1)
    assert [m.tolist() for m in found_masks(one_round)] == [(ids == 1).tolist()]


def test_a_peak_on_nothing_draws_nothing_and_is_not_tried_again() -> None:
    ids = two_buildings()
    oracle = Oracle(peaks([(20.0, 20.0), (50.0, 50.0)], [0.9, 0.7]), ids, {1: ids == 1}, rounds=3)
    assert [m.tolist() for m in found_masks(oracle)] == [(ids == 1).tolist()]
    assert oracle.passes == [2]


def test_losses_train_the_detector_and_the_pointer_network() -> None:
    model = CentroidPointerModel(CentroidPointerConfig(width=4, pointer_width=4))
    ids = torch.zeros((2, SIDE, SIDE), dtype=torch.long)
    ids[0] = two_buildings()
    losses = model.losses(torch.rand(2, 3, SIDE, SIDE), ids, torch.Generator().manual_seed(0), 8)
    assert set(losses) == {"heat", "size", "offset", "pointer"}
    torch.stack(list(losses.values())).sum().backward()
    for part in (model.centres, model.pointer.pointer, model.pointer.head):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
