"""Chips across seams, dedup and nodata on a scene a segmenter reads perfectly (block_scene.py).

Two chippings of one scene must give the same buildings: many small overlapping chips, and one
chip per tile (where every seam cuts buildings in two). The pipeline runs for real: the chip plan,
a Dask LocalCluster whose workers read and vectorise the chips, and the merge.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from block_scene import (
    CRS,
    PIXEL_M,
    TILE,
    BlockSegmenter,
    block_checkpoint,
    scene_polygons,
    scene_transform,
    write_block_scene,
)
from distributed import LocalCluster
from records import run_record

from footprints.geo.aoi import read_aoi
from footprints.geo.dedup import Candidates, deduplicate
from footprints.geo.labels import apply_affine
from footprints.geo.scoring import score_footprints
from footprints.geo.stores import S3Options
from footprints.tasks.chip_work import Model, Vectorising
from footprints.tasks.inference import (
    chip_batches,
    load_model,
    merge_buildings,
    plan_run,
    segment_chips,
    write_geopackage,
)

SCENE_BBOX = "500000,3999840,500160,4000000"  # the whole 320 x 320 px scene, UTM metres


@pytest.fixture(scope="module")
def blocks(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """The block method's checkpoint, read as a run reads any checkpoint."""
    return load_model.fn(str(block_checkpoint(tmp_path_factory.mktemp("model") / "blocks.pt")), "blocks")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as c:
        yield c.scheduler_address


def run_chips(
    source: Path, model: Model, cluster: str, size: int, overlap: int, aoi: str = SCENE_BBOX
) -> gpd.GeoDataFrame:
    """The buildings of the block scene through plan, segment and merge (no model, no Prefect)."""
    area = read_aoi(aoi, CRS)
    plan = plan_run.fn(area, str(source), S3Options(), size, overlap)
    how = Vectorising(area.utm_crs(), min_area_m2=1.0, simplify_m=0.0)
    batches = chip_batches(plan, 4)
    segmented = segment_chips.fn(plan, model, str(source), S3Options(), how, cluster, batches, False)
    found = merge_buildings.fn(segmented, plan, area, how)
    found.attrs["skipped"] = segmented.skipped
    found.attrs["errors"] = segmented.errors
    found.attrs["unread"] = segmented.unread
    return found


def truth() -> gpd.GeoDataFrame:
    polygons = apply_affine(np.array(scene_polygons(), dtype=object), scene_transform())
    return gpd.GeoDataFrame(geometry=polygons, crs=CRS)


def overlaps_m2(found: gpd.GeoDataFrame) -> np.ndarray:
    geometry = found.geometry.to_numpy()
    i, j = shapely.STRtree(geometry).query(geometry, predicate="intersects")
    pair = i < j
    return shapely.area(shapely.intersection(geometry[i[pair]], geometry[j[pair]]))


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("blocks")
    write_block_scene(folder)
    return folder


@pytest.fixture(scope="module")
def small_chips(scene: Path, blocks: Model, cluster: str) -> gpd.GeoDataFrame:
    return run_chips(scene, blocks, cluster, 64, 24)


@pytest.fixture(scope="module")
def tile_chips(scene: Path, blocks: Model, cluster: str) -> gpd.GeoDataFrame:
    return run_chips(scene, blocks, cluster, TILE, 0)


@pytest.mark.slow
def test_small_chips_and_one_chip_per_tile_give_the_same_buildings(
    small_chips: gpd.GeoDataFrame, tile_chips: gpd.GeoDataFrame
) -> None:
    between = score_footprints(tile_chips.assign(score=1.0), small_chips, PIXEL_M).overall
    assert between["f1"] >= 0.98, between
    for found in (small_chips, tile_chips):
        report = score_footprints(truth(), found, PIXEL_M).overall
        assert report["f1"] == 1.0, report
        assert len(found) == len(scene_polygons())


@pytest.mark.slow
def test_no_two_buildings_overlap(small_chips: gpd.GeoDataFrame, tile_chips: gpd.GeoDataFrame) -> None:
    for found in (small_chips, tile_chips):
        assert (overlaps_m2(found) <= 1.0).all()


@pytest.mark.slow
@pytest.mark.parametrize("which", ["small_chips", "tile_chips"])
def test_buildings_on_seams_come_out_whole(which: str, request: pytest.FixtureRequest) -> None:
    found: gpd.GeoDataFrame = request.getfixturevalue(which)
    seams = shapely.MultiLineString([[(TILE, 0), (TILE, 2 * TILE)], [(0, TILE), (2 * TILE, TILE)]])
    seams = apply_affine(np.array([seams], dtype=object), scene_transform())[0]
    whole = truth().to_crs(found.crs).geometry
    on_seams = whole[whole.intersects(seams)]
    assert len(on_seams) == 3  # across the vertical seam, the horizontal one, and the corner
    for building in on_seams:
        pieces = found[found.intersects(building)]
        assert len(pieces) == 1
        iou = (
            pieces.geometry.iloc[0].intersection(building).area / pieces.geometry.iloc[0].union(building).area
        )
        assert iou > 0.95


@pytest.mark.slow
def test_holes_are_kept(small_chips: gpd.GeoDataFrame) -> None:
    holed = [g for g in small_chips.geometry if len(g.interiors) == 1]
    assert len(holed) == 1
    assert shapely.Polygon(holed[0].interiors[0]).area == pytest.approx(30 * 30 * PIXEL_M**2, rel=0.02)


@pytest.mark.slow
def test_nodata_chips_are_skipped_and_yield_nothing(tmp_path: Path, blocks: Model, cluster: str) -> None:
    write_block_scene(tmp_path, nodata_left_of=100)
    found = run_chips(tmp_path, blocks, cluster, 64, 24)
    assert found.attrs["skipped"] >= 4  # the chips wholly left of column 100
    left_edge = scene_transform().c + 100 * PIXEL_M
    utm = found.to_crs(CRS)
    assert (utm.geometry.bounds["minx"] >= left_edge - 1e-6).all()
    # Blocks wholly right of the nodata are all found.
    expected = [p for p in scene_polygons() if p.bounds[0] >= 100]
    assert len(found) >= len(expected)


def test_fragments_of_row_houses_are_not_joined() -> None:
    """Two houses sharing a wall, both cut by the border between two abutting chips, stay two."""
    west, east = shapely.box(0, 0, 5, 5), shapely.box(5, 0, 10, 5)
    house_a = [shapely.box(2, 0, 5, 3), shapely.box(5, 0, 8, 3)]  # (chip, piece): a, cut at x = 5
    house_b = [shapely.box(2, 3, 5, 5), shapely.box(5, 3, 8, 5)]
    found = Candidates(
        geometry=np.array([house_a[0], house_a[1], house_b[0], house_b[1]], dtype=object),
        score=np.array([0.9, 0.8, 0.7, 0.6]),
        chip=np.array([0, 1, 0, 1]),
        cut=np.ones(4, dtype=bool),
        owned=np.ones(4, dtype=bool),
        chip_boxes=np.array([west, east], dtype=object),
    )
    merged = deduplicate(found, pixel_m=0.5, min_area_m2=0.5)
    assert len(merged.geometry) == 2
    assert sorted(round(g.area, 6) for g in merged.geometry) == [12.0, 18.0]


@pytest.mark.slow
def test_the_model_loads_once_per_worker_however_many_batches(
    scene: Path, blocks: Model, cluster: str
) -> None:
    before = BlockSegmenter.loads
    found = run_chips(scene, blocks, cluster, 64, 24)  # 64 chips in batches of 4
    assert len(found) == len(scene_polygons())
    assert BlockSegmenter.loads - before == 1


@pytest.mark.slow
def test_output_in_another_crs_keeps_areas_in_square_metres(
    small_chips: gpd.GeoDataFrame, tmp_path: Path
) -> None:
    area = read_aoi(SCENE_BBOX, CRS)
    out = tmp_path / "mercator.gpkg"
    write_geopackage.fn(small_chips, area, run_record(out, "r1", "EPSG:3857"), out)
    written = gpd.read_file(out, layer="buildings", engine="pyogrio")
    assert written.crs.to_epsg() == 3857
    utm_areas = written.to_crs(CRS).area.to_numpy()
    assert np.allclose(written["area_m2"], utm_areas, rtol=1e-3)
    # Web Mercator inflates areas at 36 degrees north by about 1 / cos^2(36): a wrong area_m2 would show.
    assert (written.area.to_numpy() > 1.4 * utm_areas).all()


# --- a tile whose pixels cannot be read ------------------------------------------------------

BAD_TILE = "tile_r1_c1.tif"


def _tile_outline(name: str) -> shapely.Geometry:
    row, col = int(name[6]), int(name[9])
    pixels = shapely.box(col * TILE, row * TILE, (col + 1) * TILE, (row + 1) * TILE)
    return apply_affine(np.array([pixels], dtype=object), scene_transform())[0]


@pytest.fixture(scope="module")
def corrupt_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The block scene with one tile cut in half: its header reads, its pixels do not."""
    folder = tmp_path_factory.mktemp("corrupt")
    write_block_scene(folder)
    bad = folder / BAD_TILE
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    return folder


@pytest.fixture(scope="module")
def corrupt_chips(corrupt_scene: Path, blocks: Model, cluster: str) -> gpd.GeoDataFrame:
    return run_chips(corrupt_scene, blocks, cluster, 64, 24)


@pytest.mark.slow
def test_a_tile_with_corrupt_pixels_costs_its_own_area_only(
    corrupt_chips: gpd.GeoDataFrame, small_chips: gpd.GeoDataFrame
) -> None:
    bad = _tile_outline(BAD_TILE)
    clean = small_chips.to_crs(CRS)
    away = clean[~clean.intersects(shapely.buffer(bad, 2 * PIXEL_M))]
    found = corrupt_chips.to_crs(CRS)
    # Every building clear of the bad tile is found as in a clean run, also in the chips that
    # cover part of the bad tile.
    report = score_footprints(away.assign(score=1.0), found[found.intersects(away.union_all())], PIXEL_M)
    assert report.overall["fn"] == 0, report.overall
    assert not found.intersects(bad).any()
    # The bad tile is named, and the unread area is its footprint.
    assert corrupt_chips.attrs["errors"]
    assert all(BAD_TILE in e and "cannot read pixels" in e for e in corrupt_chips.attrs["errors"])
    unread = gpd.GeoSeries([corrupt_chips.attrs["unread"]], crs=found.crs).to_crs(CRS).iloc[0]
    assert shapely.symmetric_difference(unread, bad).area < 1e-3


@pytest.mark.slow
def test_earlier_buildings_where_a_tile_could_not_be_read_are_kept(
    small_chips: gpd.GeoDataFrame, corrupt_chips: gpd.GeoDataFrame, tmp_path: Path
) -> None:
    area = read_aoi(SCENE_BBOX, CRS)
    out = tmp_path / "buildings.gpkg"
    write_geopackage.fn(small_chips, area, run_record(out, "good", CRS), out)
    unread = gpd.GeoSeries([corrupt_chips.attrs["unread"]], crs=corrupt_chips.crs)
    write_geopackage.fn(corrupt_chips, area, run_record(out, "partial", CRS), out, unread)

    written = gpd.read_file(out, layer="buildings", engine="pyogrio")
    assert len(written) == len(scene_polygons())  # every building, each once
    assert (overlaps_m2(written) <= 1.0).all()
    bad = _tile_outline(BAD_TILE)
    at_bad = written[written.intersects(bad)]
    assert len(at_bad)
    assert (at_bad["run_id"] == "good").all()
    assert (written.loc[~written.intersects(shapely.buffer(bad, 2 * PIXEL_M)), "run_id"] == "partial").all()
