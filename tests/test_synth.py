"""Tests of the synthetic SpaceNet-2 scene generator."""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Geod, Transformer
from rasterio.features import rasterize
from shapely.geometry import Polygon, shape

from footprints.geo.layouts import find_tiles
from footprints.geo.stores import LocalStore
from footprints.geo.synth import SceneSummary, scene_truth, write_scene

AOI = "AOI_9_Synthetic"
ROOT = f"{AOI}_Train"
SEED = 11
TILES = 4
CSV_KEY = f"{ROOT}/summaryData/{ROOT}_Building_Solutions.csv"


def tif_key(n: int) -> str:
    return f"{ROOT}/RGB-PanSharpen/RGB-PanSharpen_{AOI}_img{n}.tif"


def geojson_key(n: int) -> str:
    return f"{ROOT}/geojson/buildings/buildings_{AOI}_img{n}.geojson"


def folder_writer(root: Path) -> Callable[[str, bytes], None]:
    def write(key: str, data: bytes) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return write


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@dataclass(frozen=True)
class Scene:
    root: Path
    summary: SceneSummary

    def features(self, n: int) -> list[dict]:
        return json.loads((self.root / geojson_key(n)).read_text())["features"]

    def csv_rows(self) -> list[dict[str, str]]:
        with (self.root / CSV_KEY).open(newline="") as f:
            return list(csv.DictReader(f))

    def pieces(self) -> dict[int, list[Polygon]]:
        """Building id -> its lon/lat polygons on all tiles."""
        found: dict[int, list[Polygon]] = {}
        for n in range(1, self.summary.tiles + 1):
            for feature in self.features(n):
                found.setdefault(feature["properties"]["building_id"], []).append(shape(feature["geometry"]))
        return found


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    root = tmp_path_factory.mktemp("scene")
    summary = write_scene(folder_writer(root), TILES, SEED)
    return Scene(root, summary)


def to_metres(geoms: list[Polygon]) -> list[Polygon]:
    """Project lon/lat polygons to a local equidistant projection, in metres."""
    lon, lat = shapely.union_all(geoms).centroid.coords[0]
    forward = Transformer.from_crs(
        "EPSG:4326", f"+proj=aeqd +lat_0={lat} +lon_0={lon} +datum=WGS84", always_xy=True
    )
    return [shapely.transform(g, lambda xy: np.column_stack(forward.transform(*xy.T))) for g in geoms]


def whole_buildings(scene: Scene) -> dict[int, Polygon]:
    return {i: shapely.union_all(parts) for i, parts in scene.pieces().items()}


def test_same_seed_gives_identical_files(scene: Scene, tmp_path: Path) -> None:
    write_scene(folder_writer(tmp_path), TILES, SEED)

    first, again = files_under(scene.root), files_under(tmp_path)
    assert first.keys() == again.keys()
    differing = [key for key in first if first[key] != again[key]]
    assert not differing, f"files differ between two runs with the same seed: {differing}"


def test_different_seed_gives_different_images(tmp_path: Path) -> None:
    write_scene(folder_writer(tmp_path / "a"), 1, SEED, tile_size=256)
    write_scene(folder_writer(tmp_path / "b"), 1, SEED + 1, tile_size=256)

    with rasterio.open(tmp_path / "a" / tif_key(1)) as a, rasterio.open(tmp_path / "b" / tif_key(1)) as b:
        differ = np.mean(a.read() != b.read())
    assert differ > 0.9


def test_files_are_at_spacenet_keys(scene: Scene) -> None:
    expected = {CSV_KEY} | {tif_key(n) for n in range(1, TILES + 1)}
    expected |= {geojson_key(n) for n in range(1, TILES + 1)}

    assert set(files_under(scene.root)) == expected
    assert scene.summary.tile_keys == tuple(tif_key(n) for n in range(1, TILES + 1))
    assert scene.summary.grid == (2, 2)
    assert scene.summary.aoi_name == AOI
    assert scene.summary.tiles == TILES
    assert scene.summary.buildings == len(scene.pieces())


def test_tiles_are_11_bit_rgb_geotiffs_at_30_cm(scene: Scene) -> None:
    geod = Geod(ellps="WGS84")
    for n in range(1, TILES + 1):
        with rasterio.open(scene.root / tif_key(n)) as src:
            assert (src.width, src.height, src.count) == (650, 650, 3)
            assert src.dtypes == ("uint16",) * 3
            assert src.crs.to_epsg() == 4326
            assert src.compression.name == "deflate"
            pixels = src.read()
            t = src.transform
            lon, lat = t @ (325, 325)
            _, _, width_m = geod.inv(lon, lat, lon + t.a, lat)
            _, _, height_m = geod.inv(lon, lat, lon, lat + t.e)
        assert (t.b, t.d) == (0, 0), "tiles must be north-up"
        assert t.a > 0
        assert t.e < 0
        assert width_m == pytest.approx(0.3, rel=0.01)
        assert height_m == pytest.approx(0.3, rel=0.01)
        assert pixels.min() >= 1
        assert pixels.max() <= 2047
        low, high = np.percentile(pixels, [1, 99])
        assert low < 400, "values should spread over the 11-bit range"
        assert high > 1200, "values should spread over the 11-bit range"


def test_adjacent_tiles_abut(scene: Scene) -> None:
    bounds = {}
    for n in range(1, TILES + 1):
        with rasterio.open(scene.root / tif_key(n)) as src:
            bounds[n] = src.bounds

    # 1 2 / 3 4: right edge of 1 is the left edge of 2, bottom of 1 the top of 3.
    for left, right in ((1, 2), (3, 4)):
        assert bounds[left].right == pytest.approx(bounds[right].left, abs=1e-9)
        assert bounds[left].top == pytest.approx(bounds[right].top, abs=1e-9)
    for upper, lower in ((1, 3), (2, 4)):
        assert bounds[upper].bottom == pytest.approx(bounds[lower].top, abs=1e-9)
        assert bounds[upper].left == pytest.approx(bounds[lower].left, abs=1e-9)


def test_pixels_run_on_across_seams(scene: Scene) -> None:
    tiles = {}
    for n in range(1, TILES + 1):
        with rasterio.open(scene.root / tif_key(n)) as src:
            tiles[n] = src.read().astype(np.float64)

    def step(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b).mean())

    # Across a seam, neighbouring pixels differ no more than neighbouring pixels inside a tile.
    across_x = step(tiles[1][:, :, -1], tiles[2][:, :, 0])
    inside_x = step(tiles[1][:, :, -2], tiles[1][:, :, -1])
    across_y = step(tiles[1][:, -1], tiles[3][:, 0])
    inside_y = step(tiles[1][:, -2], tiles[1][:, -1])
    assert across_x < 1.5 * inside_x
    assert across_y < 1.5 * inside_y


def test_csv_pixel_polygons_match_geojson(scene: Scene) -> None:
    rows = scene.csv_rows()
    assert list(rows[0]) == ["ImageId", "BuildingId", "PolygonWKT_Pix", "PolygonWKT_Geo"]
    for n in range(1, TILES + 1):
        image_rows = [r for r in rows if r["ImageId"] == f"{AOI}_img{n}"]
        features = scene.features(n)
        if not features:
            assert [(r["BuildingId"], r["PolygonWKT_Pix"], r["PolygonWKT_Geo"]) for r in image_rows] == [
                ("-1", "POLYGON EMPTY", "POLYGON EMPTY")
            ]
            continue
        assert [int(r["BuildingId"]) for r in image_rows] == list(range(1, len(features) + 1))
        with rasterio.open(scene.root / tif_key(n)) as src:
            t = src.transform
        for row, feature in zip(image_rows, features, strict=True):
            pix = shapely.from_wkt(row["PolygonWKT_Pix"])
            assert shapely.get_coordinates(pix).min() >= 0
            assert shapely.get_coordinates(pix).max() <= 650
            geo = shape(feature["geometry"])
            via_transform = shapely.affinity.affine_transform(pix, [t.a, t.b, t.d, t.e, t.xoff, t.yoff])
            iou = via_transform.intersection(geo).area / via_transform.union(geo).area
            assert iou > 0.99, f"img{n} building {row['BuildingId']}: IoU {iou:.4f}"
            assert shapely.from_wkt(row["PolygonWKT_Geo"]).equals(geo)


def test_tile_without_buildings_gets_placeholder_row(tmp_path: Path) -> None:
    # Nine 19 m tiles: some of them are bound to hold no building.
    summary = write_scene(folder_writer(tmp_path), 9, 3, tile_size=64)

    empty = [
        n
        for n in range(1, summary.tiles + 1)
        if not json.loads((tmp_path / geojson_key(n)).read_text())["features"]
    ]
    assert empty, "expected at least one tile without buildings in this scene"
    with (tmp_path / CSV_KEY).open(newline="") as f:
        rows = list(csv.reader(f))
    for n in empty:
        assert [r for r in rows if r[0] == f"{AOI}_img{n}"] == [
            [f"{AOI}_img{n}", "-1", "POLYGON EMPTY", "POLYGON EMPTY"]
        ]


def test_buildings_cross_seams_in_one_piece(scene: Scene) -> None:
    pieces = scene.pieces()
    crossing = {i: parts for i, parts in pieces.items() if len(parts) > 1}

    assert crossing, "no building crosses a tile seam"
    for i, parts in crossing.items():
        union = shapely.union_all(parts)
        assert union.geom_type == "Polygon", f"building {i} falls apart into {union.geom_type}"
    for n in range(1, TILES + 1):
        for feature in scene.features(n):
            props = feature["properties"]
            assert props["partialBuilding"] == int(props["building_id"] in crossing)


def test_buildings_vary_in_size_and_shape_and_never_overlap(scene: Scene) -> None:
    whole = whole_buildings(scene)
    ids = sorted(whole)
    metres = dict(zip(ids, to_metres([whole[i] for i in ids]), strict=True))

    assert all(g.geom_type == "Polygon" and g.is_valid for g in metres.values())
    sides = []
    for g in metres.values():
        ring = np.array(shapely.minimum_rotated_rectangle(g).exterior.coords)
        sides.append(sorted(np.hypot(*np.diff(ring[:3], axis=0).T)))
    short, long = np.array(sides).T
    assert 3.9 <= short.min() <= 4.5, f"smallest building side {short.min():.2f} m"
    assert long.max() >= 50.0, f"largest building side {long.max():.2f} m"

    unclipped = [metres[i] for i, parts in scene.pieces().items() if len(parts) == 1]
    corners = [len(shapely.simplify(g, 1e-3).exterior.coords) - 1 for g in unclipped]
    assert max(corners) > 4, "all buildings are rectangles"

    geoms = np.array([metres[i] for i in ids], dtype=object)
    left, right = shapely.STRtree(geoms).query(geoms, predicate="dwithin", distance=1e-3)
    pairs = left < right
    overlap = shapely.area(shapely.intersection(geoms[left[pairs]], geoms[right[pairs]]))
    assert pairs.any(), "no two buildings share a wall"
    assert overlap.max() < 0.01, f"buildings overlap by up to {overlap.max():.4f} m^2"


def test_brightness_threshold_does_not_find_buildings(scene: Scene) -> None:
    rows = scene.csv_rows()
    brightness, truth = [], []
    for n in range(1, TILES + 1):
        with rasterio.open(scene.root / tif_key(n)) as src:
            brightness.append(src.read().astype(np.float64).mean(axis=0).ravel())
        polygons = [
            shapely.from_wkt(r["PolygonWKT_Pix"])
            for r in rows
            if r["ImageId"] == f"{AOI}_img{n}" and r["BuildingId"] != "-1"
        ]
        mask = rasterize(polygons, out_shape=(650, 650), dtype="uint8") if polygons else np.zeros((650, 650))
        truth.append(mask.ravel() > 0)
    level, mask = np.concatenate(brightness), np.concatenate(truth)

    best, best_at = 0.0, ""
    for t, above in itertools.product(np.quantile(level, np.linspace(0.02, 0.98, 49)), (True, False)):
        found = level > t if above else level < t
        iou = (found & mask).sum() / (found | mask).sum()
        if iou > best:
            best, best_at = iou, f"{'>' if above else '<'} {t:.0f}"
    assert best < 0.5, f"threshold {best_at} finds buildings with IoU {best:.3f}"


def test_the_same_ground_at_half_the_pixel_size_has_the_same_buildings(tmp_path: Path) -> None:
    # What `footprints demo --pixel-size` relies on to compare a model at two pixel sizes.
    truths = []
    for gsd_m, side in ((0.3, 300), (0.15, 600)):
        store = LocalStore(tmp_path / str(gsd_m))
        write_scene(store.write_bytes, 2, SEED, tile_size=side, gsd_m=gsd_m)
        truth = scene_truth(find_tiles(store))
        truths.append(truth.to_crs(truth.estimate_utm_crs()))
    coarse, fine = truths
    assert len(coarse) == len(fine) > 5
    union = coarse.geometry.union_all()
    assert union.symmetric_difference(fine.geometry.union_all()).area < 1e-6 * union.area


def test_progress_bar_counts_tiles(capsys: pytest.CaptureFixture[str]) -> None:
    write_scene(lambda key, data: None, 2, SEED, tile_size=64, progress=True)

    assert "2/2" in capsys.readouterr().err


@pytest.mark.parametrize(("tiles", "tile_size", "gsd_m"), [(0, 650, 0.3), (1, 10, 0.3), (1, 650, 0.0)])
def test_rejects_impossible_scenes(tiles: int, tile_size: int, gsd_m: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        write_scene(lambda key, data: None, tiles, SEED, tile_size=tile_size, gsd_m=gsd_m)
