"""How the networks run for inference (batch norms folded, channels-last, bfloat16 where the
hardware has it) changes their speed, not what they find."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from footprints.geo.errors import InputError
from footprints.geo.stores import LocalStore
from footprints.geo.synth import write_scene
from footprints.models.backbone import fold_batch_norms
from footprints.models.instances import PRECISION_VARIABLE
from footprints.models.registry import load_segmenter, resolve_checkpoint
from footprints.models.vec2instance import Vec2InstanceConfig, Vec2InstanceModel
from footprints.tasks.evaluation import eval_tiles, evaluate
from footprints.tasks.tiles import TileRef, open_sources


def test_folding_the_batch_norms_keeps_the_network_s_outputs() -> None:
    torch.manual_seed(0)
    model = Vec2InstanceModel(Vec2InstanceConfig(width=8))
    # Statistics and affine parameters far from the identity a new batch norm starts as.
    for norm in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.2, 3)
        nn.init.uniform_(norm.weight, 0.5, 2)
        nn.init.uniform_(norm.bias, -1, 1)
    images = torch.rand(2, 3, 96, 96)
    with torch.inference_mode():
        before = model.eval()(images)
        after = fold_batch_norms(model)(images)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    for b, a in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def scene_tiles(tmp_path_factory: pytest.TempPathFactory) -> list:
    folder = str(tmp_path_factory.mktemp("scene"))
    write_scene(LocalStore(Path(folder)).write_bytes, 2, seed=3, gsd_m=0.3)
    tile_set = open_sources([folder])[folder]
    return eval_tiles([TileRef(folder, t.image_key) for t in tile_set.tiles])


def test_bfloat16_inference_scores_as_float32_does(
    scene_tiles: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = resolve_checkpoint()[0]
    scores = {}
    for precision in ("float32", "bfloat16"):
        monkeypatch.setenv(PRECISION_VARIABLE, precision)
        segmenter = load_segmenter(checkpoint, torch.device("cpu"))
        assert segmenter.dtype == getattr(torch, precision)
        scores[precision] = evaluate(segmenter, scene_tiles).overall
    assert scores["float32"]["f1"] > 0.6, scores
    # A cheaper precision is kept only if it loses at most 0.01 of F1 (it may find a building more).
    assert scores["bfloat16"]["f1"] >= scores["float32"]["f1"] - 0.01, scores


def test_an_unknown_precision_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PRECISION_VARIABLE, "float16")
    with pytest.raises(InputError, match=f"{PRECISION_VARIABLE}.*must be float32 or bfloat16"):
        load_segmenter(resolve_checkpoint()[0], torch.device("cpu"))
