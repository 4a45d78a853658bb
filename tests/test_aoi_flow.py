"""The AOI flow end to end, on real components: tiles in a moto S3 server, a Dask LocalCluster
joined by a worker that offers a GPU resource, Prefect's test harness, and QGIS opening the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
import yaml
from distributed import Client, LocalCluster

from footprints.cli import main
from footprints.flows.aoi import aoi_flow
from footprints.geo.aoi import read_aoi
from footprints.geo.layouts import find_tiles
from footprints.geo.runs import RunRecord
from footprints.geo.scoring import score_footprints
from footprints.geo.stores import S3Options, open_store
from footprints.geo.synth import scene_truth, write_scene
from footprints.models.registry import get_method

QGIS_PYTHON = "/usr/bin/python3"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s3_scene(s3_endpoint: str) -> str:
    """A synthetic 2 x 2 tile AOI in a bucket of the moto server."""
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="aoi-flow")
    uri = "s3://aoi-flow/scene"
    store = open_store(uri, S3Options(endpoint_url=s3_endpoint))
    write_scene(store.write_bytes, 4, 5)
    return uri


@pytest.fixture(scope="module")
def worker_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The download cache of the cluster's workers, which inherit this process's environment."""
    cache = tmp_path_factory.mktemp("worker-cache")
    os.environ["FOOTPRINTS_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="module")
def gpu_cluster(worker_cache: Path) -> Iterator[tuple[str, str]]:
    """A LocalCluster with one plain worker, joined by a `dask worker` that offers GPU=1.

    Yields the scheduler address and the GPU worker's address.
    """
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                cluster.scheduler_address,
                "--nthreads",
                "1",
                "--resources",
                "GPU=1",
                "--no-dashboard",
                "--name",
                "gpu",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with Client(cluster.scheduler_address) as client:
                client.wait_for_workers(2, timeout=120)
                workers = client.scheduler_info(n_workers=-1)["workers"]
                gpu = next(a for a, w in workers.items() if w.get("resources", {}).get("GPU"))
            yield cluster.scheduler_address, gpu
        finally:
            worker.terminate()
            worker.wait(30)


@pytest.fixture(scope="module")
def top_row_aoi(s3_scene: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GeoPackage AOI in UTM over the top row of tiles only (the bottom row is outside)."""
    tile_set = find_tiles(open_store(s3_scene, S3Options(endpoint_url=s3_endpoint)))
    top = [tile_set.info(t) for t in tile_set.tiles[:2]]
    outline = shapely.box(*top[0].bounds).union(shapely.box(*top[1].bounds))
    aoi = gpd.GeoDataFrame(geometry=[outline], crs=top[0].crs).to_crs(32611)
    aoi["geometry"] = aoi.buffer(-5.0, join_style="mitre")
    # Chips reach --overlap pixels (96 x 0.3 m) beyond the AOI: keep it farther than that from
    # the bottom row, so that the bottom row is outside the AOI and its margin.
    minx, miny, maxx, maxy = aoi.total_bounds
    aoi["geometry"] = aoi.intersection(shapely.box(minx, miny + 35.0, maxx, maxy))
    path = tmp_path_factory.mktemp("aoi") / "top_row.gpkg"
    aoi.to_file(path, engine="pyogrio")
    return path


@pytest.fixture(scope="module")
def first_run(
    prefect_api: str,
    s3_scene: str,
    s3_endpoint: str,
    gpu_cluster: tuple[str, str],
    top_row_aoi: Path,
    worker_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[RunRecord, Path, Path]:
    """One run of the flow over the top row; returns its summary, output and the workers' cache."""
    out = tmp_path_factory.mktemp("out") / "buildings.gpkg"
    state = run_top_row(out, top_row_aoi, s3_scene, s3_endpoint, gpu_cluster[0], return_state=True)
    assert state.is_completed()
    return state.result(), out, worker_cache


def run_top_row(out: Path, aoi: Path, source: str, endpoint: str, cluster: str, **options: Any) -> Any:
    """The flow over the top-row AOI of the S3 scene on the test cluster, into ``out``."""
    return aoi_flow(
        aoi=str(aoi),
        source=source,
        out=str(out),
        chip_size=384,
        overlap=96,
        dask_address=cluster,
        s3=S3Options(endpoint_url=endpoint),
        progress=False,
        **options,
    )


def buildings(path: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(path, layer="buildings", engine="pyogrio")


@pytest.mark.slow
def test_run_finds_the_buildings_of_the_aoi(
    first_run: tuple[RunRecord, Path, Path], s3_scene: str, s3_endpoint: str, top_row_aoi: Path
) -> None:
    summary, out, _ = first_run
    found = buildings(out)
    assert len(found) == summary.buildings > 20
    assert found.crs.to_epsg() == 4326
    assert set(found.columns) >= {"id", "score", "area_m2", "method", "model_id", "source_tiles", "run_id"}
    assert found.geometry.is_valid.all()
    assert (found.geom_type == "Polygon").all()
    assert (found["run_id"] == summary.run_id).all()
    assert (found["method"] == "vec2instance").all()
    utm = found.to_crs(32611)
    assert np.allclose(utm.area, found["area_m2"], rtol=1e-3, atol=0.01)
    i, j = shapely.STRtree(utm.geometry.values).query(utm.geometry.values, predicate="intersects")
    assert (
        shapely.area(shapely.intersection(utm.geometry.values[i[i < j]], utm.geometry.values[j[i < j]])) <= 1
    ).all()

    aoi = gpd.read_file(top_row_aoi).to_crs(32611).geometry.iloc[0]
    truth = scene_truth(find_tiles(open_store(s3_scene, S3Options(endpoint_url=s3_endpoint))))
    truth_utm = truth.to_crs(32611)
    truth = truth[shapely.contains(aoi, shapely.point_on_surface(truth_utm.geometry.values))]
    assert score_footprints(truth, found, 0.3).overall["f1"] > 0.55


@pytest.mark.slow
def test_tiles_outside_the_aoi_are_never_downloaded(first_run: tuple[RunRecord, Path, Path]) -> None:
    summary, out, cache = first_run
    downloaded = sorted(p.name for p in cache.rglob("*.tif"))
    assert downloaded == [
        "RGB-PanSharpen_AOI_9_Synthetic_img1.tif",
        "RGB-PanSharpen_AOI_9_Synthetic_img2.tif",
    ]
    assert summary.tiles == 2
    sources = set(";".join(buildings(out)["source_tiles"]).split(";"))
    assert all(s.endswith(("img1.tif", "img2.tif")) for s in sources)


@pytest.mark.slow
def test_inference_runs_on_the_worker_with_a_gpu_resource(
    first_run: tuple[RunRecord, Path, Path], gpu_cluster: tuple[str, str]
) -> None:
    assert first_run[0].workers == [gpu_cluster[1]]


@pytest.mark.slow
def test_run_metadata_is_recorded(first_run: tuple[RunRecord, Path, Path], top_row_aoi: Path) -> None:
    summary, out, _ = first_run
    runs = pyogrio.read_dataframe(out, layer="runs")
    row = runs.iloc[-1]
    assert row["run_id"] == summary.run_id
    assert row["aoi"] == str(top_row_aoi)
    assert "EPSG:32611" in row["aoi_crs"]
    shipped = get_method("vec2instance").checkpoint
    assert shipped is not None
    assert row["model_sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert json.loads(row["settings"])["chip_size"] == 384
    assert set(json.loads(row["seconds"])) >= {"plan", "segment", "merge", "write"}
    assert "+g" in row["code_version"]  # the commit, as in checkpoints
    # One record feeds the table and the flow's return value: they cannot disagree.
    assert RunRecord.from_row(row.to_dict()) == summary


@pytest.mark.slow
def test_the_flow_logs_reach_the_prefect_api(first_run: tuple[RunRecord, Path, Path]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # the logs go out in batches; send what is queued
    summary = first_run[0]
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(summary.run_id)])))
    messages = [log.message for log in logs]
    # The flow's summary line, and a line of the tasks' own module loggers.
    assert summary.describe() in messages
    assert any(m.startswith(f"wrote {summary.buildings} buildings") for m in messages)
    assert any("tiles cover the AOI" in m for m in messages)


@pytest.mark.slow
def test_rerunning_into_the_same_output_does_not_duplicate(
    first_run: tuple[RunRecord, Path, Path],
    s3_scene: str,
    s3_endpoint: str,
    gpu_cluster: tuple[str, str],
    top_row_aoi: Path,
    tmp_path: Path,
) -> None:
    summary, out, _ = first_run
    again = tmp_path / "again.gpkg"
    shutil.copy(out, again)
    second = run_top_row(again, top_row_aoi, s3_scene, s3_endpoint, gpu_cluster[0])
    found = buildings(again)
    assert len(found) == summary.buildings == second.buildings
    assert set(found["run_id"]) == {second.run_id}
    assert len(pyogrio.read_dataframe(again, layer="runs")) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".again")]  # no temporary file left


@pytest.fixture(scope="module")
def qgis() -> str:
    probe = (
        subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True, check=False)
        if Path(QGIS_PYTHON).exists()
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("QGIS's Python bindings are not installed (Debian: python3-qgis); .ci/run installs them")
    return QGIS_PYTHON


@pytest.mark.slow
def test_qgis_opens_the_geopackage_with_its_style(
    first_run: tuple[RunRecord, Path, Path], qgis: str, tmp_path: Path
) -> None:
    summary, out, _ = first_run
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(runtime)}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [qgis, str(ROOT / "tests" / "qgis_open.py"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["valid"], report
    assert report["features"] == summary.buildings
    assert report["crs"] == "EPSG:4326"
    assert report["renderer"] == "graduatedSymbol"
    assert report["renderer_attribute"] == "score"
    assert report["geometries_valid"]
    assert report["spatial_index"] == 2
    assert report["messages"] == []
    warnings = [
        line for line in done.stderr.splitlines() if "warning" in line.lower() or "error" in line.lower()
    ]
    assert warnings == []


def test_cli_refuses_a_bad_aoi_up_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["-q", "run", "--aoi", "10,20,5,30", "--source", str(tmp_path), "--out", str(tmp_path / "x.gpkg")]
    )
    assert code == 2
    assert "10,20,5,30: a bbox needs minx < maxx and miny < maxy" in capsys.readouterr().err
    assert not (tmp_path / "x.gpkg").exists()


def test_the_shipped_deployments_aoi_is_in_the_repository() -> None:
    deployment = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"][0]
    area = read_aoi(str(ROOT / deployment["parameters"]["aoi"]))
    assert area.geometry.area > 0
