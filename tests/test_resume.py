"""A run killed part-way resumes where it stopped: the batches it finished are not segmented again.

The block scene (block_scene.py) runs for real in a process of its own, slowed down, and is
killed with SIGKILL once it has finished some batches; the same command, run again, must take
those batches from the earlier try, segment only the rest and write what an uninterrupted run
writes. A changed input starts afresh.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely
from block_scene import CRS, block_checkpoint, segmented_chips, write_block_scene
from test_method_registry import SCENE_BBOX

from footprints.cli import main
from footprints.geo.runs import RunRecord

RUNNER = Path(__file__).with_name("run_blocks.py")
OPTIONS = ["--chip-size", "64", "--overlap", "24", "--simplify", "0", "--min-area", "1", "--workers", "1"]
BATCH = ["--batch-size", "2"]


def _argv(scene: Path, checkpoint: Path, out: Path, *extra: str) -> list[str]:
    run = ["-q", "run", "--aoi", SCENE_BBOX, "--aoi-crs", CRS, "--source", str(scene), "--out", str(out)]
    return [*run, "--model", str(checkpoint), "--method", "blocks", *OPTIONS, *BATCH, *extra]


def _last_run(out: Path) -> RunRecord:
    return RunRecord.from_row(pyogrio.read_dataframe(out, layer="runs").to_dict("records")[-1])


def _kill_after(argv: list[str], saved: Path, batches: int, api: str, log: Path) -> None:
    """Start the command in its own process and SIGKILL it once ``batches`` are saved."""
    env = os.environ | {"PREFECT_API_URL": api, "BLOCKS_SECONDS_PER_BATCH": "0.3"}
    with log.open("w") as output:
        command = [sys.executable, str(RUNNER), *argv]
        process = subprocess.Popen(command, env=env, stdout=output, stderr=output, start_new_session=True)
        try:
            while len(list(saved.glob("*/batch-*.json"))) < batches:
                assert process.poll() is None, f"the run ended before it could be killed:\n{log.read_text()}"
                time.sleep(0.05)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
def test_a_killed_run_resumes_without_segmenting_its_finished_batches_again(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = block_checkpoint(tmp_path / "blocks.pt")
    scene = tmp_path / "scene"
    write_block_scene(scene)
    reference = tmp_path / "reference.gpkg"
    assert main(_argv(scene, checkpoint, reference)) == 0
    chips = _last_run(reference).chips
    batches = -(-chips // 2)

    out = tmp_path / "buildings.gpkg"
    saved = tmp_path / ".buildings.gpkg.resume"
    _kill_after(_argv(scene, checkpoint, out), saved, 6, prefect_api, tmp_path / "killed.log")
    assert not out.exists()  # killed before writing anything
    finished = len(list(saved.glob("*/batch-*.json")))
    assert 6 <= finished < batches

    # A changed input (here the simplification) starts afresh...
    monkeypatch.setenv("BLOCKS_CHIPS_LOG", str(tmp_path / "afresh.log"))
    assert main(_argv(scene, checkpoint, out, "--simplify", "0.1")) == 0
    assert _last_run(out).resumed_batches == 0
    assert segmented_chips(tmp_path / "afresh.log") == chips
    # ... and the same command again takes up the batches the killed try had finished.
    monkeypatch.setenv("BLOCKS_CHIPS_LOG", str(tmp_path / "resumed.log"))
    assert main(_argv(scene, checkpoint, out)) == 0
    record = _last_run(out)
    segmented = segmented_chips(tmp_path / "resumed.log")
    print(
        f"\nkilled with {finished} of {batches} batches finished; the rerun resumed "
        f"{record.resumed_batches} and segmented {segmented} of {chips} chips"
    )
    assert record.resumed_batches == finished
    assert chips - 2 * finished <= segmented <= chips - 2 * finished + 1
    assert not saved.exists()  # forgotten once written

    expected = pyogrio.read_dataframe(reference, layer="buildings")
    found = pyogrio.read_dataframe(out, layer="buildings")
    assert len(found) == len(expected)
    order_e, order_f = np.argsort(expected["id"].to_numpy()), np.argsort(found["id"].to_numpy())
    assert shapely.equals(expected.geometry.to_numpy()[order_e], found.geometry.to_numpy()[order_f]).all()
    assert (expected["score"].to_numpy()[order_e] == found["score"].to_numpy()[order_f]).all()
