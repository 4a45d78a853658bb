"""The Dask cluster of an AOI run: an existing one by address, or a LocalCluster for the run."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import dask.config
import torch
from distributed import LocalCluster

from .worker_server import start_worker_server

LOOPBACK_ANY_PORT = "127.0.0.1:0"
# Seconds a worker is given to end its task when the run is stopped, before it is killed.
STOP_WAIT_S = 0.5


def default_workers() -> int:
    """Workers of a LocalCluster: one per GPU, else one per core (up to 8).

    On CPU, several single-threaded forward passes side by side beat one forward pass on all
    cores (convolutions scale less than linearly with threads), and one worker's reading and
    vectorising overlaps another's forward pass (benchmarks/README.md).
    """
    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, min(8, os.cpu_count() or 1))


@contextmanager
def dask_cluster(address: str | None, workers: int | None = None) -> Iterator[tuple[str, int | None]]:
    """The scheduler address of an existing cluster, or of a LocalCluster started for the run,
    with the threads each forward pass may use (None: let each worker decide).

    The local cluster's workers are processes, one task at a time each, sharing the machine's
    cores between their forward passes. Worker threads of this process would wait on each other
    for Python's lock between the native calls: a 256-tile run on two cores spent a quarter of
    its workers' time waiting so, and took 38 to 40 s against 33 to 35 s with processes
    (benchmarks/README.md). Processes are forked from a server process that has imported what a
    worker runs (see start_worker_server), and Dask's nanny is kept from setting glibc's trim
    threshold in them: trimming at every free made a forward pass 1.4 times slower; the workers
    trim past a ceiling of their own instead (chip_work.ModelPlugin.keep_memory_flat).
    """
    if address:
        yield address, None
        return
    workers = workers or default_workers()
    start_worker_server()
    # A scheduler and its workers serve HTTP (health, metrics, and the workers' dashboards where
    # bokeh is installed) even with the dashboard off, by default on every interface: here on
    # loopback only, on ports of the system's choosing.
    with dask.config.set(
        {"distributed.worker.multiprocessing-method": "forkserver", "distributed.nanny.pre-spawn-environ": {}}
    ):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            # The environment as it is now, not as it was when the worker server started (an
            # earlier run of this process may have started it): credentials, settings.
            env=dict(os.environ),
            dashboard_address=None,  # pyright: ignore[reportArgumentType]  # None: no dashboard, as documented
            scheduler_kwargs={"dashboard_address": LOOPBACK_ANY_PORT},
            worker_dashboard_address=LOOPBACK_ANY_PORT,
            silence_logs=logging.ERROR,
        )
    worker_log = logging.getLogger("distributed.worker")
    try:
        with cluster:
            try:
                yield cluster.scheduler_address, max(1, (os.cpu_count() or 1) // workers)
            except (KeyboardInterrupt, SystemExit):
                # The process is going away (the command line turns SIGTERM and SIGINT into
                # SystemExit): the batches in flight are discarded, not awaited. Closing a worker
                # waits for its forward pass, seconds on a busy machine; killing it does not.
                for worker in list(cluster.workers.values()):
                    cluster.sync(worker.kill, timeout=STOP_WAIT_S, reason="run-stopped")
                raise
            finally:
                worker_log.addFilter(_heartbeat_at_close)
    finally:
        worker_log.removeFilter(_heartbeat_at_close)


def _heartbeat_at_close(record: logging.LogRecord) -> bool:
    """False for a worker's failed heartbeat, while the cluster closes: one in flight as the
    scheduler goes is logged as an error with a traceback, though nothing is wrong (it put a
    traceback under a failed run's one-line error, once in CI)."""
    return not record.getMessage().startswith("Failed to communicate with scheduler during heartbeat")
