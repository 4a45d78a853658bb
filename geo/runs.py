"""One record of an AOI run: what the GeoPackage's ``runs`` table holds, what the flow returns and
what it logs, so that the three cannot disagree. Also the run's settings and their defaults,
defined once for the command line, the flow and the benchmarks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class RunSettings:
    """How an AOI run chips, segments and publishes; the defaults are the project's.

    Attributes:
        crs: CRS of the output (any EPSG code or text pyproj reads).
        chip_size: Chip side in pixels of the imagery.
        overlap: Pixels shared by neighbouring chips; buildings up to this size are seen whole
            by some chip, larger ones are joined from fragments.
        batch_size: Chips per model call.
        min_area_m2: Outlines smaller than this are dropped as slivers.
        simplify_m: Simplification tolerance in metres (0 keeps the pixel staircase).
        regularise: Square outlines to their dominant direction.
    """

    crs: str = "EPSG:4326"
    # 1024 px chips overlapping by 64 px make the model see 1.14 times the AOI's pixels (512 by
    # 128: 1.78 times) for the same F1 on the demo AOI (benchmarks/README.md); one chip per model
    # call keeps a CPU worker's memory near what four 512 px chips took. On a GPU, batch more.
    chip_size: int = 1024
    overlap: int = 64
    batch_size: int = 1
    min_area_m2: float = 4.0
    simplify_m: float = 0.3
    regularise: bool = False


DEFAULTS = RunSettings()


@dataclass
class RunRecord:
    """What an AOI run did, from its inputs to its timings.

    Attributes:
        run_id: The run's id (the Prefect flow run's, when there is one).
        started: Start time, ISO 8601 in UTC.
        out: The GeoPackage written.
        aoi: The AOI as the user gave it (bbox text or file path).
        aoi_wkt: The AOI's shape, in ``aoi_crs``.
        aoi_crs: The AOI's CRS.
        source: Folder or S3 prefix of the tiles.
        model: The checkpoint's path (or the method's name, for one without weights).
        model_id: The checkpoint's stem and checksum prefix, as in the buildings layer.
        model_sha256: The checkpoint's checksum.
        method: The method that segmented.
        code_version: Package version and git commit, as checkpoints record it.
        settings: How the run chipped, segmented and published.
        tiles: Tiles read.
        chips: Chips laid over the AOI.
        skipped_chips: Chips without valid pixels (nodata).
        errors: One line per tile a chip could not read, after retries.
        failed_tiles: The tiles some chip could not read.
        failed_chips: The chips that could not read all their tiles; a run with any is partial.
        unreadable_tiles: Tiles of the source whose header could not be read, left out (where
            they lie is unknown); earlier buildings from them are kept.
        resumed_batches: Chip batches an interrupted run had finished, not segmented again.
        area_km2: Area of the AOI covered by tiles.
        buildings: Buildings this run wrote.
        buildings_in_file: Buildings in the GeoPackage after the run (earlier runs' outside
            this AOI included).
        seconds: Wall time per stage (plan, segment, merge, write); worker time per step
            (worker_read, worker_model, worker_vectorise) summed over workers.
        workers: Addresses of the Dask workers that segmented.
    """

    run_id: str
    started: str
    out: str
    aoi: str
    aoi_wkt: str
    aoi_crs: str
    source: str
    model: str
    model_id: str
    model_sha256: str
    method: str
    code_version: str
    settings: RunSettings
    tiles: int = 0
    chips: int = 0
    skipped_chips: int = 0
    errors: list[str] = field(default_factory=list)
    failed_tiles: list[str] = field(default_factory=list)
    failed_chips: list[int] = field(default_factory=list)
    unreadable_tiles: list[str] = field(default_factory=list)
    resumed_batches: int = 0
    area_km2: float = 0.0
    buildings: int = 0
    buildings_in_file: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    workers: list[str] = field(default_factory=list)

    def row(self) -> dict[str, str]:
        """The record as a row of text: lists and dicts as JSON (see `from_row`)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["settings"] = asdict(self.settings)
        return {k: json.dumps(v) if isinstance(v, dict | list) else str(v) for k, v in values.items()}

    def describe(self) -> str:
        """One line for people: what was found where, and how long each stage took."""
        # Workers' seconds are summed over workers that ran side by side: they are not stages.
        stages = {k: v for k, v in self.seconds.items() if not k.startswith("worker_")}
        times = ", ".join(f"{stage} {s:.1f}" for stage, s in stages.items())
        return (
            f"run {self.run_id}: {self.buildings} buildings in {self.area_km2:.3f} km2 from "
            f"{self.tiles} tiles ({self.chips} chips, {self.skipped_chips} without data, "
            f"{len(self.failed_chips)} partly unread) by {self.method} {self.model_id} into "
            f"{self.out} in {sum(stages.values()):.1f} s ({times} s)"
        )

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunRecord:
        """A record read back from the ``runs`` table (the inverse of `row`)."""
        # Columns added since a file's first run hold "nan" or nothing in its older rows.
        text = {f.name: row[f.name] for f in fields(cls) if row.get(f.name) not in (None, "nan", "")}
        as_json = {
            "settings",
            "errors",
            "failed_tiles",
            "failed_chips",
            "unreadable_tiles",
            "seconds",
            "workers",
        }
        values: dict[str, Any] = {k: json.loads(v) if k in as_json else v for k, v in text.items()}
        values["settings"] = RunSettings(**values["settings"])
        for name in ("tiles", "chips", "skipped_chips", "resumed_batches", "buildings", "buildings_in_file"):
            if name in values:
                values[name] = int(values[name])
        if "area_km2" in values:
            values["area_km2"] = float(values["area_km2"])
        return cls(**values)

    @property
    def partial(self) -> bool:
        """Whether some chip could not read all its tiles, so that part of the AOI is not covered."""
        return bool(self.failed_chips)

    def partial_message(self) -> str:
        """One message for people on what a partial run missed and what was done about it."""
        tiles = ", ".join(self.failed_tiles)
        return (
            f"run {self.run_id} is partial: {len(self.failed_chips)} of {self.chips} chips could not "
            f"read tiles {tiles} (first error: {self.errors[0] if self.errors else 'none'}); "
            "earlier buildings there were kept, the rest of the AOI was written; the runs table "
            "names the chips; rerun to fill them in"
        )
