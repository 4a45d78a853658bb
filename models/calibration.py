"""Building scores that mean what they say: the share of buildings of that score that are real.

A network's raw score orders its detections but is no probability: the default model's 0.5 may be
right four times in five or one time in three. `fit_calibration` learns a monotone map from raw
score to the share of true positives (isotonic regression, by pooling adjacent violators) on
tiles that chose nothing else, and the score threshold that gives the best F1 there; a
checkpoint keeps both (``calibration``), and models/deployed.py applies them to every prediction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .instances import Instance


@dataclass(frozen=True)
class Calibration:
    """A monotone map from raw scores to calibrated ones, and the threshold to keep a building.

    Attributes:
        raw: Raw scores, increasing: the knots of the map.
        calibrated: The share of true positives at each knot (non-decreasing); scores between
            knots are interpolated, scores beyond them take the end values.
        threshold: Buildings of a calibrated score under this are dropped.
        fitted_on: How many scored buildings the map was fitted on.
    """

    raw: tuple[float, ...]
    calibrated: tuple[float, ...]
    threshold: float
    fitted_on: int

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated scores of raw ones."""
        return np.interp(raw, self.raw, self.calibrated)

    def apply(self, instances: list[Instance]) -> list[Instance]:
        """Instances (in descending raw score) with calibrated scores, those under the threshold
        dropped; their order is kept, as calibrated scores may tie where raw ones did not."""
        scores = self(np.array([i.score for i in instances], dtype=float))
        return [
            Instance(i.mask, i.row, i.col, float(s), i.label)
            for i, s in zip(instances, scores, strict=True)
            if s >= self.threshold
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as a checkpoint keeps them."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Calibration:
        """The calibration a checkpoint keeps."""
        raw, calibrated = tuple(values["raw"]), tuple(values["calibrated"])
        return cls(raw, calibrated, values["threshold"], values["fitted_on"])


def isotonic(raw: np.ndarray, hit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing step function of ``raw`` closest to ``hit`` in squared error.

    Returns:
        (knots, values): for each block of pooled scores, its mean raw score and its share of
        hits, raw scores increasing.
    """
    order = np.argsort(raw, kind="stable")
    x, y = raw[order].astype(float), hit[order].astype(float)
    # Blocks as (sum of x, sum of y, count); a block whose mean falls below its predecessor's is
    # merged into it, until the means increase.
    blocks: list[list[float]] = []
    for xi, yi in zip(x, y, strict=True):
        blocks.append([xi, yi, 1.0])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            sx, sy, n = blocks.pop()
            blocks[-1][0] += sx
            blocks[-1][1] += sy
            blocks[-1][2] += n
    sums = np.array(blocks)
    return sums[:, 0] / sums[:, 2], sums[:, 1] / sums[:, 2]


def best_threshold(score: np.ndarray, hit: np.ndarray, truth: int) -> tuple[float, float]:
    """The score threshold with the best F1 when every building under it is dropped.

    Matching takes buildings best first, so dropping the weakest leaves the others' matches as
    they were: the F1 of every threshold follows from one sort.

    Args:
        score: The buildings' scores.
        hit: Whether each is a true positive.
        truth: The number of true buildings.

    Returns:
        (threshold, F1 there); (0, 0) without buildings.
    """
    if score.size == 0:
        return 0.0, 0.0
    order = np.argsort(-score, kind="stable")
    s, tp = score[order], np.cumsum(hit[order])
    kept = np.arange(1, s.size + 1)
    f1 = 2 * tp / (kept + truth)
    # Only where the next score is lower can the list be cut.
    cut = np.flatnonzero(np.append(s[1:] < s[:-1], True))
    best = cut[np.argmax(f1[cut])]
    return float(s[best]), float(f1[best])


def fit_calibration(raw: np.ndarray, hit: np.ndarray, truth: int) -> Calibration:
    """Calibrate scores on buildings found on tiles with truth.

    Args:
        raw: The raw scores of every building found.
        hit: Whether each matched a true building (see geo.scoring: ScoreReport.matched).
        truth: The number of true buildings on those tiles.
    """
    if raw.size == 0:  # nothing found to learn from: scores kept as they are
        return Calibration((0.0, 1.0), (0.0, 1.0), 0.0, 0)
    knots, values = isotonic(raw, hit)
    calibration = Calibration(tuple(knots.tolist()), tuple(values.tolist()), 0.0, int(raw.size))
    threshold, _ = best_threshold(calibration(raw), hit, truth)
    return Calibration(calibration.raw, calibration.calibrated, threshold, calibration.fitted_on)


def reliability(score: np.ndarray, hit: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """The reliability table of calibrated scores: per score bin of equal width, the buildings
    in it, their mean score and their share of true positives (empty bins left out)."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(score, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "buildings": int(inside.sum()),
                    "mean_score": float(score[inside].mean()),
                    "true_share": float(hit[inside].mean()),
                }
            )
    return rows
