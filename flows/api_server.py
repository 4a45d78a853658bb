"""The Prefect API a command runs against: the server PREFECT_API_URL names, else a temporary one
of the command's own on loopback (footprints/prefect_server.py), waited for as long as it takes to
start.

Prefect starts such a temporary server by itself when no API is set, but gives it 20 seconds
(its test harness 30), and the first start on a busy machine, which creates and migrates a new
database, took 20.5 s and failed. Here the wait ends when the server answers or when its process
exits, never on a clock. The server is stopped when the block ends, however it ends: the command
line turns SIGTERM into an ordinary exit for this.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.logging.handlers import APILogWorker
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    PREFECT_SERVER_DATABASE_CONNECTION_URL,
    get_current_settings,
    temporary_settings,
)

from footprints.prefect_server import TemporaryServer


@contextmanager
def prefect_api(database: Path | None = None, launched: TemporaryServer | None = None) -> Iterator[str]:
    """Yield the URL of the Prefect API to use: PREFECT_API_URL's when set, else a temporary
    server's, started for the block and stopped when it ends.

    Args:
        database: SQLite file of a temporary server (tests give each session its own); None
            takes Prefect's default, under PREFECT_HOME.
        launched: A temporary server already starting (the ``footprints`` executable starts one
            early, see footprints/command.py), used instead of a new one, or stopped when an API
            is configured after all (in a Prefect profile rather than the environment).
    """
    configured = PREFECT_API_URL.value()
    if configured:
        if launched is not None:
            launched.stop()
        yield str(configured)
        return
    updates: dict = {PREFECT_SERVER_ANALYTICS_ENABLED: False}  # the server must not phone home
    if database is not None:
        updates[PREFECT_SERVER_DATABASE_CONNECTION_URL] = f"sqlite+aiosqlite:///{database}"
    with temporary_settings(updates=updates):
        server = (
            launched
            or TemporaryServer(get_current_settings().to_environment_variables(exclude_unset=True)).launch()
        )
        try:
            server.wait()
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                try:
                    yield server.api_url
                finally:
                    # Log lines still queued for the API, a crashed run's last ones included,
                    # go before the server does, not after it.
                    APILogWorker.drain_all(timeout=10)
        finally:
            server.stop()
