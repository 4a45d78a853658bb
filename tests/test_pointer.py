"""Pointer-based segmentation: the COCO panoptic reader and writer scored by panopticapi's own
pq_compute, the training prompts, and sequential full-image segmentation that always ends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from footprints.cli import main
from footprints.models.coco_panoptic import find_images, read_labelled, read_segment_ids, write_prediction
from footprints.models.panoptic_eval import panoptic_quality
from footprints.models.pointer import (
    PointerConfig,
    PointerModel,
    PointerSegmenter,
    erode,
    sample_prompts,
)

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_panoptic_sample"


@pytest.fixture(scope="module")
def sample() -> Path:
    if not (SAMPLE / "panoptic_examples.json").exists():
        pytest.skip(f"the COCO panoptic sample is not at {SAMPLE} (../shared/data beside the project)")
    return SAMPLE


def sample_images(sample: Path) -> list:
    return find_images(
        sample / "input_images", sample / "panoptic_examples", sample / "panoptic_examples.json"
    )


def test_the_reader_keeps_every_segment_but_crowds_and_tiny_ones(sample: Path) -> None:
    for image in sample_images(sample):
        tile = read_labelled(image, min_area=100)
        kept = [s for s in image.segments if not s.iscrowd and s.area >= 100]
        numbers, counts = np.unique(tile.ids[tile.ids > 0], return_counts=True)
        assert list(numbers) == list(range(1, len(kept) + 1))
        # Segment n is the n-th kept segment of the JSON, with exactly its area in the PNG.
        assert [int(c) for c in counts] == [s.area for s in kept]
        assert tile.image.shape == (3, *tile.ids.shape)


def score_segments(sample: Path, tmp_path: Path, keep: int | None) -> tuple[float, float, float, int, int]:
    """Write the ground truth (its first ``keep`` non-crowd segments per image) as predictions."""
    predictions, truth, predicted = [], 0, 0
    for image in sample_images(sample):
        raw = read_segment_ids(image.panoptic)
        segments = [s for s in image.segments if not s.iscrowd]
        chosen = segments[:keep]
        masks = [raw == s.id for s in chosen]
        predictions.append(write_prediction(tmp_path / "predicted", image, masks, category_id=1))
        truth, predicted = truth + len(segments), predicted + len(chosen)
    quality = panoptic_quality(
        sample / "panoptic_examples.json",
        sample / "panoptic_examples",
        predictions,
        tmp_path / "predicted",
    )
    return quality.pq, quality.sq, quality.rq, truth, predicted


def test_the_ground_truth_as_prediction_scores_pq_1(sample: Path, tmp_path: Path) -> None:
    assert score_segments(sample, tmp_path, None)[:3] == (1.0, 1.0, 1.0)


def test_missing_segments_cost_exactly_their_share_of_recognition(sample: Path, tmp_path: Path) -> None:
    pq, sq, rq, truth, predicted = score_segments(sample, tmp_path, 5)
    missed = truth - predicted
    assert sq == 1.0
    assert rq == pytest.approx(predicted / (predicted + 0.5 * missed))
    assert pq == pytest.approx(rq)


def blocks(rows: int = 64, cols: int = 64) -> torch.Tensor:
    """A (1, rows, cols) map of four rectangles of different sizes, numbered 1 to 4."""
    ids = torch.zeros((1, rows, cols), dtype=torch.long)
    ids[0, 4:20, 4:30] = 1
    ids[0, 30:60, 6:16] = 2
    ids[0, 36:44, 30:38] = 3
    ids[0, 10:50, 44:60] = 4
    return ids


def test_prompts_point_inside_the_eroded_target_and_drop_only_other_segments() -> None:
    config = PointerConfig(erosion_px=2, drop_others=0.5, background_pointers=0.0)
    ids = blocks().repeat(64, 1, 1)
    pointers, rois, targets = sample_prompts(ids, config, torch.Generator().manual_seed(0))
    assert (pointers.flatten(1).sum(1) == 1).all()
    inner = erode(targets, 2)
    assert (pointers[:, 0].bool() <= inner).all()  # every pointer is inside its eroded target
    assert (targets <= rois[:, 0].bool()).all()  # the target is never dropped from the ROI
    # Whole segments leave the ROI, never parts of one, and about half of the others do.
    for b in range(len(ids)):
        for k in range(1, 5):
            assert len(torch.unique(rois[b, 0][ids[b] == k])) == 1
    dropped = sum(int((rois[b, 0][ids[b] > 0] == 0).any()) for b in range(len(ids)))
    assert 0.6 * len(ids) < dropped <= len(ids)
    # Larger segments are drawn more often: segment 4 (640 px) beside segment 3 (64 px).
    chosen = [int(ids[b][targets[b]][0]) for b in range(len(ids))]
    assert chosen.count(4) > chosen.count(3)


def test_target_power_0_draws_every_segment_alike_whatever_its_area() -> None:
    config = PointerConfig(background_pointers=0.0, target_power=0.0)
    ids = blocks().repeat(400, 1, 1)  # areas 416, 300, 64 and 640 px
    _, _, targets = sample_prompts(ids, config, torch.Generator().manual_seed(0))
    counts = torch.bincount(torch.stack([ids[b][targets[b]][0] for b in range(len(ids))]), minlength=5)[1:]
    # 100 each expected; drawn by area, segment 3 would get 18 and segment 4 180.
    assert counts.min() > 70
    assert counts.max() < 130


def test_an_image_without_segments_gets_a_background_pointer_and_an_empty_target() -> None:
    ids = torch.zeros((2, 32, 32), dtype=torch.long)
    pointers, rois, targets = sample_prompts(ids, PointerConfig(), torch.Generator().manual_seed(1))
    assert not targets.any()
    assert (rois == 1).all()
    assert (pointers.flatten(1).sum(1) == 1).all()


@pytest.mark.parametrize("context", [False, True])
def test_the_model_starts_as_the_reference_and_takes_any_size(context: bool) -> None:
    model = PointerModel(PointerConfig(width=4, context=context))
    assert (model.pointer.weight == 1).all()
    assert (model.roi.weight == 0).all()
    segmenter = PointerSegmenter(model, torch.device("cpu"))
    pointers = torch.zeros((2, 45, 70))
    pointers[:, 20, 30] = 1
    probabilities = segmenter.probabilities(torch.rand(2, 3, 45, 70), pointers, torch.ones((2, 45, 70)))
    assert probabilities.shape == (2, 45, 70)


class Oracle(PointerSegmenter):
    """The segmenter of a perfect network: the segment of ``ids`` under the pointer, inside the ROI."""

    def __init__(self, ids: torch.Tensor, config: PointerConfig) -> None:
        super().__init__(PointerModel(config), torch.device("cpu"))
        self.ids = ids

    def probabilities(self, images: torch.Tensor, pointers: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(pointers.shape)
        for j in range(len(pointers)):
            under = self.ids[0][pointers[j].bool()]
            if under.item() > 0:
                out[j] = ((self.ids[0] == under) & rois[j].bool()).float()
        return out


def test_sequential_segmentation_finds_every_segment_of_a_perfect_network() -> None:
    ids = blocks()
    config = PointerConfig(min_area_m2=10, pixel_size_m=1.0, max_pointers=200, stop_fraction=0.0)
    found = Oracle(ids, config).segment_everything(torch.zeros(1, 3, 64, 64))[0]
    masks = sorted(int(i.mask.sum()) for i in found.instances)
    assert masks == sorted(int((ids == k).sum()) for k in range(1, 5))
    # Every pointer is a different pixel, and the background is ruled out bit by bit.
    assert len(set(found.pointers)) == len(found.pointers)


def test_sequential_segmentation_ends_when_the_network_misses_everything() -> None:
    config = PointerConfig(width=4, max_pointers=40)
    model = PointerModel(config)
    with torch.no_grad():  # every pixel "outside", whatever the pointer
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([10.0, -10.0]))
    found = PointerSegmenter(model, torch.device("cpu")).segment_everything(torch.rand(2, 3, 64, 64))
    for image in found:
        assert image.instances == []
        assert 0 < len(image.pointers) <= 40
        assert len(set(image.pointers)) == len(image.pointers)


def coco_options(sample: Path) -> list[str]:
    return [
        "--dataset",
        "coco-panoptic",
        "--images",
        str(sample / "input_images"),
        "--annotations",
        str(sample / "panoptic_examples"),
        "--panoptic-json",
        str(sample / "panoptic_examples.json"),
    ]


@pytest.mark.slow
def test_training_on_coco_panoptic_saves_a_model_that_eval_scores_as_the_flow_did(
    sample: Path, prefect_api: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "pointer.pt"
    train = ["-q", "train", "pointer", *coco_options(sample), "--out", str(out)]
    settings = ["--epochs", "1", "--steps", "3", "--batch-size", "2", "--chip", "64", "--config", "width=4"]
    assert main([*train, *settings]) == 0
    flow_report = json.loads(out.with_suffix(".json").read_text())["validation"]
    capsys.readouterr()
    assert main(["-q", "eval", *coco_options(sample), "--model", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == flow_report
    # 50 segments, less 3 crowds and 1 under 100 px; PQ = SQ x RQ.
    assert (report["images"], report["segments"]) == (2, 46)
    assert report["pq"] == pytest.approx(report["sq"] * report["rq"], abs=1e-5)


def test_coco_panoptic_is_for_the_pointer_network_and_needs_its_three_paths(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    options = coco_options(sample)
    assert main(["train", "vec2instance", *options, "--out", str(tmp_path / "x.pt")]) == 2
    assert "only as the pointer network" in capsys.readouterr().err
    assert main(["train", "pointer", *options[:4], "--out", str(tmp_path / "x.pt")]) == 2
    assert "needs --annotations, --panoptic-json too" in capsys.readouterr().err
