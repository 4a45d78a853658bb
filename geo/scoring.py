"""The SpaceNet building F1 score.

Per image, proposals are taken in descending confidence; each is matched to the unmatched truth
polygon with which it has the highest IoU, and the match is a true positive when that IoU reaches
the threshold (0.5). Unmatched proposals are false positives, unmatched truth polygons false
negatives. IoU is computed by overlap.pairwise_iou. A polygon counts, truth and proposal alike,
when its area is at least ``min_area`` (20 px in SpaceNet-2) and above zero; smaller ones are left
out. Sums per AOI give the AOI's precision, recall and F1; sums over everything give the overall
score.

This reproduces the published SpaceNet-2 scores exactly (tests/test_scoring.py). Three deliberate
differences from the reference implementation, none of which changes those scores: invalid
polygons are repaired (the reference scored an invalid truth polygon as IoU 0, so it could never be
found), ties in confidence keep the input order (the reference's sort is not stable), and the
minimum area is the same rule on both sides (the reference keeps proposals of area strictly above
``min_area``, so a proposal of exactly 20 px counts here and not there; the published sample holds
no polygon of that area).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from .errors import InputError
from .labels import clean_polygons, read_label_file, read_summary_csv
from .overlap import pairwise_iou

IMAGE_ID_COLUMNS = ("image_id", "ImageId", "imageID")
CONFIDENCE_COLUMNS = ("confidence", "Confidence", "score")
COUNT_COLUMNS = ["tp", "fp", "fn"]


@dataclass(frozen=True)
class ScoreReport:
    """Scores per image, per AOI and overall.

    Attributes:
        per_image: One row per image: image_id, aoi, tp, fp, fn, precision, recall, f1.
        per_aoi: One row per AOI (index), the same counts and ratios from the AOI's sums.
        overall: The same figures over every image.
        matched: Per proposal, in the proposals table's order: whether it is a true positive
            (False for proposals left out of scoring, as under the minimum area).
        confidence: Per proposal, its confidence (0 where the table has none).
        counted: Per proposal, whether it took part in scoring (not empty, not under the area).
    """

    per_image: pd.DataFrame
    per_aoi: pd.DataFrame
    overall: dict[str, float]
    matched: np.ndarray
    confidence: np.ndarray
    counted: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: overall, per AOI and per image."""
        return {
            "overall": self.overall,
            "aois": {str(aoi): _plain(row) for aoi, row in self.per_aoi.iterrows()},
            "images": [_plain(row) for _, row in self.per_image.iterrows()],
        }


def _plain(row: pd.Series) -> dict[str, Any]:
    """JSON-ready values; counts stay integers although a mixed row holds them as floats."""
    values = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
    return {str(k): int(v) if k in COUNT_COLUMNS else v for k, v in values.items()}


def spacenet_aoi(image_id: str) -> str:
    """The AOI of a SpaceNet ImageId: all before the last underscore (AOI_2_Vegas_img12 -> AOI_2_Vegas)."""
    return image_id.rsplit("_", 1)[0]


def ratios(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall and F1 from counts, 0 where undefined (SpaceNet's convention)."""
    precision = tp / float(tp + fp) if tp + fp > 0 else 0.0
    recall = tp / float(tp + fn) if tp + fn > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision * recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def match_image(truth: np.ndarray, proposals: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """Greedy one-to-one matching of one image's proposals (already in descending confidence).

    Args:
        truth: Valid truth polygons of the image.
        proposals: Valid proposal polygons, best first.
        iou_threshold: The IoU a match needs.

    Returns:
        Per proposal, whether it is a true positive; the others are false positives, and the
        truth polygons left unmatched (len(truth) - the true positives) false negatives.
    """
    hits = np.zeros(len(proposals), dtype=bool)
    if len(proposals) == 0 or len(truth) == 0:
        return hits
    tree = shapely.STRtree(truth)
    prop_idx, truth_idx = tree.query(proposals, predicate="intersects")
    iou = pairwise_iou(proposals[prop_idx], truth[truth_idx])
    # Candidates of each proposal, in truth order so that equal IoUs pick the first truth polygon.
    order = np.lexsort((truth_idx, prop_idx))
    prop_idx, truth_idx, iou = prop_idx[order], truth_idx[order], iou[order]
    starts = np.searchsorted(prop_idx, np.arange(len(proposals) + 1))
    taken = np.zeros(len(truth), dtype=bool)
    for p in range(len(proposals)):
        lo, hi = starts[p], starts[p + 1]
        if lo == hi:
            continue
        free = ~taken[truth_idx[lo:hi]]
        if not free.any():
            continue
        candidates = np.flatnonzero(free) + lo
        best = candidates[np.argmax(iou[candidates])]
        if iou[best] >= iou_threshold:
            taken[truth_idx[best]] = True
            hits[p] = True
    return hits


def score(
    truth: gpd.GeoDataFrame,
    proposals: gpd.GeoDataFrame,
    *,
    iou_threshold: float = 0.5,
    min_area: float = 20.0,
) -> ScoreReport:
    """Score proposals against truth, SpaceNet style.

    Args:
        truth: Columns image_id and geometry (empty geometries mark images without buildings), and
            optionally aoi (else derived from image_id as SpaceNet does).
        proposals: Columns image_id, geometry and confidence (higher is surer).
        iou_threshold: The IoU a proposal needs to count as finding a building.
        min_area: The least area, in the tables' units, a polygon needs to count, truth and
            proposals alike (area >= min_area); smaller ones, and empty ones, are ignored.

    Returns:
        The report. Every image named in either table gets a row.
    """
    truth_geoms = clean_polygons(truth.geometry, "truth")
    truth_keep = _counts(truth_geoms, min_area)
    prop_geoms = clean_polygons(proposals.geometry, "proposals")
    prop_keep = _counts(prop_geoms, min_area)
    # Without confidences every proposal is equally sure and the table's order decides.
    confidence = (
        proposals["confidence"].to_numpy(dtype=float)
        if "confidence" in proposals
        else np.zeros(len(proposals))
    )

    aoi_of = dict(zip(truth["image_id"], truth["aoi"], strict=True)) if "aoi" in truth else {}
    image_ids = sorted(set(truth["image_id"]) | set(proposals["image_id"]))
    truth_by_image = _group(truth["image_id"].to_numpy()[truth_keep], truth_geoms[truth_keep])
    prop_ids = proposals["image_id"].to_numpy()[prop_keep]
    prop_order = np.argsort(-confidence[prop_keep], kind="stable")
    props_by_image = _group(prop_ids[prop_order], prop_geoms[prop_keep][prop_order])
    rows_by_image = _group(prop_ids[prop_order], np.flatnonzero(prop_keep)[prop_order])
    matched = np.zeros(len(proposals), dtype=bool)

    rows = []
    for image_id in image_ids:
        truth_here = truth_by_image.get(image_id, np.empty(0, dtype=object))
        hits = match_image(truth_here, props_by_image.get(image_id, np.empty(0, dtype=object)), iou_threshold)
        matched[rows_by_image.get(image_id, np.empty(0, dtype=int))] = hits
        tp = int(hits.sum())
        fp, fn = len(hits) - tp, len(truth_here) - tp
        aoi = aoi_of.get(image_id) or spacenet_aoi(image_id)
        rows.append({"image_id": image_id, "aoi": aoi, "tp": tp, "fp": fp, "fn": fn, **ratios(tp, fp, fn)})
    per_image = pd.DataFrame(rows, columns=["image_id", "aoi", *COUNT_COLUMNS, "precision", "recall", "f1"])
    # A groupby's sum over several columns is a DataFrame; pandas annotates it as a scalar union.
    sums = cast(pd.DataFrame, per_image.groupby("aoi")[COUNT_COLUMNS].sum())
    per_aoi = sums.join(pd.DataFrame([ratios(*map(int, r)) for r in sums.to_numpy()], index=sums.index))
    total = [int(v) for v in per_image[COUNT_COLUMNS].sum().to_numpy()]
    overall = {**dict(zip(COUNT_COLUMNS, total, strict=True)), **ratios(*total)}
    return ScoreReport(per_image, per_aoi, overall, matched, confidence, prop_keep)


def _counts(geoms: np.ndarray, min_area: float) -> np.ndarray:
    """Which polygons take part in scoring: area at least ``min_area``, and not empty."""
    area = shapely.area(geoms)
    return (area >= min_area) & (area > 0)


def _group(ids: np.ndarray, geoms: np.ndarray) -> dict[str, np.ndarray]:
    """Geometries (or any values) grouped by image id, keeping their order."""
    if len(ids) == 0:
        return {}
    order = np.argsort(ids, kind="stable")
    unique, starts = np.unique(ids[order], return_index=True)
    return {
        str(u): geoms[order][s:e] for u, s, e in zip(unique, starts, [*starts[1:], len(ids)], strict=True)
    }


def read_polygon_table(path: str | Path) -> gpd.GeoDataFrame:
    """Read truth or proposals for scoring from a SpaceNet CSV, GeoJSON or GeoPackage.

    CSVs use SpaceNet's columns (ImageId, PolygonWKT_Pix, Confidence). Vector files need an image id
    column (image_id or ImageId) and, for proposals, a confidence column (confidence, Confidence or
    score); a file in geographic coordinates is projected to its UTM zone, so areas are in m^2.

    Args:
        path: The file.

    Returns:
        GeoDataFrame with image_id, geometry and, when present, confidence.

    Raises:
        InputError: The file lacks an image id column or cannot be read.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        frame = read_summary_csv(path)
    else:
        frame = read_label_file(path)
        if frame.crs is not None and frame.crs.is_geographic and len(frame):
            frame = frame.to_crs(frame.estimate_utm_crs())
    renames = {}
    for wanted, options in (("image_id", IMAGE_ID_COLUMNS), ("confidence", CONFIDENCE_COLUMNS)):
        found = next((c for c in options if c in frame.columns), None)
        if found is not None:
            renames[found] = wanted
    frame = cast(gpd.GeoDataFrame, frame.rename(columns=renames))
    if "image_id" not in frame.columns:
        raise InputError(str(path), f"needs an image id column (one of {', '.join(IMAGE_ID_COLUMNS)})")
    frame["image_id"] = frame["image_id"].astype(str)
    return frame


def score_footprints(
    truth: gpd.GeoDataFrame, found: gpd.GeoDataFrame, pixel_m: float, iou_threshold: float = 0.5
) -> ScoreReport:
    """SpaceNet F1 of georeferenced footprints over a whole area, as one image.

    Both tables are compared in the UTM zone of the truth; the 20 px minimum area of SpaceNet
    becomes ``20 * pixel_m**2`` square metres.

    Args:
        truth: Whole buildings, with a CRS.
        found: Footprints with a CRS and a ``score`` column (the confidence).
        pixel_m: Pixel size of the imagery in metres.
        iou_threshold: The IoU a match needs.
    """
    metric = truth.estimate_utm_crs()
    truth_m = gpd.GeoDataFrame(
        {"image_id": ["area"] * len(truth)}, geometry=truth.to_crs(metric).geometry.values
    )
    found_m = gpd.GeoDataFrame(
        {"image_id": ["area"] * len(found), "confidence": found["score"].to_numpy()},
        geometry=found.to_crs(metric).geometry.values,
    )
    return score(truth_m, found_m, iou_threshold=iou_threshold, min_area=20 * pixel_m**2)
