"""Cityscapes instance-level AP by cityscapesScripts' own evaluator, run through an adapter.

The official evaluator (``evalInstanceLevelSemanticLabeling``) predates numpy 2 and keeps its
settings and caches in module globals. The adapter runs it unchanged and leaves site-packages
alone: it gives the module a numpy that still has ``in1d``, a JSON writer that turns numpy
numbers into plain ones and writes under the run's own folder (the evaluator writes
``matches.json`` to the working directory and caches ground truth beside its own source), and a
private copy of its settings. Its thresholds are the official ones: overlaps 0.5 to 0.95, ground
truth instances under 100 pixels ignored.
"""

from __future__ import annotations

import copy
import json
import math
import types
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as official  # noqa: N813

from footprints.geo.errors import InputError


@dataclass(frozen=True)
class CityscapesAP:
    """Official instance-level scores.

    Attributes:
        ap: Mean AP over overlaps 0.5:0.95 and the classes that have ground truth.
        ap50: Mean AP at overlap 0.5.
        classes: Per class, {"ap": ..., "ap50": ...}; NaN for a class without ground truth.
    """

    ap: float
    ap50: float
    classes: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        """Plain values (NaN as None), for JSON."""

        def plain(value: float) -> float | None:
            return None if np.isnan(value) else round(float(value), 6)

        return {
            "ap": plain(self.ap),
            "ap50": plain(self.ap50),
            "classes": {
                name: {k: plain(v) for k, v in scores.items()} for name, scores in self.classes.items()
            },
        }


def _numpy_with_in1d() -> types.ModuleType:
    """numpy as the evaluator expects it: ``in1d`` (removed in numpy 2.4) is ``isin`` on flat input."""
    shim = types.ModuleType("numpy")
    shim.__dict__.update(np.__dict__)
    shim.in1d = lambda values, test, **kwargs: np.isin(np.ravel(values), test, **kwargs)  # type: ignore[attr-defined]
    return shim


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.__dict__


@contextmanager
def _adapted(work: Path) -> Iterator[None]:
    """The evaluator's module, patched for the duration of one evaluation."""

    def write_json(data: dict, name: str) -> None:
        (work / Path(name).name).write_text(json.dumps(data, default=_plain, sort_keys=True, indent=1))

    saved = {key: official.__dict__[key] for key in ("np", "writeDict2JSON")}
    official.__dict__.update(np=_numpy_with_in1d(), writeDict2JSON=write_json)
    try:
        yield
    finally:
        official.__dict__.update(saved)


def evaluate_instances(
    predictions: Sequence[Path],
    ground_truth: Sequence[Path],
    work: Path,
    classes: Sequence[str] | None = None,
) -> CityscapesAP:
    """Score predicted instances against Cityscapes ground truth with the official evaluator.

    Args:
        predictions: Per frame, its prediction list (see cityscapes.write_predictions), all under
            ``work``.
        ground_truth: Per frame, in the same order, its ``*_gtFine_instanceIds.png``.
        work: Folder of the predictions; the evaluator's own files (ground-truth cache, matches,
            results) go there too.
        classes: Report only these classes (the mean too); None for all eight.

    Returns:
        AP and AP50, per class and their means.

    Raises:
        InputError: The evaluator refused the input (its message, and the file where it names one).
    """
    work = work.resolve()
    args: Any = copy.copy(official.args)
    args.predictionPath = str(work)
    args.predictionWalk = None
    args.gtInstancesFile = str(work / "gtInstances.json")
    args.exportFile = str(work / "resultInstanceLevelSemanticLabeling.json")
    args.quiet, args.colorized, args.JSONOutput = True, False, True
    (work / "gtInstances.json").unlink(missing_ok=True)  # a cache of other frames would be used
    printed = StringIO()
    with _adapted(work), redirect_stdout(printed):
        try:
            results = official.evaluateImgLists(
                [str(p.resolve()) for p in predictions], [str(g.resolve()) for g in ground_truth], args
            )
        except SystemExit:  # the evaluator reports bad input by printing and exiting
            raise InputError(str(work), printed.getvalue().strip().splitlines()[-1]) from None
    per_class = {
        name: {"ap": float(scores["ap"]), "ap50": float(scores["ap50%"])}
        for name, scores in results["averages"]["classes"].items()
        if classes is None or name in classes
    }
    return CityscapesAP(
        _mean(s["ap"] for s in per_class.values()), _mean(s["ap50"] for s in per_class.values()), per_class
    )


def _mean(values: Iterable[float]) -> float:
    """The mean over classes with ground truth (the official evaluator's nanmean); NaN if none."""
    present = [v for v in values if not math.isnan(v)]
    return sum(present) / len(present) if present else math.nan
