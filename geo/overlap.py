"""How much two polygons overlap: intersection over union (IoU) and over the smaller (IoS).

Every overlap ratio in the package comes from here: the scorer's matching (scoring.py), the
fragment join and the NMS of dedup.py, and regularise.py's check that squaring kept the shape.

The union's area is taken as ``area(a) + area(b) - area(a & b)``, not from a union geometry: one
overlay operation per pair instead of two, and the figure the SpaceNet scorer is checked with
(its published scores are reproduced exactly, tests/test_scoring.py).
"""

from __future__ import annotations

import numpy as np
import shapely


def pairwise_overlap(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and intersection-over-smaller of ``a[i]`` with ``b[i]``, from one intersection each.

    Args:
        a: Array of shapely polygons (or any geometries with an area).
        b: Array of the same length.

    Returns:
        (iou, ios): float arrays of the length of ``a``. The IoU is 0 where the union has no area
        (both empty), the IoS 0 where the smaller of the two has no area.
    """
    inter = shapely.area(shapely.intersection(a, b))
    area_a, area_b = shapely.area(a), shapely.area(b)
    union = area_a + area_b - inter
    smaller = np.minimum(area_a, area_b)
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    ios = np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)
    return iou, ios


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``a[i]`` with ``b[i]``: area of the intersection over area of the union.

    Args:
        a: Array of shapely polygons (or any geometries with an area).
        b: Array of the same length.

    Returns:
        Float array of the length of ``a``; 0 where the union has no area (both empty).
    """
    return pairwise_overlap(a, b)[0]
