"""The Dask cluster of an AOI run: an existing one by address, or a LocalCluster for the run."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from distributed import LocalCluster

LOOPBACK_ANY_PORT = "127.0.0.1:0"


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

    The local cluster's workers are threads of this process, one task at a time each, sharing the
    machine's cores between their forward passes: on one machine, a worker process under Dask's
    nanny ran the same forward pass about 1.4 times slower than a worker thread
    (benchmarks/README.md), and the pixels stay on the workers either way.
    """
    if address:
        yield address, None
        return
    workers = workers or default_workers()
    # A scheduler and its workers serve HTTP (health, metrics, and the workers' dashboards where
    # bokeh is installed) even with the dashboard off, by default on every interface: here on
    # loopback only, on ports of the system's choosing.
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=False,
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
                # waits for its forward pass by default, seconds on a busy machine; the thread is
                # a daemon, and the command leaves without finalising around it (footprints/command.py).
                for worker in list(cluster.workers.values()):
                    cluster.sync(worker.close, executor_wait=False, reason="run-stopped")
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
