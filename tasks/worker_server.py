"""The process that a local Dask cluster's worker processes are forked from.

Kept light (the standard library only), so that the command line can start it before its own
heavy imports.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import signal

# What a worker process runs, imported once into the server, so that each worker starts with
# torch, rasterio and shapely already imported.
WORKER_MODULES = ["footprints.tasks.worker_preload"]


def start_worker_server() -> None:
    """Start the process that the local cluster's worker processes are forked from, unless it runs.

    It imports WORKER_MODULES once and starts with no threads, so that forking it is safe where
    forking a running flow's process (its Prefect and Dask threads, maybe a GPU context) is not.
    Started early, it imports while this process does other work; the cluster waits for it.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_MODULES)
    multiprocessing.forkserver.ensure_running()


def stop_worker_server() -> None:
    """Kill the server process, if this process started one.

    It leaves by itself once this process has gone, but only after its imports: a command that
    ends early (bad input, a signal) would leave it running for seconds.
    """
    # The standard library keeps the server's process id to itself; nothing public ends it.
    pid = multiprocessing.forkserver._forkserver._forkserver_pid  # pyright: ignore[reportAttributeAccessIssue]
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
