"""Two runs writing one GeoPackage at the same time: real processes, the file's lock between them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyogrio
from writer import BUILDINGS_PER_RUN, aoi_of, buildings_of

from footprints.geo.files import locked

WRITER = Path(__file__).with_name("writer.py")


def _writer(out: Path, name: str, x0: float, runs: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(out), name, str(x0), str(runs)],
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_writing_one_file_at_once_lose_nothing(tmp_path: Path) -> None:
    out = tmp_path / "buildings.gpkg"
    runs = 8
    writers = [_writer(out, "east", 0.0, runs), _writer(out, "west", -10_000.0, runs)]
    for writer in writers:
        _, stderr = writer.communicate()
        assert writer.returncode == 0, stderr

    found = pyogrio.read_dataframe(out, layer="buildings")
    assert len(found) == 2 * runs * BUILDINGS_PER_RUN
    assert found["id"].is_unique
    run_ids = set(pyogrio.read_dataframe(out, layer="runs")["run_id"])
    assert run_ids == {f"{name}-{i}" for name in ("east", "west") for i in range(runs)}
    assert set(found["run_id"]) == run_ids


def test_a_writer_waits_for_the_lock_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "buildings.gpkg"
    with locked(out):
        writer = _writer(out, "waiting", 0.0, 1)
        assert writer.stderr is not None
        # Blocks until the writer says it waits; at its end (it wrote without waiting) the
        # stream closes and the line is empty.
        line = writer.stderr.readline()
        assert "being written by another run; waiting" in line, line
        assert str(out) in line
        assert not out.exists()  # it has not written under the lock
    _, rest = writer.communicate()
    assert writer.returncode == 0, rest
    found = pyogrio.read_dataframe(out, layer="buildings")
    assert len(found) == BUILDINGS_PER_RUN
    assert set(found["run_id"]) == {"waiting-0"}
    assert found.geometry.union_all().equals(buildings_of(aoi_of(0.0, 0), "waiting-0").geometry.union_all())
