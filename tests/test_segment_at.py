"""Click-to-segment with the shipped centroid-pointer model: the building under each point of a
synthetic scene, seams included, into a GeoPackage; points on no building or outside every tile."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from footprints.cli import main
from footprints.geo.layouts import TileSet, find_tiles
from footprints.geo.stores import LocalStore
from footprints.geo.synth import scene_truth, write_scene
from footprints.models.registry import get_method


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> TileSet:
    store = LocalStore(tmp_path_factory.mktemp("scene"))
    write_scene(store.write_bytes, 4, 5, gsd_m=0.3)
    return find_tiles(store)


def seam_lines(tile_set: TileSet) -> shapely.Geometry:
    """The tiles' edges inside the scene, in longitude/latitude."""
    boxes = [shapely.box(*tile_set.info(t).bounds) for t in tile_set.tiles]
    outer = shapely.union_all(boxes).boundary
    return shapely.difference(shapely.union_all([b.boundary for b in boxes]), outer.buffer(1e-9))


def test_each_point_gets_the_outline_of_the_building_under_it(scene: TileSet, tmp_path: Path) -> None:
    truth = scene_truth(scene)
    seams = seam_lines(scene)
    area = truth.to_crs(truth.estimate_utm_crs()).area
    on_seam = truth[truth.intersects(seams) & (area > area.median())]
    inland = truth[~truth.intersects(seams)].sample(8, random_state=0)
    chosen = gpd.GeoDataFrame(
        np.concatenate([on_seam.head(4).values, inland.values]), columns=truth.columns, crs=truth.crs
    )
    assert len(on_seam) >= 4
    inside = shapely.point_on_surface(chosen.geometry.values)
    out = tmp_path / "at.gpkg"
    points = [f"--at={p.x:.7f},{p.y:.7f}" for p in inside]
    assert main(["-q", "segment-at", "--source", str(scene.store.root), *points, "--out", str(out)]) == 0
    found = gpd.read_file(out, layer="buildings_at", engine="pyogrio")
    assert found.crs == truth.crs
    metric = truth.estimate_utm_crs()
    ious = []
    for point, building in zip(inside, chosen.to_crs(metric).geometry, strict=True):
        # Matched by the point's position, to a tenth of a metre (the layer keeps what was typed).
        at = np.hypot(found["lon"] - point.x, found["lat"] - point.y) < 1e-6
        row = found[at]
        if row.empty:
            ious.append(0.0)
            continue
        outline = row.to_crs(metric).geometry.iloc[0]
        ious.append(outline.intersection(building).area / outline.union(building).area)
    ious = np.array(ious)
    # Buildings across a seam are drawn whole: the window reads every tile it covers.
    assert (ious[:4] >= 0.5).all(), ious
    assert (ious >= 0.5).mean() >= 0.75, ious


def test_a_point_on_no_building_is_said_so(
    scene: TileSet, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    truth = scene_truth(scene)
    minx, miny, maxx, maxy = truth.total_bounds
    grid = gpd.GeoSeries(
        gpd.points_from_xy(
            *(a.ravel() for a in np.meshgrid(np.linspace(minx, maxx, 15), np.linspace(miny, maxy, 15)))
        ),
        crs=truth.crs,
    )
    metric = truth.estimate_utm_crs()
    buildings = shapely.union_all(truth.to_crs(metric).geometry.values)
    far = grid[grid.to_crs(metric).distance(buildings) > 3]  # 3 m off any building
    lon, lat = far.iloc[0].x, far.iloc[0].y
    out = tmp_path / "none.gpkg"
    assert (
        main(["-q", "segment-at", "--source", str(scene.store.root), f"--at={lon},{lat}", "--out", str(out)])
        == 0
    )
    assert "no building here" in capsys.readouterr().out
    assert gpd.read_file(out, layer="buildings_at", engine="pyogrio").empty


def test_a_point_outside_every_tile_or_malformed_is_one_line(
    scene: TileSet, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "x.gpkg"
    for at in ("--at=10,10", "--at=10;10", "--at=200,10"):
        assert main(["-q", "segment-at", "--source", str(scene.store.root), at, "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1, error
        assert error.startswith("footprints: error:"), error
    assert not out.exists()


def test_a_checkpoint_without_a_pointer_network_is_refused(
    scene: TileSet, capsys: pytest.CaptureFixture
) -> None:
    vec2instance = get_method("vec2instance").checkpoint
    lon, lat = shapely.point_on_surface(scene_truth(scene).geometry.iloc[0]).coords[0]
    command = ["segment-at", "--source", str(scene.store.root), f"--at={lon},{lat}", "--out", "x.gpkg"]
    assert main([*command, "--model", str(vec2instance)]) == 2
    assert "segment-at needs centroid-pointer or pointer" in capsys.readouterr().err
