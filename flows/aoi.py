"""The AOI inference flow: the product's main job.

AOI -> tiles under it -> chip grid -> Dask workers (read, segment, vectorise) -> dedup across chips
and seams -> GeoPackage. Runs ad hoc (``footprints run``, or ``aoi_flow(...)`` from Python) and as
a scheduled deployment (``prefect.yaml``).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import cast

import geopandas as gpd
import shapely
from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Failed

from footprints import code_version
from footprints.geo.errors import InputError, PartialRunError, StoreError
from footprints.geo.outputs import open_output
from footprints.geo.runs import DEFAULTS, RunRecord, RunSettings
from footprints.geo.stores import S3Options
from footprints.tasks.chip_work import Vectorising
from footprints.tasks.cluster import dask_cluster
from footprints.tasks.inference import (
    chip_batches,
    load_aoi,
    load_model,
    merge_buildings,
    plan_run,
    publish_output,
    segment_chips,
    write_geopackage,
)
from footprints.tasks.preflight import refused_run
from footprints.tasks.resume import FinishedBatches, batches_key
from footprints.tasks.worker_server import start_worker_server

log = logging.getLogger(__name__)

# Writes of an S3 output that may lose the race to another run's before this run gives up.
PUBLISH_TRIES = 5


@flow(name="aoi-footprints", log_prints=True)
def aoi_flow(
    aoi: str,
    source: str,
    out: str,
    model: str | None = None,
    method: str | None = None,
    aoi_crs: str = "EPSG:4326",
    crs: str = DEFAULTS.crs,
    chip_size: int = DEFAULTS.chip_size,
    overlap: int = DEFAULTS.overlap,
    batch_size: int = DEFAULTS.batch_size,
    min_area_m2: float = DEFAULTS.min_area_m2,
    simplify_m: float = DEFAULTS.simplify_m,
    regularise: bool = DEFAULTS.regularise,
    dask_address: str | None = None,
    dask_workers: int | None = None,
    s3: S3Options = S3Options(),
    progress: bool = True,
) -> RunRecord:
    """Find the buildings of an area of interest and write them to a GeoPackage.

    Args:
        aoi: ``minx,miny,maxx,maxy`` (in ``aoi_crs``) or a GeoJSON / GeoPackage of polygons.
        source: Folder or ``s3://`` prefix of tiles, in any layout geo.layouts reads.
        out: The GeoPackage, a file or ``s3://bucket/key.gpkg``; buildings of earlier runs
            inside this AOI are replaced. An S3 object is replaced whole once written.
        model: Checkpoint of a trained method; None takes the method's shipped model.
        method: The method expected of the checkpoint (checked); None takes the checkpoint's,
            or the project's default method when no checkpoint is named.
        aoi_crs: CRS of a bbox AOI.
        crs: CRS of the output (any EPSG code).
        chip_size: Chip side in pixels of the imagery.
        overlap: Pixels shared by neighbouring chips; buildings up to this size are seen whole
            by some chip, larger ones are joined from fragments.
        batch_size: Chips per model call.
        min_area_m2: Outlines smaller than this are dropped as slivers.
        simplify_m: Simplification tolerance in metres (0 keeps the pixel staircase).
        regularise: Square outlines to their dominant direction.
        dask_address: Scheduler of an existing Dask cluster; None starts a LocalCluster.
        dask_workers: Worker processes of the LocalCluster; None: one per GPU, else one per core
            up to 8.
        s3: How to reach an S3 source.
        progress: Show a progress bar.

    Returns:
        The run's record, as the GeoPackage's ``runs`` table holds it.

    Raises:
        InputError: An input cannot be used (checked before any work, or found while planning:
            no tile under the AOI); nothing was written.
        PartialRunError: Some chips could not read a tile, after retries. The rest of the AOI
            was written and earlier buildings where tiles went unread were kept; the ``runs``
            row names the chips and tiles.
    """
    # Every input is checked before any work, and a refusal is not retried.
    refused = refused_run(
        aoi=aoi, source=source, out=out, model=model, method=method, aoi_crs=aoi_crs, crs=crs,
        chip_size=chip_size, overlap=overlap, batch_size=batch_size, min_area_m2=min_area_m2,
        simplify_m=simplify_m, dask_workers=dask_workers, dask_address=dask_address,
    )  # fmt: skip
    if refused is not None:
        return cast(RunRecord, refused)
    if dask_address is None:  # the local cluster's workers are ready sooner for it (a second or two)
        start_worker_server()
    settings = RunSettings(crs, chip_size, overlap, batch_size, min_area_m2, simplify_m, regularise)
    started_at = datetime.now(UTC)
    seconds: dict[str, float] = {}

    clock = time.perf_counter()
    area = load_aoi(aoi, aoi_crs)
    checkpoint = load_model(model, method)
    try:
        output = open_output(out, crs, s3)
        plan = plan_run(area, source, s3, chip_size, overlap)
    except InputError as error:  # e.g. no tile under the AOI: one line, as for other bad input
        return cast(RunRecord, Failed(message=str(error), data=error))
    vectorising = Vectorising(area.utm_crs(), min_area_m2, simplify_m, regularise)
    seconds["plan"] = time.perf_counter() - clock

    clock = time.perf_counter()
    batches = chip_batches(plan, batch_size)
    finished = FinishedBatches.beside(output.path, batches_key(plan, batches, checkpoint.sha256, vectorising))
    with dask_cluster(dask_address, dask_workers) as (address, threads):
        segmented = segment_chips(
            plan, checkpoint, source, s3, vectorising, address, batches, progress, threads, finished
        )
    seconds["segment"] = time.perf_counter() - clock
    seconds |= {f"worker_{k}": v for k, v in segmented.seconds.items()}

    clock = time.perf_counter()
    buildings = merge_buildings(segmented, plan, area, vectorising)
    seconds["merge"] = time.perf_counter() - clock

    run = RunRecord(
        run_id=str(flow_run.get_id() or uuid.uuid4()),
        started=started_at.isoformat(timespec="seconds"),
        out=str(out),
        aoi=area.label,
        aoi_wkt=shapely.to_wkt(area.geometry),
        aoi_crs=area.crs.to_string(),
        source=source,
        model=checkpoint.source,
        model_id=checkpoint.model_id,
        model_sha256=checkpoint.sha256,
        method=checkpoint.method,
        code_version=code_version(),
        settings=settings,
        tiles=len(plan.tiles),
        chips=len(plan.chips),
        skipped_chips=segmented.skipped,
        errors=[*plan.unreadable.values(), *segmented.errors],
        failed_tiles=segmented.failed_tiles,
        failed_chips=segmented.failed_chips,
        unreadable_tiles=sorted(plan.unreadable),
        resumed_batches=segmented.resumed,
        area_km2=plan.covered_km2(vectorising.metric_crs),
        seconds=seconds,
        workers=sorted(segmented.workers),
    )
    unread = gpd.GeoSeries([segmented.unread], crs=vectorising.metric_crs)
    for _ in range(PUBLISH_TRIES):
        record = write_geopackage(buildings, area, run, output.path, unread)
        if publish_output(output):
            break
    else:
        raise StoreError(out, f"other runs kept writing it: {PUBLISH_TRIES} uploads found it changed")
    log.info(record.describe())
    if not record.partial:
        finished.clear()
        return record
    # A partial run's finished batches are kept, so that its rerun reads only the missing chips.
    # It has written what it read; a returned Failed state ends the flow run Failed and makes
    # the call raise its exception, without the traceback Prefect logs for one raised here.
    error = PartialRunError(record.out, record.partial_message())
    return cast(RunRecord, Failed(message=str(error), data=error))
