"""The chip batches a run has finished, kept beside its output until the run is written.

A run that is killed (or fails) part-way leaves its finished batches here; started again with the
same inputs, it segments only the rest. The batches are filed under a key made of everything that
determines their polygons: the chips and the tiles they read (each tile's identity in its store),
the model's checksum, how polygons are made, and the code's version. A changed input gives another
key, so a rerun after a change starts afresh.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from footprints import code_version
from footprints.geo.chips import ChipPlan
from footprints.geo.files import atomic_file

from .chip_work import BatchResult, Vectorising

log = logging.getLogger(__name__)


def batches_key(plan: ChipPlan, batches: list[list[int]], model_sha256: str, vectorising: Vectorising) -> str:
    """A checksum of everything that determines the batches' polygons."""
    t = plan.grid.transform
    inputs = {
        "grid": [plan.grid.crs.to_wkt(), [t.a, t.b, t.c, t.d, t.e, t.f]],
        "chips": [[c.row, c.col, c.size, list(c.core), list(c.tiles)] for c in plan.chips],
        "batches": batches,
        "tiles": {
            key: [fp.etag, fp.info.width, fp.info.height, fp.info.count, fp.info.dtype, str(fp.info.nodata)]
            for key, fp in sorted(plan.tiles.items())
        },
        "model": model_sha256,
        "vectorising": [
            vectorising.metric_crs.to_wkt(),
            vectorising.min_area_m2,
            vectorising.simplify_m,
            vectorising.regularise,
        ],
        "code": code_version(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


class FinishedBatches:
    """The finished batches of one run's inputs: one JSON file per batch in a hidden folder.

    The folder is ``.NAME.resume/KEY`` beside the output ``NAME``. Each file is written whole or
    not at all (files.atomic_file), so a run killed while saving leaves no half batch behind.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def beside(cls, out: str | Path, key: str) -> FinishedBatches:
        """The finished batches filed under ``key`` beside the output ``out``."""
        out = Path(out)
        return cls(out.parent / f".{out.name}.resume" / key[:24])

    def load(self, batches: list[list[int]]) -> dict[int, BatchResult]:
        """The saved results, by batch number, of those of ``batches`` that had finished."""
        found: dict[int, BatchResult] = {}
        for path in sorted(self.folder.glob("batch-*.json")):
            try:
                saved = json.loads(path.read_text())
                number, result = int(saved["number"]), _from_json(saved["result"])
            except (OSError, ValueError, KeyError, TypeError) as error:
                log.warning("ignoring %s, which cannot be read (%s)", path, error)
                continue
            if number < len(batches) and batches[number] == saved["chips"]:
                found[number] = result
        return found

    def save(self, number: int, chips: list[int], result: BatchResult) -> None:
        """Keep a finished batch's result."""
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"number": number, "chips": chips, "result": _to_json(result)}
        with atomic_file(self.folder / f"batch-{number:06d}.json") as handle:
            handle.write(json.dumps(record).encode())

    def clear(self) -> None:
        """Forget these batches (once the run is written); the folder goes when it is empty."""
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # other runs' batches are still there
            self.folder.parent.rmdir()


def _to_json(result: BatchResult) -> dict[str, Any]:
    values = asdict(result)
    values["wkb"] = [w.hex() for w in result.wkb]
    return values


def _from_json(values: dict[str, Any]) -> BatchResult:
    values = dict(values)
    values["wkb"] = [bytes.fromhex(w) for w in values["wkb"]]
    values["failed"] = [tuple(f) for f in values["failed"]]
    return BatchResult(**values)
