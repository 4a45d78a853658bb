"""The production stack, started here from real components on loopback, runs the nightly deployment.

PostgreSQL (Debian's server binaries; .ci/run installs them), a Prefect server on it, a Prefect
process worker polling the ``footprints`` pool, a Dask scheduler with a CPU worker and a worker
offering ``GPU=1``, and an S3 API (the session's moto server). The Prefect part is started with
the README's deployment block as written, which also deploys prefect.yaml; the test triggers the
nightly deployment with `prefect deployment run` and waits for the worker to run it: tiles from
S3, the GeoPackage uploaded to S3.

Nothing waits on a start-up clock: each wait ends when the component answers, or fails at once
when its process exits. A ceiling far above any wait measured here only keeps a hung component
from holding CI for its whole limit.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import geopandas as gpd
import httpx
import pytest
import shapely
from readme_commands import block

from footprints.geo.layouts import find_tiles
from footprints.geo.scoring import score_footprints
from footprints.geo.stores import S3Options, open_store
from footprints.geo.synth import scene_truth, write_scene

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CEILING_S = 900.0
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        pytest.skip("PostgreSQL's server is not installed (apt-get install postgresql; .ci/run does)")
    return Path(found[-1]).parent


@dataclass
class Stack:
    """The processes of the stack, with their logs, stopped in reverse order of their start."""

    logs: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str], **options) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("w")
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, **options)
        self.processes[name] = process
        return process

    def tail(self, name: str, lines: int = 40) -> str:
        text = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()
        return f"--- {name} (last {lines} lines) ---\n" + "\n".join(text[-lines:])

    def wait_for(self, what: str, ready: Callable[[], bool]) -> float:
        """Wait until ``ready()``; fail as soon as a process of the stack has exited. Returns seconds."""
        started = time.monotonic()
        while not ready():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    pytest.fail(
                        f"{name} exited ({process.returncode}) while waiting for {what}\n{self.tail(name)}"
                    )
            if time.monotonic() - started > CEILING_S:
                pytest.fail(
                    f"{what}: nothing after {CEILING_S:.0f} s\n" + "\n".join(map(self.tail, self.processes))
                )
            time.sleep(0.5)
        return time.monotonic() - started

    def stop(self) -> None:
        # One at a time, so that each stops while what it talks to is still up.
        for process in reversed(self.processes.values()):
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def _connects(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return True
        except OSError:
            return False

    return check


def _start_postgres(stack: Stack, data: Path) -> str:
    """A private PostgreSQL cluster on loopback; returns Prefect's URL of a fresh database in it."""
    bindir = _postgres_bin()
    # The server refuses to run as root: as root, it runs as the postgres user Debian creates.
    user = {"user": "postgres"} if os.geteuid() == 0 else {}
    if user:
        shutil.chown(data, "postgres")
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    subprocess.run(
        [bindir / "initdb", "-D", data / "db", "-U", "footprints", "-A", "trust", "-E", "UTF8", "--no-sync"],
        env=env, check=True, capture_output=True, **user,
    )  # fmt: skip
    port = _free_port()
    server = [str(bindir / "postgres"), "-D", str(data / "db"), "-k", str(data), "-F"]
    stack.start("postgres", [*server, "-h", "127.0.0.1", "-p", str(port)], env, **user)
    stack.wait_for(
        "PostgreSQL",
        lambda: (
            subprocess.run([bindir / "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode == 0
        ),
    )
    subprocess.run(
        [bindir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "footprints", "prefect"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    return f"postgresql+asyncpg://footprints@127.0.0.1:{port}/prefect"


@dataclass(frozen=True)
class Running:
    """The stack's addresses and the scene it serves."""

    processes: Stack
    api: str
    env: dict[str, str]
    scheduler: str
    gpu_worker: str
    source: str
    bucket: str
    startup_s: dict[str, float]


@pytest.fixture(scope="module")
def stack(s3_endpoint: str) -> Iterator[Running]:
    """The whole stack, and a synthetic 2 x 2 tile scene in a bucket of the S3 API."""
    data = Path(tempfile.mkdtemp(prefix="footprints-stack-"))  # readable by the postgres user
    data.chmod(0o755)
    running = Stack(data)
    startup: dict[str, float] = {}
    try:
        clock = time.monotonic()
        database = _start_postgres(running, data)
        startup["postgres"] = time.monotonic() - clock

        base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        port = _free_port()
        base |= {
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "PREFECT_HOME": str(data / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "FOOTPRINTS_CACHE": str(data / "cache"),
            "FOOTPRINTS_HOME": str(ROOT),
        }
        api = f"http://127.0.0.1:{port}/api"
        env = base | {"PREFECT_API_URL": api}

        scheduler_port = _free_port()
        scheduler = f"tcp://127.0.0.1:{scheduler_port}"
        loopback = ["--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"]
        clock = time.monotonic()
        running.start(
            "dask-scheduler", [str(BIN / "dask"), "scheduler", "--port", str(scheduler_port), *loopback], env
        )
        running.wait_for("the Dask scheduler", _connects(scheduler_port))
        worker = [str(BIN / "dask"), "worker", scheduler, "--nthreads", "1", "--host", "127.0.0.1"]
        running.start(
            "dask-worker-cpu", [*worker, "--name", "cpu", "--dashboard-address", "127.0.0.1:0"], env
        )
        running.start(
            "dask-worker-gpu",
            [*worker, "--name", "gpu", "--resources", "GPU=1", "--dashboard-address", "127.0.0.1:0"],
            env,
        )
        workers: dict = {}

        def both_workers() -> bool:
            from distributed import Client

            with Client(scheduler, timeout=10) as client:
                workers.update(client.scheduler_info(n_workers=-1)["workers"])
            return len(workers) == 2

        running.wait_for("two Dask workers", both_workers)
        startup["dask"] = time.monotonic() - clock
        gpu = next(a for a, w in workers.items() if w.get("resources", {}).get("GPU"))

        # The README's deployment block, as written, in its order. The environment puts the server
        # on a free port, on PostgreSQL and without its UI, and points the other commands at it
        # (a variable outranks the profile's `prefect config set`). `bash -c` execs a simple
        # command in place, so that stopping the process stops the command itself.
        server_env = base | {
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_API_DATABASE_CONNECTION_URL": database,
            "PREFECT_SERVER_UI_ENABLED": "false",
        }
        # The worker polls every second rather than Prefect's 10, so that a run starts soon.
        worker_env = env | {"PREFECT_WORKER_QUERY_SECONDS": "1"}
        for command in block("Deployments").commands:
            shell = ["bash", "-c", command]
            clock = time.monotonic()
            if " server start" in command:
                running.start("prefect-server", shell, server_env, cwd=ROOT)
                startup["prefect server"] = running.wait_for("the Prefect server", _answers(f"{api}/health"))
            elif " worker start" in command:
                running.start("prefect-worker", shell, worker_env, cwd=ROOT)
            else:
                done = subprocess.run(shell, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
                assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
                if " deploy " in command:
                    startup["deploy"] = time.monotonic() - clock
        assert set(running.processes) >= {"prefect-server", "prefect-worker"}

        bucket = "stack"
        boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        source = f"s3://{bucket}/vegas"
        write_scene(open_store(source, S3Options(endpoint_url=s3_endpoint)).write_bytes, 4, 5)
        yield Running(running, api, env, scheduler, gpu, source, bucket, startup)
    finally:
        running.stop()
        shutil.rmtree(data, ignore_errors=True)


def _prefect(stack: Running, *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "prefect"), *args], env=stack.env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_worker_runs_the_nightly_deployment_end_to_end(stack: Running, s3_endpoint: str) -> None:
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(stack.api) as client:
        deployment = client.read_deployment_by_name("aoi-footprints/nightly-aoi")
    assert deployment.work_pool_name == "footprints"
    assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]
    # The shipped AOI parameter names a file of the repository: the run below reads it.
    assert (ROOT / deployment.parameters["aoi"]).is_file()

    out = f"s3://{stack.bucket}/nightly/buildings.gpkg"
    overrides = {
        "source": stack.source,
        "out": out,
        "dask_address": stack.scheduler,
        "s3": {"endpoint_url": s3_endpoint},
    }
    clock = time.monotonic()
    said = _prefect(
        stack, "deployment", "run", "aoi-footprints/nightly-aoi", "--params", json.dumps(overrides)
    )
    found = re.search(r"UUID:\s*([0-9a-f-]{36})", said)
    assert found, said
    run_id = found.group(1)

    state: dict = {}

    def finished() -> bool:
        state.update(httpx.get(f"{stack.api}/flow_runs/{run_id}", timeout=10).json()["state"] or {})
        return state.get("type") in TERMINAL

    # A run the worker takes up ends, Completed or not; a component that dies fails the wait at once.
    stack.processes.wait_for(f"flow run {run_id}", finished)
    took = time.monotonic() - clock
    messages: list[str] = []

    def summary_logged() -> bool:
        # The flow run's log lines reach the API in batches, the last ones after its final state.
        query = {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200}
        messages[:] = [line["message"] for line in httpx.post(f"{stack.api}/logs/filter", json=query).json()]
        return state["type"] != "COMPLETED" or any(m.startswith(f"run {run_id}: ") for m in messages)

    stack.processes.wait_for("the flow run's last log lines", summary_logged)
    print(
        f"start-up {', '.join(f'{k} {v:.1f} s' for k, v in stack.startup_s.items())}; "
        f"flow run {took:.1f} s from `prefect deployment run` to {state['type']}"
    )
    assert state["type"] == "COMPLETED", "\n".join(messages[-30:])

    local = Path(tempfile.mkdtemp()) / "buildings.gpkg"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").download_file(
        stack.bucket, "nightly/buildings.gpkg", str(local)
    )
    buildings = gpd.read_file(local, layer="buildings", engine="pyogrio")
    runs = gpd.read_file(local, layer="runs", engine="pyogrio")
    assert list(runs["run_id"]) == [run_id] == list(buildings["run_id"].unique())
    # Inference asked for the GPU resource: the CPU worker took no batch.
    assert json.loads(runs["workers"].iloc[0]) == [stack.gpu_worker]

    aoi = gpd.read_file(ROOT / deployment.parameters["aoi"]).to_crs(32611).geometry.union_all()
    truth = scene_truth(find_tiles(open_store(stack.source, S3Options(endpoint_url=s3_endpoint))))
    centres = shapely.point_on_surface(truth.to_crs(32611).geometry.values)
    truth = truth[shapely.contains(aoi, centres)]
    assert len(truth) >= 10
    assert score_footprints(truth, buildings, 0.3).overall["f1"] > 0.55
    # The operator's view: the run's progress and its closing summary are in the UI's log.
    summary = next(m for m in messages if m.startswith(f"run {run_id}: "))
    assert f"{len(buildings)} buildings" in summary, summary
    assert out in summary, summary
    assert any(re.fullmatch(r"segment: (\d+) of \1 chips \(100%\)", m) for m in messages), messages
