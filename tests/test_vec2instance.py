"""Vec2Instance and the centroid detector: decoding rules, batching, losses and checkpoints."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from footprints.geo.errors import InputError
from footprints.models.centroid import Peaks, centre_targets, find_peaks
from footprints.models.checkpoint import load_checkpoint, save_checkpoint
from footprints.models.registry import load_segmenter
from footprints.models.vec2instance import (
    Vec2InstanceConfig,
    Vec2InstanceModel,
    Vec2InstanceSegmenter,
    coordinate_mlp,
    decode_masks,
)

HIDDEN = 4


def disc_params(radius: float, hidden: int = HIDDEN) -> torch.Tensor:
    """MLP parameters whose mask is roughly the square |u|, |v| < radius, by hand.

    Units 0..3 are the half-planes u < r, -u < r, v < r, -v < r (tanh ~ +1 inside each); the
    output is positive only where all four agree. Layout: [x-weights, y-weights, biases,
    output weights, output bias].
    """
    k = 40.0
    wx = torch.tensor([-k, k, 0, 0])
    wy = torch.tensor([0, 0, -k, k])
    bias = torch.full((hidden,), k * radius)
    w_out = torch.ones(hidden)
    b_out = torch.tensor([-3.0])
    return torch.cat([wx, wy, bias, w_out, b_out])[None]


def test_parameter_layout_draws_the_intended_shape() -> None:
    grid = torch.tensor([[0.0, 0.0], [0.4, 0.0], [0.0, -0.4], [0.6, 0.0], [0.0, 0.7], [-0.9, -0.9]])
    inside = coordinate_mlp(disc_params(0.5), grid, HIDDEN)[0] > 0
    assert inside.tolist() == [True, True, True, False, False, False]


def config(**changes: float) -> Vec2InstanceConfig:
    return Vec2InstanceConfig(hidden=HIDDEN, min_pixels=4, **changes)


def peaks(
    centres: list[tuple[float, float]], sizes: list[float], scores: list[float], batch: list[int]
) -> Peaks:
    return Peaks(
        torch.tensor(batch),
        torch.tensor(centres, dtype=torch.float32),
        torch.tensor(sizes),
        torch.tensor(scores),
    )


@pytest.mark.parametrize("size_px", [13, 64, 200])
def test_masks_are_drawn_at_full_resolution_whatever_the_size(size_px: int) -> None:
    cfg = config(margin=1.25)
    side = torch.tensor([size_px * cfg.margin])
    found = decode_masks(
        disc_params(1 / cfg.margin), peaks([(150.5, 160.5)], [size_px], [0.9], [0]), side, (320, 320), 1, cfg
    )[0]
    assert len(found) == 1
    mask = found[0].mask
    rows, cols = np.nonzero(mask)
    # A square building of size_px drawn around its centre, to within a pixel at each edge.
    assert abs((rows.max() - rows.min() + 1) - size_px) <= 2
    assert abs((cols.max() - cols.min() + 1) - size_px) <= 2
    assert abs(found[0].row + rows.mean() - 160) <= 1
    assert abs(found[0].col + cols.mean() - 150) <= 1


def test_overlapping_instances_keep_the_higher_score() -> None:
    cfg = config()
    params = disc_params(0.6).repeat(3, 1)
    # Two detections of one building (the second slightly shifted) and one separate building.
    found = decode_masks(
        params,
        peaks([(50, 50), (52, 51), (120, 50)], [30, 30, 30], [0.6, 0.9, 0.7], [0, 0, 0]),
        torch.tensor([40.0, 40.0, 40.0]),
        (160, 160),
        1,
        cfg,
    )[0]
    assert [round(i.score, 2) for i in found] == [0.9, 0.7]
    # What survives never overlaps.
    canvas = np.zeros((160, 160), int)
    for instance in found:
        h, w = instance.mask.shape
        canvas[instance.row : instance.row + h, instance.col : instance.col + w] += instance.mask
    assert canvas.max() == 1


def test_peaks_are_local_maxima_at_sub_pixel_positions() -> None:
    stride = 2
    heat = torch.full((2, 1, 32, 32), -8.0)
    heat[0, 0, 10, 12] = 3.0  # a peak
    heat[0, 0, 10, 13] = 2.0  # its shoulder: not a second building
    heat[0, 0, 20, 5] = 1.0
    heat[1, 0, 3, 4] = -2.0  # below the threshold
    offset = torch.zeros((2, 2, 32, 32))
    offset[0, :, 10, 12] = torch.tensor([0.25, -0.5])
    log_size = torch.full((2, 1, 32, 32), math.log(24.0))
    found = find_peaks(heat, log_size, offset, stride, threshold=0.3, min_distance=4)
    assert found.batch.tolist() == [0, 0]
    # Cell centre (12.5, 10.5) plus the offset, times the stride: (25.5, 20.0) in pixels.
    assert found.centre.tolist() == [[25.5, 20.0], [11.0, 41.0]]
    assert found.size[0].item() == pytest.approx(24.0)
    assert found.score[0] > found.score[1]


def test_targets_mark_each_building_once_at_its_box_centre() -> None:
    ids = torch.zeros((1, 64, 64), dtype=torch.long)
    ids[0, 10:20, 30:50] = 3  # a 20 x 10 box centred at (40, 15)
    ids[0, 40:44, 4:8] = 5
    targets = centre_targets(ids, stride=2)
    assert targets.ids.tolist() == [3, 5]
    assert targets.centre.tolist() == [[40.0, 15.0], [6.0, 42.0]]
    assert targets.size.tolist() == [20.0, 4.0]
    assert targets.heat.eq(1).sum().item() == 2


def test_batched_prediction_equals_one_chip_at_a_time() -> None:
    torch.manual_seed(0)
    model = Vec2InstanceModel(Vec2InstanceConfig(width=8, peak_threshold=0.0, max_instances=12))
    segmenter = Vec2InstanceSegmenter(model, torch.device("cpu"))
    chips = torch.rand((3, 3, 96, 128))
    together = segmenter.predict(chips)
    alone = [segmenter.predict(chips[i : i + 1])[0] for i in range(3)]
    assert sum(map(len, together)) > 0
    for a, b in zip(together, alone, strict=True):
        assert [(i.row, i.col, i.mask.shape) for i in a] == [(i.row, i.col, i.mask.shape) for i in b]
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x.mask, y.mask)


def test_loss_scale_does_not_depend_on_batch_size() -> None:
    torch.manual_seed(0)
    model = Vec2InstanceModel(Vec2InstanceConfig(width=8)).eval()
    ids = torch.zeros((1, 64, 64), dtype=torch.long)
    ids[0, 10:30, 10:40] = 1
    ids[0, 40:60, 35:50] = 2
    images = torch.rand((1, 3, 64, 64))
    one = model.losses(images, ids, torch.Generator().manual_seed(0))
    two = model.losses(images.repeat(2, 1, 1, 1), ids.repeat(2, 1, 1), torch.Generator().manual_seed(0))
    for name in ("heat", "size", "offset"):
        assert two[name].item() == pytest.approx(one[name].item(), rel=1e-4), name


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_checkpoints_round_trip_and_refuse_pickled_objects(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Vec2InstanceModel(Vec2InstanceConfig(width=8, peak_threshold=0.0, max_instances=5))
    path = save_checkpoint(
        tmp_path / "m.pt",
        {"method": "vec2instance", "config": model.config.to_dict(), "state_dict": model.state_dict()},
    )
    assert load_checkpoint(path)["code_version"]
    loaded = load_segmenter(path, torch.device("cpu"))
    chips = torch.rand((1, 3, 64, 64))
    expected = Vec2InstanceSegmenter(model, torch.device("cpu")).predict(chips)[0]
    got = loaded.predict(chips)[0]
    assert [(i.row, i.col, i.score) for i in got] == [(i.row, i.col, i.score) for i in expected]

    class Payload:
        def __reduce__(self) -> tuple:
            return (print, ("this must never run",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"method": "vec2instance", "config": {}, "state_dict": Payload()}))
    with pytest.raises(InputError, match=r"evil\.pt: not a readable footprints checkpoint"):
        load_segmenter(evil)
    with pytest.raises(InputError, match=r"missing\.pt: no such checkpoint file"):
        load_segmenter(tmp_path / "missing.pt")
