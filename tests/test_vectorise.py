"""Outlines: squaring to right angles, tidying in metres, and placing pixels on the map."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from rasterio.features import rasterize
from rasterio.transform import Affine
from shapely import affinity

from footprints.geo.regularise import regularise
from footprints.geo.vectorise import mask_to_polygon, tidy_outlines, to_metric


def staircase(polygon: shapely.Polygon) -> shapely.Polygon:
    """The pixel outline a mask of ``polygon`` gives: what the models hand to vectorising."""
    mask = rasterize([(polygon, 1)], out_shape=(120, 120), dtype="uint8").astype(bool)
    return mask_to_polygon(mask)


def corner_angles(polygon: shapely.Polygon) -> np.ndarray:
    ring = np.asarray(polygon.exterior.coords)[:-1]
    a = np.roll(ring, 1, axis=0) - ring
    b = np.roll(ring, -1, axis=0) - ring
    cos = (a * b).sum(axis=1) / np.hypot(*a.T) / np.hypot(*b.T)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


@pytest.mark.parametrize("angle", [0, 17, 33, 62])
def test_regularise_squares_a_rotated_l_shape(angle: float) -> None:
    ell = shapely.Polygon([(0, 0), (60, 0), (60, 25), (25, 25), (25, 50), (0, 50)])
    truth = affinity.rotate(affinity.translate(ell, 30, 30), angle, origin=(60, 60))
    traced = shapely.simplify(staircase(truth), 1.0)
    squared = regularise(np.array([traced], dtype=object))[0]
    assert len(squared.exterior.coords) - 1 == 6
    assert np.allclose(corner_angles(squared), 90, atol=0.5)
    iou = squared.intersection(truth).area / squared.union(truth).area
    assert iou > 0.93
    assert iou >= traced.intersection(truth).area / traced.union(truth).area - 0.01


def test_regularise_keeps_shapes_it_would_distort() -> None:
    disc = shapely.Point(50, 50).buffer(30, quad_segs=16)
    assert regularise(np.array([disc], dtype=object))[0].equals(disc)


def test_tidy_outlines_drops_slivers_and_keeps_holes() -> None:
    courtyard = shapely.box(0, 0, 20, 20).difference(shapely.box(5, 5, 15, 15))
    sliver = shapely.box(100, 100, 101, 102)  # 2 m^2
    kept, index = tidy_outlines(
        np.array([courtyard, sliver], dtype=object),
        min_area_m2=4.0,
        simplify_m=0.3,
        regularise_outlines=False,
    )
    assert list(index) == [0]
    assert len(kept[0].interiors) == 1
    assert kept[0].area == pytest.approx(300.0)


def test_pixels_reach_the_metric_crs_through_the_map() -> None:
    # A 10 x 10 px square at 0.3 m in longitude/latitude near Las Vegas is 3 m x 3 m in UTM 11N.
    lon_per_m, lat_per_m = 1 / 89_900, 1 / 110_950
    transform = Affine(0.3 * lon_per_m, 0, -115.2, 0, -0.3 * lat_per_m, 36.15)
    square = np.array([shapely.box(0, 0, 10, 10)], dtype=object)
    metric = to_metric(square, transform, "EPSG:4326", "EPSG:32611")[0]
    assert metric.area == pytest.approx(9.0, rel=0.01)
