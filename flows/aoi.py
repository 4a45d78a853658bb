"""The AOI inference flow: the product's main job.

AOI -> tiles under it -> chip grid -> Dask workers (read, segment, vectorise) -> dedup across chips
and seams -> GeoPackage. Runs ad hoc (``footprints run``, or ``aoi_flow(...)`` from Python) and as
a scheduled deployment (``prefect.yaml``).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from distributed import LocalCluster
from prefect import flow
from prefect.runtime import flow_run

from footprints import __version__
from footprints.geo.stores import S3Options
from footprints.models.registry import DEFAULT_MODEL
from footprints.tasks.chip_work import Vectorising
from footprints.tasks.inference import (
    load_aoi,
    load_model,
    merge_buildings,
    plan_run,
    segment_chips,
    write_geopackage,
)

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What an AOI run did.

    Attributes:
        out: The GeoPackage written.
        run_id: The run's id (the Prefect flow run's, when there is one).
        buildings: Buildings this run wrote.
        tiles: Tiles read.
        chips: Chips laid over the AOI.
        skipped_chips: Chips without valid pixels (nodata).
        errors: One line per chip that could not be read.
        area_km2: Area of the AOI covered by tiles.
        seconds: Wall time per stage (plan, segment, merge, write); worker time per step (read,
            model, vectorise) summed over workers.
        workers: Addresses of the Dask workers that segmented.
    """

    out: str
    run_id: str
    buildings: int
    tiles: int
    chips: int
    skipped_chips: int
    errors: list[str]
    area_km2: float
    seconds: dict[str, float] = field(default_factory=dict)
    workers: list[str] = field(default_factory=list)


def default_workers() -> int:
    """Workers of a LocalCluster: one per GPU, else one per core (up to 8).

    On CPU, several single-threaded forward passes side by side beat one forward pass on all
    cores (convolutions scale less than linearly with threads), and one worker's reading and
    vectorising overlaps another's forward pass (benchmarks/README.md).
    """
    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, min(8, os.cpu_count() or 1))


@contextmanager
def dask_cluster(address: str | None, workers: int | None = None) -> Iterator[tuple[str, int | None]]:
    """The scheduler address of an existing cluster, or of a LocalCluster started for the run,
    with the threads each forward pass may use (None: let each worker decide).

    The local cluster's workers are threads of this process, one task at a time each, sharing the
    machine's cores between their forward passes: on one machine, a worker process under Dask's
    nanny ran the same forward pass about 1.4 times slower than a worker thread
    (benchmarks/README.md), and the pixels stay on the workers either way.
    """
    if address:
        yield address, None
        return
    workers = workers or default_workers()
    with LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=False,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster.scheduler_address, max(1, (os.cpu_count() or 1) // workers)


@flow(name="aoi-footprints", log_prints=True)
def aoi_flow(
    aoi: str,
    source: str,
    out: str,
    model: str = str(DEFAULT_MODEL),
    method: str | None = None,
    aoi_crs: str = "EPSG:4326",
    crs: str = "EPSG:4326",
    chip_size: int = 512,
    overlap: int = 128,
    batch_size: int = 4,
    min_area_m2: float = 4.0,
    simplify_m: float = 0.3,
    regularise: bool = False,
    dask_address: str | None = None,
    dask_workers: int | None = None,
    s3: S3Options = S3Options(),
    progress: bool = True,
) -> RunSummary:
    """Find the buildings of an area of interest and write them to a GeoPackage.

    Args:
        aoi: ``minx,miny,maxx,maxy`` (in ``aoi_crs``) or a GeoJSON / GeoPackage of polygons.
        source: Folder or ``s3://`` prefix of tiles, in any layout geo.layouts reads.
        out: The GeoPackage; buildings of earlier runs inside this AOI are replaced.
        model: Checkpoint of a trained method.
        method: The method expected of the checkpoint (checked); None takes the checkpoint's.
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
        dask_workers: Workers of the LocalCluster (threads of this process); None: one per GPU,
            else one per core up to 8.
        s3: How to reach an S3 source.
        progress: Show a progress bar.

    Returns:
        A summary of the run.
    """
    run_id = str(flow_run.get_id() or uuid.uuid4())
    started_at = datetime.now(UTC)
    seconds: dict[str, float] = {}

    clock = time.perf_counter()
    area = load_aoi(aoi, aoi_crs)
    checkpoint = load_model(model, method)
    plan = plan_run(area, source, s3, chip_size, overlap)
    vectorising = Vectorising(area.utm_crs(), min_area_m2, simplify_m, regularise)
    seconds["plan"] = time.perf_counter() - clock

    clock = time.perf_counter()
    with dask_cluster(dask_address, dask_workers) as (address, threads):
        segmented = segment_chips(
            plan, checkpoint, source, s3, vectorising, address, batch_size, progress, torch_threads=threads
        )
    seconds["segment"] = time.perf_counter() - clock
    seconds |= {f"worker_{k}": v for k, v in segmented.seconds.items()}

    clock = time.perf_counter()
    buildings = merge_buildings(segmented, plan, area, vectorising)
    seconds["merge"] = time.perf_counter() - clock

    run = {
        "run_id": run_id,
        "started": started_at.isoformat(timespec="seconds"),
        "aoi": area.label,
        "aoi_wkt": area.geometry.wkt,
        "aoi_crs": area.crs.to_string(),
        "source": source,
        "model": str(model),
        "model_id": checkpoint.model_id,
        "model_sha256": checkpoint.sha256,
        "method": checkpoint.method,
        "code_version": __version__,
        "parameters": {
            "crs": crs,
            "chip_size": chip_size,
            "overlap": overlap,
            "batch_size": batch_size,
            "min_area_m2": min_area_m2,
            "simplify_m": simplify_m,
            "regularise": regularise,
        },
        "tiles": len(plan.tiles),
        "chips": len(plan.chips),
        "skipped_chips": segmented.skipped,
        "errors": segmented.errors,
        "buildings": len(buildings),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    clock = time.perf_counter()
    write_geopackage(buildings, Path(out), area, crs, checkpoint, run)
    seconds["write"] = time.perf_counter() - clock

    summary = RunSummary(
        out=str(out),
        run_id=run_id,
        buildings=len(buildings),
        tiles=len(plan.tiles),
        chips=len(plan.chips),
        skipped_chips=segmented.skipped,
        errors=segmented.errors,
        area_km2=plan.covered_km2(vectorising.metric_crs),
        seconds=seconds,
        workers=sorted(segmented.workers),
    )
    log.info("run %s: %s", run_id, asdict(summary))
    return summary
