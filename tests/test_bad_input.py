"""Bad input: each fault gives one error that names the file or object and the cause."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from footprints.cli import main
from footprints.geo.errors import InputError, StoreError
from footprints.geo.labels import read_label_file, read_summary_csv
from footprints.geo.raster import raster_info, read_window
from footprints.geo.stores import S3Options, S3Store


def write_tif(path: Path, crs: str | None = "EPSG:4326", size: int = 512) -> Path:
    image = np.random.default_rng(0).integers(0, 2047, (3, size, size), dtype=np.uint16)
    with rasterio.open(
        path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint16", crs=crs,
        transform=from_origin(-115.2, 36.2, 3e-6, 3e-6), compress="deflate",
    ) as dst:  # fmt: skip
        dst.write(image)
    return path


def test_truncated_geotiff(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "truncated.tif")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    raster_info(path)  # the header is intact; the pixels are not
    with pytest.raises(
        InputError, match=r"truncated\.tif: cannot read pixels, truncated or corrupt\?"
    ) as error:
        read_window(path)
    assert error.value.source == str(path)


def test_tile_without_crs(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "no_crs.tif", crs=None)
    with pytest.raises(InputError, match=r"no_crs\.tif: the raster has no CRS"):
        raster_info(path)


def test_label_file_that_is_not_geojson(tmp_path: Path) -> None:
    path = tmp_path / "labels.geojson"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(InputError, match=r"labels\.geojson: not a readable GeoJSON"):
        read_label_file(path)


def test_self_intersecting_polygon_is_repaired_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bowtie.geojson"
    bowtie = [[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]
    features = [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [bowtie]}}
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    with caplog.at_level(logging.INFO):
        frame = read_label_file(path)
    assert len(frame) == 1
    building = frame.geometry.iloc[0]
    assert building.is_valid
    assert building.area == pytest.approx(50.0)  # both triangles of the bowtie, as one building
    assert any("bowtie.geojson: repaired 1 invalid polygon" in r.getMessage() for r in caplog.records)


def test_summary_csv_with_bad_wkt_or_columns(tmp_path: Path) -> None:
    bad_wkt = tmp_path / "bad_wkt.csv"
    bad_wkt.write_text('ImageId,BuildingId,PolygonWKT_Pix\nimg1,1,"POLYGON ((0 0, 1 1"\n')
    with pytest.raises(InputError, match=r"bad_wkt\.csv: a PolygonWKT_Pix value is not valid WKT"):
        read_summary_csv(bad_wkt)
    no_columns = tmp_path / "no_columns.csv"
    no_columns.write_text("id,wkt\n1,POLYGON EMPTY\n")
    with pytest.raises(InputError, match=r"no_columns\.csv: missing column\(s\) ImageId, BuildingId"):
        read_summary_csv(no_columns)
    geometry = read_summary_csv(_bowtie_csv(tmp_path)).geometry.iloc[0]
    assert geometry.is_valid
    assert shapely.area(geometry) == pytest.approx(50.0)


def _bowtie_csv(tmp_path: Path) -> Path:
    path = tmp_path / "bowtie.csv"
    path.write_text(
        'ImageId,BuildingId,PolygonWKT_Pix\nimg1,1,"POLYGON ((0 0 0, 10 10 0, 10 0 0, 0 10 0, 0 0 0))"\n'
    )
    return path


def test_missing_s3_object(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    store = S3Store(f"s3://{s3_bucket}/tiles", S3Options(endpoint_url=s3_endpoint), tmp_path)
    with pytest.raises(StoreError, match=rf"s3://{s3_bucket}/tiles/img9\.tif: no such object"):
        store.local_path("img9.tif")
    with pytest.raises(StoreError, match=r"s3://no-such-bucket.*: no such bucket"):
        S3Store("s3://no-such-bucket", S3Options(endpoint_url=s3_endpoint), tmp_path).list()


def test_wrong_credentials(s3_endpoint_checking_credentials: str, tmp_path: Path) -> None:
    store = S3Store("s3://tiles", S3Options(endpoint_url=s3_endpoint_checking_credentials), tmp_path)
    with pytest.raises(StoreError, match=r"s3://tiles/.*: .*wrong credentials"):
        store.list()
    with pytest.raises(StoreError, match=r"s3://tiles/a\.tif: access denied \(wrong credentials"):
        store.local_path("a.tif")


@pytest.mark.slow
def test_unreachable_endpoint(tmp_path: Path, free_port: int) -> None:
    endpoint = f"http://127.0.0.1:{free_port}"
    store = S3Store("s3://tiles", S3Options(endpoint_url=endpoint), tmp_path)
    with pytest.raises(StoreError, match=rf"s3://tiles/img1\.tif: cannot reach {endpoint}"):
        store.local_path("img1.tif")


def test_cli_reports_one_line_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "truth.geojson"
    labels.write_text("not json at all")
    code = main(["score", "--truth", str(labels), "--proposals", str(labels)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"footprints: error: {labels}: not a readable GeoJSON")
    assert "Traceback" not in err
