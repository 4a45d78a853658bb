"""What an operator meets at the terminal: a first run on a busy machine with an empty Prefect
home, a console that shows only the run's own lines, and clean exits on SIGTERM and SIGINT.

Each test runs the real ``footprints`` command in a process of its own, as a user or a
scheduler would, with a Prefect home of its own and no API set, so that the command starts
its own temporary Prefect server.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import psutil
import pytest

from footprints.geo.layouts import find_tiles
from footprints.geo.stores import open_store
from footprints.geo.synth import write_scene

FOOTPRINTS = str(Path(sys.executable).parent / "footprints")
# A line the project writes: "HH:MM:SS LEVEL footprints.module: message".
OWN_LINE = re.compile(r"^\d\d:\d\d:\d\d (INFO|WARNING|ERROR) footprints[.\w]*: ")
PROGRESS_BAR = re.compile(r"^(segment|AOI_\w+ tiles): ")
LOOPBACK = {"127.0.0.1", "::1"}
# A process of the command still running this long after it exited was left behind.
LEAVING_S = 3.0


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A synthetic 4-tile AOI and the bbox of all of it."""
    root = tmp_path_factory.mktemp("scene")
    write_scene(open_store(root).write_bytes, 4, 0)
    return root, find_tiles(open_store(root)).bbox()


def _env(home: Path) -> dict[str, str]:
    """The environment of a user's first run: an empty Prefect home, no Prefect API set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {"PREFECT_HOME": str(home)}


def _run_argv(scene: tuple[Path, str], out: Path, *extra: str) -> list[str]:
    root, bbox = scene
    return [FOOTPRINTS, *extra, "run", f"--aoi={bbox}", "--source", str(root), "--out", str(out)]


@pytest.fixture
def busy_cores() -> Iterator[int]:
    """Every core kept busy by another program for the length of the test."""
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)
    ]
    yield len(burners)
    for burner in burners:
        burner.kill()
        burner.wait()


@pytest.mark.slow
def test_first_run_succeeds_on_a_busy_machine_with_an_empty_prefect_home(
    scene: tuple[Path, str], tmp_path: Path, busy_cores: int
) -> None:
    out = tmp_path / "out.gpkg"
    started = time.monotonic()
    done = subprocess.run(
        _run_argv(scene, out, "-q"), env=_env(tmp_path / "home"), capture_output=True, text=True, check=False
    )
    print(f"first run with {busy_cores} busy cores: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stderr
    assert len(gpd.read_file(out, layer="buildings")) > 100


@pytest.mark.slow
def test_console_shows_the_runs_own_lines_and_its_summary_only(
    scene: tuple[Path, str], tmp_path: Path
) -> None:
    out = tmp_path / "out.gpkg"
    done = subprocess.run(
        _run_argv(scene, out), env=_env(tmp_path / "home"), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    # Text mode reads a bar's redraws (carriage returns) as lines of their own.
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    strangers = [line for line in lines if not (OWN_LINE.match(line) or PROGRESS_BAR.match(line))]
    assert strangers == []
    assert not any("distributed" in line or "telemetry" in line.lower() for line in lines)
    summary = lines[-1]
    assert re.search(
        rf"\d+ buildings in [\d.]+ km2 .* into {re.escape(str(out))} in [\d.]+ s \(plan ", summary
    )
    assert {line.split(":")[0] for line in lines if PROGRESS_BAR.match(line)} == {"segment"}  # one bar
    # plan, write, summary, and on a slow start a line saying the Prefect server is awaited
    assert len([line for line in lines if OWN_LINE.match(line)]) <= 4, lines

    verbose = subprocess.run(
        _run_argv(scene, tmp_path / "verbose.gpkg", "-v", "-q"),
        env=_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert verbose.returncode == 0, verbose.stderr
    assert re.search(r"DEBUG footprints\.prefect_server: temporary Prefect API server on ", verbose.stderr)
    assert "INFO distributed.scheduler" in verbose.stderr


def _until_segmenting(process: subprocess.Popen[str]) -> list[str]:
    """The process's stderr lines up to the one that says the chips are planned."""
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "chips of" in line:
            return seen
    raise AssertionError("the run ended before segmenting: " + "".join(seen))


def _listening(processes: list[psutil.Process]) -> list[tuple[str, int]]:
    addresses = []
    for process in processes:
        try:
            addresses += [c.laddr for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            continue
    return [(a.ip, a.port) for a in addresses]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_run_leaving_no_process_or_port(
    scene: tuple[Path, str], tmp_path: Path, signum: signal.Signals
) -> None:
    process = subprocess.Popen(
        _run_argv(scene, tmp_path / "out.gpkg", "-q"),
        env=_env(tmp_path / "home"),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # as under a scheduler: the signal goes to the command alone
    )
    _until_segmenting(process)
    family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    listening = _listening(family)
    assert len(family) >= 2  # the command and its temporary Prefect server
    assert listening
    assert {ip for ip, _ in listening} <= LOOPBACK, listening

    stopped = time.monotonic()
    process.send_signal(signum)
    _, rest = process.communicate()
    print(f"{signum.name}: the command exited {time.monotonic() - stopped:.1f} s after the signal")
    assert process.returncode == 128 + signum, rest
    assert rest.strip().splitlines()[-1] == f"footprints: stopped by {signum.name}"
    assert "Traceback" not in rest
    assert _left_behind(family) == []
    assert not (tmp_path / "out.gpkg").exists()  # nothing half-written


def _left_behind(family: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``family`` still running 3 s after the command exited.

    Helpers that watch for their parent's exit (multiprocessing's resource tracker, Dask's
    worker processes) leave a moment after it, not with it.
    """
    deadline = time.monotonic() + LEAVING_S
    while True:
        left = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _children_when_started(process: subprocess.Popen[str]) -> list[psutil.Process]:
    """The command and its children, once it has started a child (its temporary server)."""
    command = psutil.Process(process.pid)
    while not command.children() and process.poll() is None:
        time.sleep(0.05)
    return [command, *command.children(recursive=True)]


@pytest.mark.slow
def test_a_signal_as_the_command_starts_stops_its_server(scene: tuple[Path, str], tmp_path: Path) -> None:
    # The server is started before the command line is imported (footprints/command.py): a
    # signal then, seconds before the run begins, must not leave the server behind.
    process = subprocess.Popen(
        _run_argv(scene, tmp_path / "out.gpkg", "-q"),
        env=_env(tmp_path / "home"),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    family = _children_when_started(process)
    assert len(family) >= 2, "no temporary server was started"
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate()
    assert process.returncode == 128 + signal.SIGTERM, rest
    assert rest.strip().splitlines()[-1] == "footprints: stopped by SIGTERM"
    assert _left_behind(family) == []


def test_a_bad_input_stops_the_server_started_for_the_run(tmp_path: Path) -> None:
    out = str(tmp_path / "out.gpkg")
    process = subprocess.Popen(
        [FOOTPRINTS, "-q", "run", "--aoi=1,2,3", "--source", str(tmp_path), "--out", out],
        env=_env(tmp_path / "home"),
        stderr=subprocess.PIPE,
        text=True,
    )
    family = _children_when_started(process)
    assert len(family) >= 2, "no temporary server was started"
    _, rest = process.communicate()
    assert process.returncode == 2, rest
    assert rest.strip().splitlines()[-1].startswith("footprints: error: 1,2,3: ")
    assert _left_behind(family) == []
