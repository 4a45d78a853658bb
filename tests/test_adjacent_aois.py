"""Neighbouring AOIs written into one GeoPackage give every building once and whole.

The block scene (block_scene.py) is cut into four AOIs whose borders run through three of its
blocks, one of them under all four AOIs; each AOI runs for real (`footprints run`, a Prefect flow
run on the test harness's API, a Dask LocalCluster) into the same file.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from block_scene import CRS, ORIGIN, PIXEL_M, block_checkpoint, write_block_scene
from test_method_registry import truth

from footprints.cli import main
from footprints.geo.overlap import pairwise_iou

OPTIONS = ["--chip-size", "64", "--overlap", "24", "--simplify", "0", "--min-area", "1", "--workers", "1"]
# Borders at scene column 158 and row 157: through three blocks centred a little to the east and
# south, where the neighbouring AOI's chips begin.
X = ORIGIN[0] + 158 * PIXEL_M
Y = ORIGIN[1] - 157 * PIXEL_M
QUADRANTS = [
    (ORIGIN[0], Y, X, ORIGIN[1]),
    (X, Y, ORIGIN[0] + 160, ORIGIN[1]),
    (ORIGIN[0], ORIGIN[1] - 160, X, Y),
    (X, ORIGIN[1] - 160, ORIGIN[0] + 160, Y),
]


@pytest.mark.slow
def test_four_neighbouring_aois_give_each_building_once_and_whole(prefect_api: str, tmp_path: Path) -> None:
    checkpoint = block_checkpoint(tmp_path / "blocks.pt")
    scene = tmp_path / "scene"
    write_block_scene(scene)
    out = tmp_path / "buildings.gpkg"
    blocks = truth().geometry.to_numpy()
    borders = shapely.union_all([shapely.box(*q).boundary for q in QUADRANTS])
    assert shapely.intersects(blocks, borders).sum() == 3  # the case this test is about

    for quadrant in QUADRANTS:
        aoi = ",".join(f"{v:.1f}" for v in quadrant)
        argv = ["-q", "run", "--aoi", aoi, "--aoi-crs", CRS, "--source", str(scene), "--out", str(out)]
        assert main([*argv, "--model", str(checkpoint), "--method", "blocks", *OPTIONS]) == 0

    found = gpd.GeoDataFrame(pyogrio.read_dataframe(out, layer="buildings")).to_crs(CRS)
    assert len(found) == len(blocks)
    # Each block is found once, whole: its best match covers it to the pixel.
    geometry = found.geometry.to_numpy()
    best = [
        float(pairwise_iou(geometry, np.full(len(geometry), block, dtype=object)).max()) for block in blocks
    ]
    assert min(best) > 0.99, best
    a, b = shapely.STRtree(geometry).query(geometry, predicate="intersects")
    overlaps = shapely.area(shapely.intersection(geometry[a[a < b]], geometry[b[a < b]]))
    assert overlaps.max(initial=0.0) <= 1.0
    assert len(set(found["run_id"])) == 4
