"""Calibrated building scores: a score of p means about p of such buildings are real."""

from __future__ import annotations

import numpy as np
import pytest

from footprints.models.calibration import Calibration, best_threshold, fit_calibration, isotonic, reliability
from footprints.models.instances import Instance


def test_isotonic_pools_the_scores_that_break_the_order() -> None:
    raw = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    hit = np.array([0, 1, 0, 1, 1, 1])
    knots, values = isotonic(raw, hit)
    # 0.2 (a hit) and 0.3 (a miss) break the order and are pooled: half of them are real.
    np.testing.assert_allclose(values, [0, 0.5, 1])
    np.testing.assert_allclose(knots, [0.1, 0.25, 0.5])


def test_best_threshold_cuts_where_the_f1_is_highest() -> None:
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    hit = np.array([1, 1, 0, 1, 0], bool)
    # Keeping the first 2: F1 2*2/(2+4) = 0.667; the first 4: 2*3/(4+4) = 0.75; all: 6/9.
    assert best_threshold(score, hit, truth=4) == (0.6, pytest.approx(0.75))


def test_calibrated_scores_match_the_share_of_real_buildings_on_unseen_ones() -> None:
    rng = np.random.default_rng(0)

    def buildings(n: int) -> tuple[np.ndarray, np.ndarray]:
        raw = rng.uniform(size=n)
        return raw, rng.uniform(size=n) < raw**3  # raw scores far too confident

    raw, hit = buildings(20_000)
    calibration = fit_calibration(raw, hit, truth=int(hit.sum()) + 200)
    unseen, unseen_hit = buildings(20_000)
    raw_table = reliability(unseen, unseen_hit)
    table = reliability(calibration(unseen), unseen_hit)
    assert max(abs(r["mean_score"] - r["true_share"]) for r in raw_table) > 0.2
    assert all(abs(r["mean_score"] - r["true_share"]) < 0.04 for r in table if r["buildings"] >= 500), table


def test_a_calibration_keeps_the_order_and_drops_buildings_under_its_threshold() -> None:
    calibration = Calibration(raw=(0.2, 0.8), calibrated=(0.1, 0.7), threshold=0.3, fitted_on=10)
    mask = np.ones((2, 2), bool)
    instances = [Instance(mask, 0, 0, 0.9), Instance(mask, 5, 5, 0.5), Instance(mask, 9, 9, 0.3)]
    found = calibration.apply(instances)
    assert [(i.row, round(i.score, 3)) for i in found] == [(0, 0.7), (5, 0.4)]
    assert Calibration.from_dict(calibration.to_dict()) == calibration
