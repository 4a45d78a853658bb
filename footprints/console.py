"""What a command prints on its terminal, and how it ends when told to stop.

At the default level an operator sees the project's own progress and results and every warning,
from whatever library: nothing of Dask's, Prefect's or the HTTP clients' routine chatter. ``-v``
shows the project's debug lines and the libraries' INFO lines. The decision is made by a filter
on the terminal's handler rather than by the libraries' logger levels, which some of them reset
when imported (distributed sets its own to INFO). What is sent to the Prefect API is decided
elsewhere (flows/__init__.py): the UI gets the project's INFO lines, progress included.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import cast

PROJECT = "footprints"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Settings of the libraries a command runs on, unless the environment says otherwise: no usage
# reports to the network (Prefect's server sends them by default, and machines that run batch
# jobs often have no route out).
QUIET_DEFAULTS = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
# Prefect's own terminal handler, which its loggers use instead of the root's: warnings only,
# as for every other library. Its loggers keep their levels, so the UI still gets their lines.
PREFECT_TERMINAL_LEVEL = {"PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING"}


class _OperatorLines(logging.Filter):
    """Warnings and errors of any logger; the project's INFO lines except progress reports,
    which the terminal shows as a bar (see tasks/progress.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        ours = record.name == PROJECT or record.name.startswith(PROJECT + ".")
        return ours and not getattr(record, "progress", False)


class TerminalHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record comes (as logging's last
    resort does), so that a command called twice in one process never writes to a stale one.

    (Its name must not start with an underscore: Prefect replaces a root handler so named.)
    """

    @property
    def stream(self):  # pyright: ignore[reportIncompatibleVariableOverride]
        return sys.stderr

    @stream.setter
    def stream(self, _: object) -> None:
        pass


def configure_console(verbose: bool) -> None:
    """Send log records to the terminal for people, and set the libraries' quiet defaults.

    Args:
        verbose: The project's DEBUG lines and every library's INFO lines too.
    """
    for name, value in (QUIET_DEFAULTS | ({} if verbose else PREFECT_TERMINAL_LEVEL)).items():
        os.environ.setdefault(name, value)
    handler = TerminalHandler()
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    if not verbose:
        handler.addFilter(_OperatorLines())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, TerminalHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger(PROJECT).setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(True)  # Python warnings become records, shown by the same rule


class Stopped(SystemExit):
    """The command was told to stop (SIGTERM, SIGINT); its exit status is 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signal_name = signal.Signals(signum).name


def report_stop(stopped: Stopped) -> int:
    """Say what stopped the command, on stderr; return the exit status it calls for."""
    print(f"footprints: stopped by {stopped.signal_name}", file=sys.stderr)
    return cast(int, stopped.code)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


@contextmanager
def stopping_cleanly() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise `Stopped` in the main thread.

    By default SIGTERM, what schedulers send an overrunning job, ends the process at once:
    context managers and atexit handlers do not run, and the temporary Prefect API server and a
    LocalCluster's threads are left behind. As an exception, the run unwinds: Prefect marks the
    flow run Crashed, the cluster closes, the server stops, and the command exits 128 + signal.
    """
    signals = (signal.SIGTERM, signal.SIGINT)
    before = [signal.signal(signum, _stop) for signum in signals]
    try:
        yield
    finally:
        for signum, handler in zip(signals, before, strict=True):
            signal.signal(signum, handler)
