"""Panoptic quality by panopticapi's own ``pq_compute`` (PyPI ``panopticapi-lite``), class-agnostic.

The pointer network finds segments but knows no classes, so both sides are scored as one
category: every ground-truth segment, thing or stuff, and every predicted segment are put in a
single "segment" category, and the official code's own matching (``pq_compute_single_core``, on
the ground truth's own PNGs, a share of the images per core as ``pq_compute_multi_core`` does,
but in a pool closed afterwards: that function leaves its pool's processes behind) and
averaging (``PQStat.pq_average``) score them. PQ, SQ and RQ are then those of that category: a
predicted segment matches a ground-truth one when their IoU is over 0.5, crowd regions and
unlabelled pixels are ignored as the official code ignores them.
(``pq_compute`` itself, which wraps the two, also averages over the stuff categories, and with
none it divides by zero.)
"""

from __future__ import annotations

import multiprocessing
from contextlib import redirect_stdout
from dataclasses import asdict, dataclass
from io import StringIO
from pathlib import Path
from typing import Any

from panopticapi.evaluation import PQStat, pq_compute_single_core

from footprints.geo.errors import InputError

from .coco_panoptic import read_json

SEGMENT = {"id": 1, "name": "segment", "supercategory": "segment", "isthing": 1, "color": [220, 20, 60]}


@dataclass(frozen=True)
class PanopticQuality:
    """Class-agnostic panoptic scores: PQ = SQ x RQ."""

    pq: float
    sq: float
    rq: float

    def to_dict(self) -> dict[str, float]:
        """Plain values, for JSON."""
        return {k: round(v, 6) for k, v in asdict(self).items()}


def _one_category(content: dict[str, Any]) -> dict[str, Any]:
    """A panoptic JSON with every segment in the SEGMENT category."""
    annotations = [
        {**a, "segments_info": [{**s, "category_id": SEGMENT["id"]} for s in a["segments_info"]]}
        for a in content["annotations"]
    ]
    return {**content, "annotations": annotations, "categories": [SEGMENT]}


def panoptic_quality(
    json_file: Path, annotations: Path, predictions: list[dict[str, Any]], prediction_folder: Path
) -> PanopticQuality:
    """Score predicted segments against the ground truth with panopticapi's own code.

    Args:
        json_file: The ground truth's panoptic JSON.
        annotations: Folder of the ground truth's panoptic PNGs.
        predictions: One annotation per image of the ground truth (see
            coco_panoptic.write_prediction), their PNGs in ``prediction_folder``.
        prediction_folder: Folder of the predicted PNGs.

    Raises:
        InputError: An image of the ground truth without a prediction.
    """
    truth = _one_category(read_json(json_file))
    predicted = {p["image_id"]: p for p in _one_category({"annotations": predictions})["annotations"]}
    missing = [a["image_id"] for a in truth["annotations"] if a["image_id"] not in predicted]
    if missing:
        raise InputError(str(json_file), f"no prediction for images {missing}")
    matched = [(a, predicted[a["image_id"]]) for a in truth["annotations"]]
    categories = {SEGMENT["id"]: SEGMENT}
    cores = max(1, min(multiprocessing.cpu_count(), len(matched)))
    shares = [matched[core::cores] for core in range(cores)]
    jobs = [
        (core, share, str(annotations), str(prediction_folder), categories)
        for core, share in enumerate(shares)
    ]
    stats = PQStat()
    # The official code prints its progress; the caller reports the scores itself.
    with redirect_stdout(StringIO()), multiprocessing.Pool(cores) as pool:
        for part in pool.starmap(pq_compute_single_core, jobs):
            stats += part
    scores, _ = stats.pq_average(categories, isthing=None)
    return PanopticQuality(float(scores["pq"]), float(scores["sq"]), float(scores["rq"]))
