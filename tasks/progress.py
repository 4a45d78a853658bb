"""Progress of a long stage: a bar on the terminal, and a line at every tenth for the logs.

The bar is for the person at the terminal; the lines are for the Prefect UI and the logs of a
deployment's worker, where a bar cannot be drawn. The terminal leaves the lines out
(footprints/console.py), so it shows each stage's progress once.
"""

from __future__ import annotations

import logging
from types import TracebackType

from tqdm import tqdm

log = logging.getLogger(__name__)

STEPS = 10


class StageProgress:
    """Counts a stage's items done, drawing a bar (unless ``bar`` is False) and logging each tenth.

    Use as a context manager: ``with StageProgress("segment", len(chips), "chip") as p: p.update(4)``.
    """

    def __init__(self, stage: str, total: int, unit: str, bar: bool = True) -> None:
        self.stage, self.total, self.unit = stage, total, unit
        self.done = 0
        self._logged = 0
        self._bar = tqdm(total=total, desc=stage, unit=unit, disable=not bar)

    def update(self, n: int) -> None:
        """Count ``n`` more items done."""
        self.done += n
        self._bar.update(n)
        step = self.done * STEPS // max(self.total, 1)
        if step > self._logged:
            self._logged = step
            log.info(
                "%s: %d of %d %ss (%d%%)",
                self.stage, self.done, self.total, self.unit, 100 * self.done // max(self.total, 1),
                extra={"progress": True},
            )  # fmt: skip

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._bar.close()
