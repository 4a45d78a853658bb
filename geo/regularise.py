"""Orthogonal regularisation: building outlines squared to two perpendicular directions.

Most buildings are drawn from right angles, while a mask's outline is a pixel staircase that
simplification turns into slightly skewed edges. Each outline is turned to its dominant direction
(the long side of its minimum rotated rectangle), every edge is snapped to horizontal or vertical
there, runs of edges in one direction are merged into one straight side, and the outline is turned
back. An outline that is not drawn from right angles (its edges stray far from the two directions)
or that the rule would distort (IoU with the original under ``min_iou``) is kept as it was.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import shapely
from shapely import affinity

from .overlap import pairwise_iou


def regularise(polygons: np.ndarray, min_iou: float = 0.75, max_skew_degrees: float = 12.0) -> np.ndarray:
    """Square the outlines of many polygons (see the module notes).

    Args:
        polygons: Polygons in a metric CRS, already simplified.
        min_iou: The least IoU with the original a squared outline must keep.
        max_skew_degrees: Outlines whose edges stray further from the two directions, on
            average (weighted by length), are left alone: round buildings stay round.

    Returns:
        Polygons of the same length; holes are squared too.
    """
    polygons = np.asarray(polygons, dtype=object)
    squared = [_square_one(p, max_skew_degrees) for p in polygons]
    attempted = np.array([s is not None for s in squared], dtype=bool)
    out = polygons.copy()
    if attempted.any():
        candidates = np.array([s for s in squared if s is not None], dtype=object)
        faithful = pairwise_iou(candidates, polygons[attempted]) >= min_iou
        out[np.flatnonzero(attempted)[faithful]] = candidates[faithful]
    return out


def _skew_degrees(coords: np.ndarray) -> float:
    """Length-weighted mean angle between a ring's edges and the nearer of the two axes."""
    edges = np.diff(coords, axis=0)
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    angles = np.degrees(np.arctan2(edges[:, 1], edges[:, 0])) % 90
    return float(np.average(np.minimum(angles, 90 - angles), weights=lengths + 1e-12))


def _square_one(polygon: shapely.Geometry, max_skew_degrees: float) -> shapely.Polygon | None:
    """The squared outline of one polygon, or None where the rule does not apply or fails."""
    if not isinstance(polygon, shapely.Polygon) or polygon.is_empty:
        return None
    angle = _dominant_angle(polygon)
    centre = polygon.centroid
    # Rotating a Polygon gives a Polygon (the stubs say only BaseGeometry).
    turned = cast(shapely.Polygon, affinity.rotate(polygon, -angle, origin=centre, use_radians=True))
    if _skew_degrees(np.asarray(turned.exterior.coords)) > max_skew_degrees:
        return None  # round or many-sided: not drawn from right angles
    shell = _square_ring(np.asarray(turned.exterior.coords))
    if shell is None:
        return None
    holes = [r for r in (_square_ring(np.asarray(i.coords)) for i in turned.interiors) if r is not None]
    squared = cast(
        shapely.Polygon,
        affinity.rotate(shapely.Polygon(shell, holes), angle, origin=centre, use_radians=True),
    )
    if not squared.is_valid or squared.is_empty:
        return None
    return squared


def _dominant_angle(polygon: shapely.Polygon) -> float:
    """Direction of the long side of the minimum rotated rectangle, in radians."""
    # The minimum rotated rectangle of a polygon with an area is a Polygon.
    rectangle = cast(shapely.Polygon, shapely.minimum_rotated_rectangle(polygon))
    corners = np.asarray(rectangle.exterior.coords)
    sides = np.diff(corners[:3], axis=0)
    longest = sides[np.argmax(np.hypot(sides[:, 0], sides[:, 1]))]
    return math.atan2(longest[1], longest[0])


def _square_ring(coords: np.ndarray) -> np.ndarray | None:
    """An axis-aligned ring through the runs of a ring's edges, or None if fewer than 4 runs."""
    points = coords[:-1]
    edges = np.roll(points, -1, axis=0) - points
    horizontal = np.abs(edges[:, 0]) >= np.abs(edges[:, 1])
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    # Start at a change of direction, so that no run wraps around the ring's end.
    changes = np.flatnonzero(horizontal != np.roll(horizontal, 1))
    if len(changes) < 4:
        return None
    order = np.roll(np.arange(len(edges)), -changes[0])
    runs: list[tuple[bool, float]] = []  # (horizontal, the run's y or x)
    for is_h, group in _group_runs(order, horizontal):
        mid = (points[group] + points[(group + 1) % len(points)]) / 2
        weight = lengths[group] + 1e-12
        level = np.average(mid[:, 1] if is_h else mid[:, 0], weights=weight)
        runs.append((is_h, float(level)))
    if len(runs) < 4 or len(runs) % 2:
        return None
    corners = []
    for (a_h, a), (_, b) in zip(runs, runs[1:] + runs[:1], strict=True):
        corners.append((b, a) if a_h else (a, b))
    return np.array([*corners, corners[0]])


def _group_runs(order: np.ndarray, horizontal: np.ndarray) -> list[tuple[bool, np.ndarray]]:
    """Consecutive edges (in ``order``) of one direction, as (direction, edge indexes)."""
    runs = []
    start = 0
    for i in range(1, len(order) + 1):
        if i == len(order) or horizontal[order[i]] != horizontal[order[start]]:
            runs.append((bool(horizontal[order[start]]), order[start:i]))
            start = i
    return runs
