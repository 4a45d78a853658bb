"""The Dask side of an AOI run: batches of chips in, small polygon tables out.

Pixels never leave a worker: a batch is read from the tiles, segmented, vectorised and
georeferenced where it runs, and only polygons (as WKB) and timings come back. The model is loaded
once per worker by a worker plugin, which carries the checkpoint's bytes so that workers of a
remote cluster need no access to the file.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import shapely
import torch
from distributed import Worker, WorkerPlugin, get_worker
from pyproj import CRS

from footprints.geo.chips import Chip, ChipPlan, Limits, TileFootprint, read_chip, tile_limits
from footprints.geo.errors import FootprintsError
from footprints.geo.raster import ground_pixel_size
from footprints.geo.runs import DEFAULTS
from footprints.geo.stores import S3Options, TileStore, open_store
from footprints.geo.vectorise import masks_to_polygons, tidy_outlines, to_metric
from footprints.models.instances import InstanceSegmenter
from footprints.models.registry import get_method, load_segmenter, register

log = logging.getLogger(__name__)

try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: nothing to trim
    _LIBC = None

# A worker's process may grow this far past its largest size over its first batches before
# freed memory is handed back to the system.
_MEMORY_SLACK = 128 << 20
_SIZING_BATCHES = 4
# Stretch limits of this many tiles are kept per worker: a few numbers each, so memory stays flat.
_LIMITS_KEPT = 256


@dataclass(frozen=True)
class Model:
    """A checkpoint as a run uses it: its bytes, method and identity.

    Attributes:
        content: The checkpoint's bytes.
        method: The method it is of.
        source: Where it came from: its path, or the method's name for one without weights.
        model_id: Its stem and checksum prefix.
        sha256: Its checksum.
    """

    content: bytes
    method: str
    source: str
    model_id: str
    sha256: str

    def load(self) -> InstanceSegmenter:
        """The segmenter, on this machine's GPU when it has one."""
        return load_segmenter(self.content)


class ModelPlugin(WorkerPlugin):
    """Loads a model once on every worker (on its GPU when it has one) and keeps tile caches."""

    def __init__(self, model: Model, source: str, s3: S3Options, torch_threads: int | None = None) -> None:
        """Args:
        model: The model to load.
        source: Where the tiles are.
        s3: How to reach an S3 source.
        torch_threads: Threads of each forward pass; None shares the machine's cores between
            the worker's threads (one worker per machine, the usual GPU set-up).
        """
        self.model = model
        # A method registered at run time (not on importing the project) is unknown to worker
        # processes: the plugin takes its registration along.
        self.method = get_method(model.method)
        self.torch_threads = torch_threads
        self.source = source
        self.s3 = s3
        self.name = f"footprints-{model.sha256[:16]}-{hashlib.sha256(source.encode()).hexdigest()[:8]}"
        self.segmenter: InstanceSegmenter | None = None
        self.store: TileStore | None = None
        self.paths: dict[str, Path] = {}
        self.limits: OrderedDict[str, Limits | None] = OrderedDict()
        self.memory_ceiling: int | None = None
        self.sized: list[int] = []  # the process's size after each of the first batches

    def setup(self, worker: Worker) -> None:
        """Load the model; share the machine's cores between the forward passes running at once.

        Dask starts worker processes with OMP_NUM_THREADS=1, which would leave a forward pass on
        one core; the share is set explicitly instead.
        """
        threads = self.torch_threads or (os.cpu_count() or 1) // max(1, worker.state.nthreads)
        torch.set_num_threads(max(1, threads))
        register(self.method)
        self.segmenter = self.model.load()
        self.store = open_store(self.source, self.s3)

    def keep_memory_flat(self) -> None:
        """Hand freed memory back to the system when the process has grown past its ceiling.

        Workers allocate and free large arrays batch after batch, and glibc keeps freed pages
        in its arenas: without trimming, a run's memory creeps up with fragmentation (measured
        with worker threads: +150 MiB over 256 tiles). Trimming after every batch cost a fifth
        more time in page faults, a low trim threshold (as Dask's nanny sets) almost half;
        trimming only past a ceiling keeps memory flat for little (benchmarks/README.md). The
        ceiling is set above the largest size over the worker's first few batches, not after
        its first: batches differ, other worker threads of the process (`dask worker
        --nthreads`) are then at their peaks too, and a ceiling set too low trimmed after half
        of a 256-tile run's batches, for 3 s of page faults.
        """
        rss = psutil.Process().memory_info().rss
        if self.memory_ceiling is None:
            self.sized.append(rss)
            if len(self.sized) == _SIZING_BATCHES:
                self.memory_ceiling = max(self.sized) + _MEMORY_SLACK
        elif rss > self.memory_ceiling and _LIBC is not None:
            _LIBC.malloc_trim(0)

    def path(self, fp: TileFootprint) -> Path:
        """The tile's local file (downloaded once into the cache for an S3 source)."""
        if fp.key not in self.paths:
            assert self.store is not None
            self.paths[fp.key] = self.store.local_path(fp.key, fp.sidecars)
        return self.paths[fp.key]

    def tile_limits(self, fp: TileFootprint) -> Limits | None:
        """The tile's stretch limits, computed once per worker."""
        if fp.key not in self.limits:
            assert self.store is not None
            self.limits[fp.key] = tile_limits(self.path(fp), fp.info.nodata, self.store.describe(fp.key))
            if len(self.limits) > _LIMITS_KEPT:
                self.limits.popitem(last=False)
        return self.limits[fp.key]


@dataclass(frozen=True)
class Vectorising:
    """How instance masks become published outlines."""

    metric_crs: CRS
    min_area_m2: float = DEFAULTS.min_area_m2
    simplify_m: float = DEFAULTS.simplify_m
    regularise: bool = DEFAULTS.regularise


@dataclass
class BatchResult:
    """What a batch sends back: polygons in the metric CRS and where they came from.

    Attributes:
        wkb: Polygons as WKB.
        score: Confidences.
        chip: Chip id of each polygon.
        cut: Whether the instance touches its chip's border.
        owned: Whether its chip owns it (centre in the core, or whole and larger than the overlap).
        seconds: Time spent reading, in the model, and vectorising.
        skipped: Ids of chips without valid pixels (nodata or no tile there).
        failed: (chip id, tile key, reason) of each tile a chip could not read.
        worker: Address of the worker that ran the batch.
    """

    wkb: list[bytes] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    chip: list[int] = field(default_factory=list)
    cut: list[bool] = field(default_factory=list)
    owned: list[bool] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: {"read": 0.0, "model": 0.0, "vectorise": 0.0})
    skipped: list[int] = field(default_factory=list)
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    worker: str = ""


def stretch_limits_of(plugin: str, plan: ChipPlan, keys: list[str]) -> dict[str, Limits | None]:
    """The stretch limits of some of the plan's tiles, each read whole on this worker.

    A tile that cannot be read is left out: each chip that covers it meets the error again when
    it reads the tile, and reports it (see segment_batch).
    """
    model: ModelPlugin = get_worker().plugins[plugin]  # type: ignore[assignment]
    found = {}
    for key in keys:
        try:
            found[key] = model.tile_limits(plan.tiles[key])
        except FootprintsError:
            continue
    return found


def segment_batch(
    plugin: str,
    plan: ChipPlan,
    chip_ids: list[int],
    vectorising: Vectorising,
    limits: dict[str, Limits | None] | None = None,
) -> BatchResult:
    """Read, segment and vectorise a batch of chips on this worker.

    ``limits`` holds the stretch limits of tiles already worked out for the run (see
    stretch_limits_of); a tile's limits missing there are worked out here. A tile a chip cannot
    read is reported in ``failed`` and left out of the chip; the chip's other tiles, and the
    rest of the batch, go on.
    """
    worker = get_worker()
    model: ModelPlugin = worker.plugins[plugin]  # type: ignore[assignment]
    assert model.segmenter is not None
    assert model.store is not None
    result = BatchResult(worker=worker.address)
    known = limits or {}

    def limits_of(fp: TileFootprint) -> Limits | None:
        return known[fp.key] if fp.key in known else model.tile_limits(fp)

    started = time.perf_counter()
    chips, images, valids = [], [], []
    for chip in (plan.chips[i] for i in chip_ids):
        read = read_chip(chip, plan, model.path, limits_of, model.store.describe)
        for key, error in read.failed.items():
            result.failed.append((chip.id, key, error))
        if not read.valid.any():
            if not read.failed:
                result.skipped.append(chip.id)
            continue
        chips.append(chip)
        images.append(read.image)
        valids.append(read.valid)
    result.seconds["read"] = time.perf_counter() - started
    if not chips:
        return result

    started = time.perf_counter()
    # The grid is metric or nearly so over a batch: one pixel size serves all of its chips.
    pixel_size = ground_pixel_size(plan.grid.transform, plan.grid.crs, chips[0].col, chips[0].row)
    with torch.inference_mode():
        found = model.segmenter.predict(torch.from_numpy(np.stack(images)), pixel_size)
    result.seconds["model"] = time.perf_counter() - started

    started = time.perf_counter()
    for chip, valid, instances in zip(chips, valids, found, strict=True):
        _add_chip(result, plan, chip, valid, instances, vectorising)
    result.seconds["vectorise"] = time.perf_counter() - started
    del images, valids, found
    model.keep_memory_flat()
    return result


def _add_chip(
    result: BatchResult, plan: ChipPlan, chip: Chip, valid: np.ndarray, instances: list, how: Vectorising
) -> None:
    """Vectorise one chip's instances into the result, with their cut and owned flags."""
    overlap = plan.overlap
    instances = [i for i in instances if i.mask.any()]
    if not instances:
        return
    cut, rows, cols, extent = [], [], [], []
    for inst in instances:
        r = np.flatnonzero(inst.mask.any(axis=1)) + inst.row
        c = np.flatnonzero(inst.mask.any(axis=0)) + inst.col
        cut.append(r[0] == 0 or c[0] == 0 or r[-1] == chip.size - 1 or c[-1] == chip.size - 1)
        rows.append((r[0] + r[-1] + 1) / 2)
        cols.append((c[0] + c[-1] + 1) / 2)
        extent.append(max(r[-1] - r[0], c[-1] - c[0]) + 1)
    rows_a, cols_a = np.array(rows), np.array(cols)
    # An instance centred on nodata is an artefact of the fill, not a building.
    on_data = valid[rows_a.astype(int), cols_a.astype(int)]
    # A whole instance larger than the overlap cannot be seen whole by the chip owning its centre.
    owned = chip.owns(rows_a + chip.row, cols_a + chip.col) | (~np.array(cut) & (np.array(extent) > overlap))
    pixels = masks_to_polygons(instances)
    metric = to_metric(pixels, chip.transform(plan.grid), plan.grid.crs, how.metric_crs)
    tidy, kept = tidy_outlines(
        metric, min_area_m2=how.min_area_m2, simplify_m=how.simplify_m, regularise_outlines=how.regularise
    )
    for polygon, k in zip(tidy, kept, strict=True):
        if not on_data[k]:
            continue
        result.wkb.append(shapely.to_wkb(polygon))
        result.score.append(float(instances[k].score))
        result.chip.append(chip.id)
        result.cut.append(bool(cut[k]))
        result.owned.append(bool(owned[k]))
