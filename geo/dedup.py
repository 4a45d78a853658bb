"""Every building once and whole: joining fragments cut by chip borders, removing duplicates.

Instances come from overlapping chips, so a building may be found several times, and one that a
chip border cuts comes out of that chip as a fragment. The rules, in order:

1. **Join fragments.** Instances that touch their chip's border are fragments. Two fragments from
   different chips are parts of one building when they agree where their chips meet: clipped to
   the chips' shared strip (widened by a pixel, so that chips that merely abut have one too) and
   widened by two pixels, their IoU is at least ``join_iou``. Such fragments are unioned; row houses
   that share a wall do not agree along the seam and stay apart.
2. **Keep what a chip owns.** An instance counts only from the chip that owns it (see chips.py:
   its centre lies in the chip's core, or it is whole and larger than the overlap, which no other
   chip can see whole). Near its border a chip sees less context and finds more false buildings;
   this rule takes each building from the chip that sees it best. Joined fragments always count.
3. **Rank.** Owned whole instances first, then joined fragments, then owned lone fragments
   (cut by the edge of the imagery); ties go to the higher score.
4. **Polygon NMS.** In rank order, an instance is dropped when it overlaps one already kept by IoU
   >= ``iou`` or intersection-over-smaller >= ``ios`` (the latter catches a fragment inside a
   whole building).
5. **Trim.** What is left may still touch: each polygon loses what it shares with better-ranked
   ones, so no two output polygons overlap.

Every step works on arrays of shapely geometries with an STRtree; only the NMS walk is a loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from .overlap import pairwise_iou, pairwise_overlap
from .vectorise import largest_polygon


@dataclass(frozen=True)
class Candidates:
    """Instances from every chip, in one metric CRS.

    Attributes:
        geometry: Polygons.
        score: Confidences.
        chip: Chip id of each instance.
        cut: Whether the instance touches its chip's border.
        owned: Whether its chip owns it (centre in the core, or whole and larger than the overlap).
        chip_boxes: Outline of every chip by id, in the same CRS.
    """

    geometry: np.ndarray
    score: np.ndarray
    chip: np.ndarray
    cut: np.ndarray
    owned: np.ndarray
    chip_boxes: np.ndarray


@dataclass(frozen=True)
class Buildings:
    """The deduplicated buildings: polygons, scores, and which candidates each came from."""

    geometry: np.ndarray
    score: np.ndarray
    members: list[np.ndarray]


def deduplicate(
    found: Candidates,
    pixel_m: float,
    *,
    iou: float = 0.5,
    ios: float = 0.7,
    join_iou: float = 0.5,
    min_area_m2: float = 1.0,
) -> Buildings:
    """Apply the module's rules.

    Args:
        found: The candidates.
        pixel_m: Pixel size in metres: the tolerance for fragments that merely touch.
        iou: NMS IoU threshold.
        ios: NMS intersection-over-smaller threshold.
        join_iou: How well two fragments must agree along their chips' shared strip.
        min_area_m2: Polygons left smaller than this after trimming are dropped.

    Returns:
        The buildings, best ranked first.
    """
    groups = _join_fragments(found, pixel_m, join_iou)
    geometry = np.array(
        [found.geometry[g[0]] if len(g) == 1 else _union(found.geometry[g]) for g in groups], dtype=object
    )
    score = np.array([found.score[g].max() for g in groups])
    rank = np.array([_rank(found, g) for g in groups])
    counted = np.flatnonzero(rank >= 0)
    geometry, score, rank = geometry[counted], score[counted], rank[counted]
    groups = [groups[i] for i in counted]
    order = np.lexsort((-score, -rank))
    geometry, score, groups = geometry[order], score[order], [groups[i] for i in order]

    kept = _nms(geometry, iou, ios)
    geometry, score, groups = geometry[kept], score[kept], [groups[i] for i in kept]
    geometry = _trim(geometry)
    keep = np.flatnonzero(shapely.area(geometry) >= min_area_m2)
    return Buildings(geometry[keep], score[keep], [groups[i] for i in keep])


def _rank(found: Candidates, group: np.ndarray) -> int:
    """2: owned whole instance, 1: joined fragments, 0: owned lone fragment, -1: not counted."""
    if len(group) > 1:
        return 1
    i = group[0]
    if not found.owned[i]:
        return -1
    return 0 if found.cut[i] else 2


def _join_fragments(found: Candidates, pixel_m: float, join_iou: float) -> list[np.ndarray]:
    """Groups of candidate indexes: joined fragments, and every other candidate alone."""
    n = len(found.geometry)
    parent = np.arange(n)
    fragments = np.flatnonzero(found.cut)
    if len(fragments) > 1:
        geoms = found.geometry[fragments]
        a, b = shapely.STRtree(geoms).query(geoms, predicate="dwithin", distance=pixel_m)
        a, b = fragments[a], fragments[b]
        pair = (a < b) & (found.chip[a] != found.chip[b])
        a, b = a[pair], b[pair]
        strip = shapely.buffer(
            shapely.intersection(
                shapely.buffer(found.chip_boxes[found.chip[a]], pixel_m, join_style="mitre"),
                shapely.buffer(found.chip_boxes[found.chip[b]], pixel_m, join_style="mitre"),
            ),
            0,
        )
        # Two pixels of widening make fragments that abut across a line overlap by most of
        # their width; one would leave their IoU just under a half.
        part_a = shapely.buffer(shapely.intersection(found.geometry[a], strip), 2 * pixel_m)
        part_b = shapely.buffer(shapely.intersection(found.geometry[b], strip), 2 * pixel_m)
        agree = pairwise_iou(part_a, part_b) >= join_iou
        for i, j in zip(a[agree], b[agree], strict=True):
            parent[_root(parent, i)] = _root(parent, j)
    roots = np.array([_root(parent, i) for i in range(n)])
    order = np.argsort(roots, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(roots[order])) + 1) if n else []


def _root(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return int(i)


def _union(parts: np.ndarray) -> shapely.Geometry:
    """One polygon of fragments; a hairline gap between abutting fragments is closed."""
    joined = shapely.union_all(shapely.buffer(parts, 1e-6, join_style="mitre"))
    return largest_polygon(shapely.make_valid(shapely.buffer(joined, -1e-6, join_style="mitre")))


def _nms(geometry: np.ndarray, iou: float, ios: float) -> np.ndarray:
    """Greedy polygon NMS over geometries already in rank order; indexes of those kept."""
    n = len(geometry)
    if n == 0:
        return np.empty(0, dtype=int)
    i, j = shapely.STRtree(geometry).query(geometry, predicate="intersects")
    pair = i < j
    i, j = i[pair], j[pair]
    pair_iou, pair_ios = pairwise_overlap(geometry[i], geometry[j])
    clash = (pair_iou >= iou) | (pair_ios >= ios)
    i, j = i[clash], j[clash]
    suppressed = np.zeros(n, dtype=bool)
    clashes_with_later: dict[int, list[int]] = {}
    for a, b in zip(i, j, strict=True):
        clashes_with_later.setdefault(int(a), []).append(int(b))
    for a in range(n):
        if not suppressed[a]:
            suppressed[clashes_with_later.get(a, [])] = True
    return np.flatnonzero(~suppressed)


def _trim(geometry: np.ndarray) -> np.ndarray:
    """Each polygon less what it shares with earlier (better-ranked) ones."""
    i, j = shapely.STRtree(geometry).query(geometry, predicate="intersects")
    pair = i < j
    i, j = i[pair], j[pair]
    overlap = shapely.area(shapely.intersection(geometry[i], geometry[j])) > 0
    out = geometry.copy()
    for later in map(int, np.unique(j[overlap])):
        earlier = i[overlap & (j == later)]
        out[later] = largest_polygon(
            shapely.make_valid(shapely.difference(out[later], shapely.union_all(geometry[earlier])))
        )
    return out
