"""What write_buildings makes of a run's buildings and the file's earlier ones.

Each building is written once, as one valid polygon in the output CRS, with the id it had before
when it is unchanged; buildings the run could not see stay as they were.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from records import run_record

from footprints.geo.geopackage import write_buildings

UTM = "EPSG:32611"
AOI_A = shapely.box(500_000, 4_000_000, 500_100, 4_000_100)
AOI_B = shapely.box(500_100, 4_000_000, 500_200, 4_000_100)  # shares AOI_A's eastern edge


def _table(boxes: list[tuple[float, float, float, float]], tiles: str = "tile.tif") -> gpd.GeoDataFrame:
    """Buildings as boxes (minx, miny, maxx, maxy) in UTM, found in ``tiles``."""
    geometry = [shapely.box(*b) for b in boxes]
    return gpd.GeoDataFrame(
        {
            "score": 0.9,
            "area_m2": shapely.area(geometry),
            "method": "blocks",
            "model_id": "blocks@test",
            "source_tiles": tiles,
            "run_id": "",
        },
        geometry=geometry,
        crs=UTM,
    )


def _write(
    path: Path, run_id: str, table: gpd.GeoDataFrame, aoi: shapely.Geometry, **record: list[str]
) -> None:
    run = run_record(path, run_id, UTM)
    for name, value in record.items():
        setattr(run, name, value)
    write_buildings(path, table.assign(run_id=run_id), aoi, run)


def _read(path: Path) -> gpd.GeoDataFrame:
    return pyogrio.read_dataframe(path, layer="buildings")


def _largest_overlap_m2(found: gpd.GeoDataFrame) -> float:
    geometry = found.to_crs(UTM).geometry.to_numpy()
    a, b = shapely.STRtree(geometry).query(geometry, predicate="intersects")
    pairs = a < b
    return float(shapely.area(shapely.intersection(geometry[a[pairs]], geometry[b[pairs]])).max(initial=0.0))


BORDER = (500_094.0, 4_000_040.0, 500_104.0, 4_000_050.0)  # centre x 500099: AOI A's, 4 m into B


def test_a_border_building_found_by_both_neighbouring_runs_is_written_once(tmp_path: Path) -> None:
    path = tmp_path / "buildings.gpkg"
    _write(path, "a", _table([(500_010, 4_000_010, 500_020, 4_000_020), BORDER]), AOI_A)
    # B's run sees the border building 2 m further east (centre 500101, in B) and a neighbour
    # whose outline runs 1 m into it.
    again = (500_096.0, 4_000_040.0, 500_106.0, 4_000_050.0)
    neighbour = (500_103.0, 4_000_041.0, 500_113.0, 4_000_049.0)
    _write(path, "b", _table([again, neighbour, (500_150, 4_000_010, 500_160, 4_000_020)]), AOI_B)

    found = _read(path)
    assert len(found) == 4
    assert (found["run_id"] == "a").sum() == 2
    assert _largest_overlap_m2(found) <= 1.0
    # The neighbour is cut back to where the earlier building is not; its area is the rest.
    cut = found.geometry[shapely.intersects(found.geometry.to_numpy(), shapely.Point(500_110, 4_000_045))]
    assert len(cut) == 1
    assert abs(cut.iloc[0].area - (80 - 8)) < 1e-6
    assert found["id"].is_unique


def test_rerunning_an_aoi_keeps_the_ids_of_its_unchanged_buildings(tmp_path: Path) -> None:
    path = tmp_path / "buildings.gpkg"
    boxes = [(500_010.0 + 20 * i, 4_000_010.0, 500_018.0 + 20 * i, 4_000_018.0) for i in range(4)]
    _write(path, "first", _table(boxes), AOI_A)
    first = _read(path)
    # The rerun finds the first three again (one moved by 0.5 m), not the fourth, and a new one.
    moved = (boxes[2][0] + 0.5, boxes[2][1], boxes[2][2] + 0.5, boxes[2][3])
    new = (500_050.0, 4_000_060.0, 500_060.0, 4_000_070.0)
    _write(path, "again", _table([new, boxes[1], boxes[0], moved]), AOI_A)
    again = _read(path)

    def id_at(frame: gpd.GeoDataFrame, box: tuple[float, float, float, float]) -> int:
        hit = shapely.intersects(frame.geometry.to_numpy(), shapely.box(*box).centroid)
        assert hit.sum() == 1
        return int(frame["id"][hit].iloc[0])

    for before, now in ((boxes[0], boxes[0]), (boxes[1], boxes[1]), (boxes[2], moved)):
        assert id_at(again, now) == id_at(first, before)
    assert id_at(again, new) > first["id"].max()  # a building's id is never given to another
    assert len(again) == 4


def test_an_outline_that_reprojection_breaks_is_written_valid(tmp_path: Path) -> None:
    # A roof with a courtyard whose corner touches the roof's northern edge: valid in UTM, but in
    # lon/lat the corner lands a hair beyond the edge.
    roof = shapely.Polygon(
        [(500_000, 4_000_000), (500_040, 4_000_000), (500_040, 4_000_040), (500_000, 4_000_040)],
        [[(500_020, 4_000_040), (500_019, 4_000_038), (500_021, 4_000_038)]],
    )
    table = gpd.GeoDataFrame(
        {"score": [0.9], "area_m2": [roof.area], "method": "blocks", "model_id": "m", "source_tiles": "t"},
        geometry=[roof],
        crs=UTM,
    ).to_crs("EPSG:4326")
    assert roof.is_valid
    assert not table.geometry.iloc[0].is_valid  # the case this test is about
    path = tmp_path / "buildings.gpkg"
    run = run_record(path, "lonlat", "EPSG:4326")
    write_buildings(path, table.assign(run_id="lonlat"), shapely.box(-180, -90, 180, 90), run)

    found = _read(path)
    assert len(found) == 1
    assert found.geometry.is_valid.all()
    assert found.geometry.iloc[0].geom_type == "Polygon"
    assert abs(found.to_crs(UTM).area.iloc[0] - roof.area) < 0.01


def test_buildings_from_a_tile_the_run_could_not_open_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "buildings.gpkg"
    good = (500_010.0, 4_000_010.0, 500_020.0, 4_000_020.0)
    from_bad = (500_060.0, 4_000_060.0, 500_070.0, 4_000_070.0)
    _write(path, "first", _table([good]), AOI_A)
    _write(path, "second", _table([from_bad], tiles="bad.tif;tile.tif"), AOI_A)
    _write(path, "third", _table([good]), AOI_A, unreadable_tiles=["bad.tif"])

    found = _read(path)
    assert sorted(found["run_id"]) == ["second", "third"]
    assert np.isclose(found.area.sum(), 200.0)
