"""The Prefect tasks of an AOI run: plan, segment (fanned out over Dask), merge, write.

What crosses these tasks is small: the AOI, the chip plan (windows and tile headers), polygon
tables. Pixels stay on the Dask workers (see chip_work.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from distributed import Client, Future, as_completed
from prefect import task
from prefect.cache_policies import NO_CACHE

from footprints.geo.aoi import Aoi, read_aoi
from footprints.geo.chips import ChipPlan, Limits, footprint_polygons, plan_chips
from footprints.geo.dedup import Candidates, deduplicate
from footprints.geo.geopackage import write_buildings
from footprints.geo.layouts import find_tiles
from footprints.geo.outputs import RunOutput
from footprints.geo.runs import RunRecord
from footprints.geo.stores import S3Options, open_store
from footprints.geo.vectorise import to_metric
from footprints.models.checkpoint import checkpoint_identity
from footprints.models.registry import resolve_checkpoint

from .chip_work import BatchResult, Model, ModelPlugin, Vectorising, segment_batch, stretch_limits_of
from .preflight import retry_unless_input_error
from .progress import StageProgress
from .resume import FinishedBatches
from .tiles import tile_footprints

log = logging.getLogger(__name__)

# Pauses before the second and third tries of the batches that could not read a tile.
READ_RETRY_DELAYS_S = (2.0, 8.0)
# Tiles per task of the stretch stage: few enough to spread over the workers, enough to keep
# Dask's per-task cost small beside the reads (about 25 ms a tile).
STRETCH_TILES_PER_TASK = 8


@dataclass
class Segmented:
    """What the segment stage found: every instance of every chip, and how the chips went.

    ``errors`` has a line per tile a chip could not read, ``failed_tiles`` and ``failed_chips``
    name them; ``unread`` is the area left unread (those tiles' footprints within those chips),
    in the metric CRS.
    """

    candidates: Candidates
    chips: int
    skipped: int
    errors: list[str]
    failed_tiles: list[str]
    failed_chips: list[int]
    unread: shapely.Geometry
    seconds: dict[str, float]
    workers: set[str] = field(default_factory=set)
    batches: int = 0
    resumed: int = 0  # batches taken from an interrupted run


@task(cache_policy=NO_CACHE)
def load_aoi(aoi: str, aoi_crs: str = "EPSG:4326") -> Aoi:
    """The AOI from a bbox or file, refused up front when unusable."""
    return read_aoi(aoi, aoi_crs)


@task(cache_policy=NO_CACHE)
def load_model(path: str | None = None, method: str | None = None) -> Model:
    """Read a checkpoint once, check its method, and name it by file and checksum.

    Args:
        path: The checkpoint; None takes the method's default (see registry.resolve_checkpoint).
        method: The method the checkpoint must be of; None accepts any.
    """
    source, record = resolve_checkpoint(path, method)
    name = str(source) if isinstance(source, Path) else record["method"]
    content, model_id, digest = checkpoint_identity(source, record["method"])
    return Model(content, record["method"], name, model_id, digest)


@task(
    retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retry_unless_input_error, cache_policy=NO_CACHE
)
def plan_run(aoi: Aoi, source: str, s3: S3Options, chip_size: int, overlap: int) -> ChipPlan:
    """Find the tiles under the AOI (headers only, read in place) and lay the chip grid.

    Headers come from the store's tile index where the tile's object is the one an earlier run
    read (same ETag and size); only new or changed tiles' headers are read, and kept there.

    A tile that is not a readable raster is left out and named in ``ChipPlan.unreadable``: where
    it lies is unknown, and only the tiles under the AOI matter. A store that cannot be read
    fails the plan (StoreError), which Prefect tries again: nothing has been written yet.
    """
    tile_set = find_tiles(open_store(source, s3))
    footprints, unreadable = tile_footprints(tile_set)
    plan = replace(plan_chips(aoi, footprints, chip_size, overlap), unreadable=unreadable)
    log.info(
        "%d of %d tiles cover the AOI and its margin; %d chips of %d px (overlap %d)",
        len(plan.tiles),
        len(tile_set.tiles),
        len(plan.chips),
        chip_size,
        overlap,
    )
    return plan


def chip_batches(plan: ChipPlan, batch_size: int) -> list[list[int]]:
    """The plan's chip ids in batches of ``batch_size``, in order: the units of work and of resuming."""
    ids = [chip.id for chip in plan.chips]
    return [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]


@task(cache_policy=NO_CACHE)
def segment_chips(
    plan: ChipPlan,
    model: Model,
    source: str,
    s3: S3Options,
    vectorising: Vectorising,
    dask_address: str,
    batches: list[list[int]],
    progress: bool = True,
    torch_threads: int | None = None,
    finished: FinishedBatches | None = None,
) -> Segmented:
    """Fan the chips out to the Dask cluster in batches and gather their polygons.

    Inference asks for a ``GPU`` resource when any worker of the cluster offers one; the model
    is loaded once per worker by a worker plugin. ``torch_threads`` sets the threads of each
    forward pass (see ModelPlugin). Each tile's stretch limits are worked out once for the run,
    spread over the workers, before the chips (a chip reads several tiles, and a tile is read by
    several chips on different workers). Batches that could not read a tile are run again, up to
    twice, after the pauses of READ_RETRY_DELAYS_S. With ``finished``, the batches an
    interrupted run had finished are taken from there, and each batch that finishes whole is
    saved there.
    """
    with Client(dask_address) as client:
        plugin = ModelPlugin(model, source, s3, torch_threads)
        client.register_plugin(plugin, name=plugin.name)
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        resources = {"GPU": 1} if any("GPU" in w.get("resources", {}) for w in workers) else None
        shared_plan = client.scatter(plan, broadcast=True)

        results = finished.load(batches) if finished is not None else {}
        pending = [n for n in range(len(batches)) if n not in results]
        keys = sorted({key for n in pending for i in batches[n] for key in plan.chips[i].tiles})
        limits = _stretch_limits(client, plugin.name, shared_plan, keys, resources)
        shared_limits = client.scatter(limits, broadcast=True)

        def submit(batch: list[int]) -> Future:
            return client.submit(
                segment_batch,
                plugin.name,
                shared_plan,
                batch,
                vectorising,
                shared_limits,
                resources=resources,
                retries=2,
                pure=False,
            )

        def done(n: int, result: BatchResult) -> None:
            results[n] = result
            if finished is not None and not result.failed:
                finished.save(n, batches[n], result)

        resumed = len(results)
        if resumed:
            log.info("resuming: %d of %d batches were finished by an earlier try", resumed, len(batches))
        futures = {submit(batches[n]): n for n in pending}
        with StageProgress("segment", len(plan.chips), "chip", bar=progress) as chips_done:
            chips_done.update(sum(len(batches[n]) for n in results))
            for future in as_completed(futures):
                done(futures[future], future.result())
                chips_done.update(len(batches[futures[future]]))
        # A tile read can fail for a while (a store that drops out, an object being replaced):
        # batches that left a tile out are run again, whole, after a pause.
        for delay in READ_RETRY_DELAYS_S:
            again = [n for n, r in results.items() if r.failed]
            if not again:
                break
            log.warning("%d batches could not read every tile; trying them again in %g s", len(again), delay)
            time.sleep(delay)
            futures = {submit(batches[n]): n for n in again}
            for future in as_completed(futures):
                done(futures[future], future.result())
    segmented = _gather(plan, [results[n] for n in sorted(results)], vectorising)
    return replace(segmented, batches=len(batches), resumed=resumed)


def _stretch_limits(
    client: Client, plugin: str, plan: object, keys: list[str], resources: dict[str, int] | None
) -> dict[str, Limits | None]:
    """The stretch limits of the tiles ``keys``, each tile read once, in tasks over the workers
    (``plan``: the run's ChipPlan, scattered to them).

    No progress bar of its own: it takes a few seconds beside the segment stage's minutes.
    """
    started = time.perf_counter()
    groups = [keys[i : i + STRETCH_TILES_PER_TASK] for i in range(0, len(keys), STRETCH_TILES_PER_TASK)]
    futures = [
        client.submit(stretch_limits_of, plugin, plan, group, resources=resources, retries=2, pure=False)
        for group in groups
    ]
    limits: dict[str, Limits | None] = {}
    for future in as_completed(futures):
        limits.update(future.result())
    log.debug("stretch limits of %d tiles in %.1f s", len(keys), time.perf_counter() - started)
    return limits


def _gather(plan: ChipPlan, results: list[BatchResult], vectorising: Vectorising) -> Segmented:
    failed = sorted({f for r in results for f in r.failed})
    for chip, _, error in failed:
        log.warning("chip %d: left out a tile that cannot be read: %s", chip, error)
    boxes_px = [shapely.box(c.col, c.row, c.col + c.size, c.row + c.size) for c in plan.chips]
    chip_boxes = to_metric(
        np.array(boxes_px, dtype=object), plan.grid.transform, plan.grid.crs, vectorising.metric_crs
    )
    keys = list(plan.tiles)
    outlines = footprint_polygons(plan.tiles.values(), vectorising.metric_crs)
    unread = shapely.union_all(
        [shapely.intersection(chip_boxes[chip], outlines[keys.index(key)]) for chip, key, _ in failed]
    )
    candidates = Candidates(
        geometry=shapely.from_wkb(np.array([w for r in results for w in r.wkb], dtype=object)),
        score=np.array([s for r in results for s in r.score], dtype=float),
        chip=np.array([c for r in results for c in r.chip], dtype=int),
        cut=np.array([c for r in results for c in r.cut], dtype=bool),
        owned=np.array([o for r in results for o in r.owned], dtype=bool),
        chip_boxes=chip_boxes,
    )
    seconds = {k: sum(r.seconds[k] for r in results) for k in ("read", "model", "vectorise")}
    return Segmented(
        candidates,
        chips=len(plan.chips),
        skipped=sum(len(r.skipped) for r in results),
        errors=[f"chip {chip}: {error}" for chip, _, error in failed],
        failed_tiles=sorted({key for _, key, _ in failed}),
        failed_chips=sorted({chip for chip, _, _ in failed}),
        unread=unread,
        seconds=seconds,
        workers={r.worker for r in results},
    )


@task(cache_policy=NO_CACHE)
def merge_buildings(
    segmented: Segmented, plan: ChipPlan, aoi: Aoi, vectorising: Vectorising
) -> gpd.GeoDataFrame:
    """Deduplicate across chips and seams, keep buildings centred in the AOI, name source tiles.

    Buildings that touch an area left unread (a tile that could not be read) are left out.

    Returns:
        Columns score, area_m2, source_tiles and geometry, in the metric CRS, best first.
    """
    metric = vectorising.metric_crs
    # Chips are squares of plan.size pixels: a chip's side in metres gives the pixel size.
    boxes = segmented.candidates.chip_boxes
    pixel_m = float(np.sqrt(shapely.area(boxes[0]))) / plan.size if len(boxes) else 1.0
    buildings = deduplicate(segmented.candidates, pixel_m, min_area_m2=vectorising.min_area_m2)
    area = aoi.to_crs(metric)
    inside = shapely.contains(area, shapely.point_on_surface(buildings.geometry))
    # Next to an unread tile a building may be cut at its edge; earlier runs' buildings are kept
    # there instead (write_buildings), so nothing of this run touches it.
    near_unread = shapely.intersects(shapely.buffer(segmented.unread, 2 * pixel_m), buildings.geometry)
    keep = inside & ~near_unread
    geometry, score = buildings.geometry[keep], buildings.score[keep]

    keys = list(plan.tiles)
    outlines = footprint_polygons(plan.tiles.values(), metric)
    building_idx, tile_idx = shapely.STRtree(outlines).query(geometry, predicate="intersects")
    sources = [[] for _ in geometry]
    for b, t in zip(building_idx, tile_idx, strict=True):
        sources[b].append(keys[t])
    return gpd.GeoDataFrame(
        {
            "score": np.round(score, 4),
            "area_m2": np.round(shapely.area(geometry), 2),
            "source_tiles": [";".join(sorted(s)) for s in sources],
        },
        geometry=geometry,
        crs=metric,
    )


@task(retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def write_geopackage(
    buildings: gpd.GeoDataFrame, aoi: Aoi, run: RunRecord, path: Path, unread: gpd.GeoSeries | None = None
) -> RunRecord:
    """Write the buildings in the output CRS with their provenance, and the run's record, to
    the GeoPackage file ``path`` (``run.out`` itself, or its working copy: geo/outputs.py).

    Earlier buildings that touch ``unread`` (the area of tiles this run could not read, in any
    CRS) are kept, as this run has nothing to replace them with.

    Returns:
        The record as written, with the write's time.
    """
    crs = run.settings.crs
    table = gpd.GeoDataFrame(
        buildings.to_crs(crs).assign(method=run.method, model_id=run.model_id, run_id=run.run_id)
    )
    kept = unread.to_crs(crs).union_all() if unread is not None else None
    record = write_buildings(path, table, aoi.to_crs(crs), run, kept)
    log.info(
        "wrote %d buildings (%d in the file) to %s in %.1f s",
        record.buildings,
        record.buildings_in_file,
        record.out,
        record.seconds["write"],
    )
    return record


@task(retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def publish_output(output: RunOutput) -> bool:
    """Make the written file the run's output (for S3, upload it whole; see geo/outputs.py).

    Returns:
        False where the S3 object changed while the run wrote: the run writes again into the
        newer object, which ``output.path`` now holds.
    """
    if not output.publish():
        log.warning("%s was written by another run meanwhile: writing into its new content", output.uri)
        return False
    return True
