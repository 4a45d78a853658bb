"""The ``footprints`` executable.

It starts the temporary Prefect API server of a command that runs a flow before anything heavy
is imported, so that the server starts while the command line imports torch, Prefect and the
flows and checks its inputs (measured: the server answered 2 s sooner on a 2-core machine). So
too the process that a local Dask cluster's workers are forked from (tasks/worker_server.py),
which imports what a worker runs meanwhile (a 16-tile run about 1 s sooner). This module is kept
light for that: the command line itself is imported after the launches.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from footprints.console import QUIET_DEFAULTS, Stopped, report_stop, stopping_cleanly
from footprints.prefect_server import TemporaryServer
from footprints.tasks.worker_server import start_worker_server, stop_worker_server

# The subcommands that run a Prefect flow, and so need an API.
FLOW_COMMANDS = frozenset({"run", "demo", "train"})
# The subcommands that run the AOI flow, on a local Dask cluster unless given a scheduler.
AOI_COMMANDS = frozenset({"run", "demo"})


def command() -> NoReturn:
    """Run the command line's `main`, then exit with its status without finalising the
    interpreter.

    The exit handlers run as at any exit (Prefect's log and event drains, logging's flush), after
    the threads still running have ended; then the process leaves at once. Finalising the
    interpreter would only free memory the system takes back anyway: tearing down the modules a
    run imports (torch, Prefect, Dask) took 2.1 s after the last handler (benchmarks/README.md).

    A run stopped by a signal has unwound when `main` returns (the flow run Crashed, the cluster
    and the temporary server closed, nothing half-written), but the forward passes in flight were
    not awaited, and their threads still run: it leaves without waiting for them or calling the
    exit handlers, since torch aborts when its thread pools are torn down under a running thread.
    """
    server = None
    try:
        # Stopped before the command line is imported, the command stops its server too.
        with stopping_cleanly():
            if subcommand(sys.argv[1:]) in FLOW_COMMANDS and not os.environ.get("PREFECT_API_URL"):
                quiet = {name: value for name, value in QUIET_DEFAULTS.items() if name not in os.environ}
                server = TemporaryServer(quiet)
                server.launch()
            if starts_local_cluster(sys.argv[1:]):
                start_worker_server()
            from footprints.cli import main

            code = main(api_server=server)
    except Stopped as stopped:
        code = report_stop(stopped)
    finally:
        if server is not None:  # the flow stopped it, unless the command ended before the flow
            server.stop()
        stop_worker_server()
    if code <= 128:  # not 128 + the signal that stopped the run
        # What the interpreter does at exit before finalising: wait for the threads (idle
        # workers of thread pools are told to leave first), then call the exit handlers.
        threading._shutdown()  # pyright: ignore[reportAttributeAccessIssue]
        atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def subcommand(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``: the first argument that is not an option (the options
    before a subcommand are flags)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def starts_local_cluster(argv: Sequence[str]) -> bool:
    """Whether the command in ``argv`` runs the AOI flow on a Dask cluster of its own."""
    return subcommand(argv) in AOI_COMMANDS and not any(arg.startswith("--dask-address") for arg in argv)
