"""Cityscapes: frames read as training tiles, predictions scored by cityscapesScripts' own
instance evaluator, and a spatial-embeddings model trained and scored through the command line.

The frame is ../shared/data/cityscapes_sample (frankfurt_000000_000294, 256 x 128): two cars and
four persons large enough for the official evaluator (100 pixels), which ignores the persons.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from footprints.cli import main
from footprints.models.checkpoint import load_checkpoint
from footprints.models.cityscapes import INSTANCE_CLASSES, find_frames, read_frame, write_predictions
from footprints.models.cityscapes_eval import evaluate_instances
from footprints.models.embeddings import CLASS_STRIDE
from footprints.models.instances import Instance, labels_to_instances


@pytest.fixture(scope="module")
def root(shared_data: Path) -> Path:
    folder = shared_data / "cityscapes_sample"
    if not folder.is_dir():
        pytest.skip(f"the Cityscapes sample frame is not at {folder}")
    return folder


def truth_as_predictions(ids: np.ndarray) -> list[Instance]:
    """Every ground-truth instance of a read frame, as a confident prediction of its class."""
    found = []
    for inst in labels_to_instances(ids):
        rows, cols = np.nonzero(inst.mask)
        value = ids[inst.row + rows[0], inst.col + cols[0]]
        found.append(Instance(inst.mask, inst.row, inst.col, 1.0, int(value // CLASS_STRIDE)))
    return found


def test_frames_are_read_with_their_classes_instances(root: Path) -> None:
    (frame,) = find_frames(root, "val")
    tile = read_frame(frame, ["car", "person"])
    assert tile.image.shape == (3, 128, 256)
    assert tile.image.min() >= 0
    assert tile.image.max() <= 1
    ids = np.unique(tile.ids[tile.ids > 0])
    cars, persons = ids[ids < CLASS_STRIDE], ids[ids >= CLASS_STRIDE]
    assert (len(cars), len(persons)) == (3, 4)
    # Only the asked classes: a car model sees no persons.
    assert len(np.unique(read_frame(frame, ["car"]).ids)) == 1 + 3


def test_ground_truth_as_predictions_scores_ap_1_with_the_official_evaluator(
    root: Path, tmp_path: Path
) -> None:
    (frame,) = find_frames(root, "val")
    tile = read_frame(frame, INSTANCE_CLASSES)
    listing = write_predictions(tmp_path, frame, truth_as_predictions(tile.ids), INSTANCE_CLASSES, (128, 256))
    report = evaluate_instances([listing], [frame.instances], tmp_path)
    assert report.classes["car"] == {"ap": 1.0, "ap50": 1.0}
    assert (report.ap, report.ap50) == (1.0, 1.0)
    # Persons here are all under the evaluator's 100 pixels: no ground truth, so no score.
    assert np.isnan(report.classes["person"]["ap"])


def test_no_predictions_score_0(root: Path, tmp_path: Path) -> None:
    (frame,) = find_frames(root, "val")
    listing = write_predictions(tmp_path, frame, [], INSTANCE_CLASSES, (128, 256))
    report = evaluate_instances([listing], [frame.instances], tmp_path, ["car", "person"])
    assert (report.ap, report.ap50) == (0.0, 0.0)
    assert set(report.classes) == {"car", "person"}


def test_a_missing_ground_truth_file_is_named(root: Path, tmp_path: Path) -> None:
    frames = tmp_path / "leftImg8bit" / "val" / "frankfurt"
    frames.mkdir(parents=True)
    (frame,) = find_frames(root, "val")
    (frames / frame.image.name).write_bytes(frame.image.read_bytes())
    with pytest.raises(Exception, match=r"gtFine_instanceIds\.png: missing"):
        find_frames(tmp_path, "val")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "settings"),
    [
        # 400 steps left it at car AP 0 on this machine (2026-12-07); 800 reach AP50 0.5.
        ("spatial-embeddings", ("--steps", "100")),
        # 400 steps leave the semi-convolutional seeds short of 0.9 (AP 0 there); at 0.6 its car
        # AP50 is 0.71.
        ("semi-conv", ("--config", "seed_threshold=0.6")),
    ],
)
def test_a_small_model_trained_on_the_frame_finds_its_cars(
    method: str,
    settings: tuple[str, ...],
    root: Path,
    prefect_api: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "cars.pt"
    common = ["--dataset", "cityscapes", "--root", str(root), "--val-split", "val"]
    code = main(
        [
            "-q",
            "train",
            method,
            *common,
            "--classes",
            "car",
            "--train-split",
            "val",
            "--out",
            str(out),
            # About 2 minutes on 2 CPU cores: a narrow network without dropout, to memorise one frame.
            *("--epochs", "8", "--steps", "50", "--batch-size", "4", "--chip", "128", "--lr", "3e-3"),
            *("--config", "width=8", "--config", "dropout=0", "--config", "min_area_m2=64"),
            *settings,
        ]
    )
    assert code == 0
    record = load_checkpoint(out)
    assert record["metrics"]["metric"] == "AP"
    capsys.readouterr()
    assert main(["-q", "eval", "--model", str(out), *common, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"]["car"]["ap50"] >= 0.5, report
