"""SpaceNet layouts and labels on the real samples in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from footprints.geo.labels import read_label_file
from footprints.geo.layouts import find_tiles
from footprints.geo.raster import normalise, read_window, stretch_limits
from footprints.geo.rasterize import instance_mask
from footprints.geo.stores import LocalStore

# (folder, product, layout, tiles, bands, dtype, CRS, building polygons stated in data/README.md)
SAMPLES = [
    ("spacenet/rio_sn1_chips_train", None, "plain", 54, 3, "uint8", "EPSG:4326", 1757),
    ("spacenet/rio_sn1_public", "3band", "spacenet1", 10, 3, "uint8", "EPSG:4326", 120),
    ("spacenet/rio_sn1_public", "8band", "spacenet1", 10, 8, "uint16", "EPSG:4326", 120),
    ("spacenet/atlanta_sn4_pan_sample", None, "plain", 1, 1, "uint16", "EPSG:32616", 43),
    ("oam_banepa", None, "plain", 48, 3, "uint8", "EPSG:4326", None),
]


@pytest.mark.parametrize(
    ("folder", "product", "layout", "tiles", "bands", "dtype", "crs", "buildings"),
    SAMPLES,
    ids=[f"{s[0]}-{s[1]}" for s in SAMPLES],
)
def test_every_real_sample_reads_and_rasterises(
    shared_data: Path,
    folder: str,
    product: str | None,
    layout: str,
    tiles: int,
    bands: int,
    dtype: str,
    crs: str,
    buildings: int | None,
) -> None:
    tile_set = find_tiles(LocalStore(shared_data / folder), product=product)
    assert tile_set.layout == layout
    assert len(tile_set.tiles) == tiles
    total = 0
    for tile in tile_set.tiles:
        info = tile_set.info(tile)
        assert (info.count, info.dtype, info.crs.to_string()) == (bands, dtype, crs)
        image = read_window(tile_set.image_path(tile))
        x = normalise(image)
        assert x.dtype == np.float32
        assert x.shape == (bands, info.height, info.width)
        assert 0.0 <= x.min() < x.max() <= 1.0
        polygons = tile_set.pixel_labels(tile)
        mask = instance_mask(polygons, (info.height, info.width))
        # Every building wide enough to hold a pixel centre (a disc of radius sqrt(2)/2 fits in
        # it) gets its own id in the mask; slivers along a chip edge may hold none.
        wide = {i + 1 for i, p in enumerate(polygons) if not p.buffer(-0.71).is_empty}
        assert wide <= set(np.unique(mask).tolist())
        total += len(polygons)
    if buildings is not None:
        # A few labels are degenerate slivers or lie outside their chip; those are dropped.
        assert buildings * 0.99 <= total <= buildings
    else:
        assert total > 1000


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@pytest.mark.slow
def test_lonlat_and_pixel_labels_agree_on_rio_chips(shared_data: Path) -> None:
    tile_set = find_tiles(LocalStore(shared_data / "spacenet/rio_sn1_chips_train"))
    summary = tile_set.summary_labels()
    from_geojson, from_csv = [], []
    for tile in tile_set.tiles:
        info = tile_set.info(tile)
        shape = (info.height, info.width)
        lonlat = instance_mask(tile_set.pixel_labels(tile), shape) > 0
        if not lonlat.any():
            continue
        pix_file = read_label_file(tile_set.store.local_path(tile.pixel_label_key))
        from_geojson.append(mask_iou(lonlat, instance_mask(pix_file.geometry.to_numpy(), shape) > 0))
        rows = summary.geometry[summary["image_id"] == tile.image_id].to_numpy()
        from_csv.append(mask_iou(lonlat, instance_mask(rows, shape) > 0))
    assert len(from_geojson) >= 30
    assert np.mean(from_geojson) >= 0.9, f"mean IoU against _PIX.geojson {np.mean(from_geojson):.3f}"
    assert np.mean(from_csv) >= 0.9, f"mean IoU against Summary.csv {np.mean(from_csv):.3f}"


def test_summary_csv_placeholders_mark_empty_images(shared_data: Path) -> None:
    tile_set = find_tiles(LocalStore(shared_data / "spacenet/rio_sn1_public"))
    summary = tile_set.summary_labels()
    empty = summary[summary["building_id"] == -1]
    assert sorted(empty["image_id"]) == [f"013022223130_Public_img{i}" for i in (1, 2, 3)]
    assert empty.geometry.is_empty.all()
    buildings = summary[~summary.geometry.is_empty]
    assert buildings.geometry.is_valid.all()
    assert len(buildings) == 120


def test_plain_folder_with_same_stem_labels_and_pixel_labels(shared_data: Path) -> None:
    tile_set = find_tiles(LocalStore(shared_data / "spacenet/rio_sn1_chips_train"))
    tile = tile_set.tiles[0]
    assert tile.label_key == tile.image_id + ".geojson"
    assert tile.pixel_label_key == tile.image_id + "_PIX.geojson"
    assert tile_set.shared_label_key is None


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_stretch_limits_are_numpy_s_percentiles_to_the_bit(dtype: type) -> None:
    rng = np.random.default_rng(0)
    for trial in range(40):
        rows, cols = rng.integers(1, 60, 2)
        top = np.iinfo(dtype).max if dtype != np.float32 else 1e4
        image = rng.integers(0, min(top, 2048) if trial % 2 else top, (3, rows, cols)).astype(dtype)
        valid = rng.random((rows, cols)) > 0.3 if trial % 3 else None
        pixels = image.reshape(3, -1) if valid is None else image.reshape(3, -1)[:, valid.reshape(-1)]
        for low, high in ((2.0, 98.0), (0.0, 100.0), (13.7, 61.1)):
            found = stretch_limits(image, valid, low, high)
            if pixels.shape[1] == 0:
                assert found is None
                continue
            assert found is not None
            expected = np.percentile(pixels, [low, high], axis=1).astype(np.float32)
            np.testing.assert_array_equal(found[0], expected[0])
            np.testing.assert_array_equal(found[1], expected[1])
