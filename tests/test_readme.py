"""The README's commands run as written, pasted into a shell at the project root.

Each ``bash`` block has a runner: this module, or tests/test_stack.py for the deployment block,
which needs the whole stack. ``make test`` is left to CI: it is the command that runs this test.
The commands run with the project's environment first on the PATH (as after ``. .venv/bin/activate``)
and a Prefect home of their own, as on a user's first run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from readme_commands import ROOT, bash_blocks, block

BIN = Path(sys.executable).parent
SHARED = ROOT.parent / "shared" / "data"
RUN_ELSEWHERE = {"Deployments": "tests/test_stack.py"}

pytestmark = pytest.mark.slow


def _shell(command: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PATH": f"{BIN}{os.pathsep}{env['PATH']}",
        "PREFECT_HOME": str(home / "prefect"),
        "FOOTPRINTS_CACHE": str(home / "cache"),
    }
    return subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )


def _succeeds(command: str, home: Path) -> str:
    done = _shell(command, home)
    assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_every_bash_block_has_a_runner() -> None:
    sections = [b.section for b in bash_blocks()]
    assert sorted(sections) == sorted(["The two commands", "Try it", *RUN_ELSEWHERE]), sections


def test_the_main_job_runs_as_written(tmp_path: Path) -> None:
    commands = block("The two commands").commands
    assert commands == ("make run", "make test")
    printed = _succeeds("make run", tmp_path)
    assert "runs/demo/buildings.gpkg" in printed
    assert "model: F1 " in printed, printed
    assert "threshold baseline: F1 " in printed, printed


def test_try_it_runs_as_written(tmp_path: Path) -> None:
    shutil.rmtree(ROOT / "runs" / "try", ignore_errors=True)
    skipped = []
    printed = {}
    for command in block("Try it").commands:
        if "../shared/data" in command and not SHARED.is_dir():
            skipped.append(command)
            continue
        printed[command.split()[1]] = _succeeds(command, tmp_path)
    assert "wrote 4 tiles (2 x 2)" in printed["synth"]
    buildings = gpd.read_file(ROOT / "runs" / "try" / "buildings.gpkg", layer="buildings")
    assert len(buildings) > 10
    # The shipped model on the whole scene: far above the threshold baseline (0.1 on such scenes).
    overall = next(r.split() for r in printed["eval"].splitlines() if r.startswith("overall"))
    assert float(overall[-1]) > 0.6, printed["eval"]
    if skipped:
        pytest.skip(f"{SHARED} is absent, so this was not run: {skipped}")
    # The published counts and F1 of each AOI of the SpaceNet-2 scoring sample, listed in sorted
    # order (tests/test_scoring.py matches every figure of it).
    published = pd.read_csv(SHARED / "spacenet" / "sn2_scoring" / "SN2_test_results.csv")
    rows = printed["score"].splitlines()
    for aoi, expected in zip(("AOI_2_Vegas", "AOI_5_Khartoum"), published.itertuples(), strict=True):
        row = next(r.split() for r in rows if r.startswith(aoi))
        assert [int(x) for x in row[1:4]] == [expected.TruePos, expected.FalsePos, expected.FalseNeg]
        assert float(row[-1]) == pytest.approx(expected.F1Score, abs=5e-5)
