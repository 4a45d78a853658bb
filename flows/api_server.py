"""The Prefect API a command runs against: the server PREFECT_API_URL names, else a temporary one
of the command's own on loopback, waited for as long as it takes to start.

Prefect starts such a temporary server by itself when no API is set, but gives it 20 seconds
(its test harness 30), and the first start on a busy machine, which creates and migrates a new
database, took 20.5 s and failed. Here the wait ends when the server answers or when its process
exits, never on a clock; a slow start is reported while it lasts. The server is stopped when the
block ends, however it ends: the command line turns SIGTERM into an ordinary exit for this.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prefect.logging.handlers import APILogWorker
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    PREFECT_SERVER_DATABASE_CONNECTION_URL,
    temporary_settings,
)

log = logging.getLogger(__name__)

POLL_S = 0.2
REPORT_EVERY_S = 15.0
PORT_IN_USE = 3  # uvicorn's exit status when its port was taken meanwhile


class _TemporaryServer(SubprocessASGIServer):
    """Prefect's temporary API server, with a start that waits on the process, not on a clock."""

    def start(self, timeout: int | None = None) -> None:
        """Start the server and return once it answers; raise if its process exits first.

        ``timeout`` is accepted for Prefect's signature and ignored: see the module's docstring.
        """
        if self.running:
            return
        # Prefect's own command line for the server (uvicorn over its app factory, UI off).
        self.server_process = self._run_uvicorn_command()
        self.running = True
        started = reported = time.monotonic()
        with httpx.Client(timeout=5) as client:
            while not self._answers(client):
                status = self.server_process.poll()
                if status == PORT_IN_USE:
                    self.port = self.find_available_port()
                    self.server_process = self._run_uvicorn_command()
                elif status is not None:
                    self.running = False
                    self.server_process = None
                    raise RuntimeError(f"the temporary Prefect API server exited with status {status}")
                if time.monotonic() - reported > REPORT_EVERY_S:
                    reported = time.monotonic()
                    log.info("waiting for the temporary Prefect API server (%.0f s)", reported - started)
                time.sleep(POLL_S)
        log.debug("temporary Prefect API server on %s after %.1f s", self.api_url, time.monotonic() - started)

    def _answers(self, client: httpx.Client) -> bool:
        try:
            return client.get(f"{self.api_url}/health").status_code == 200
        except httpx.HTTPError:
            return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def prefect_api(database: Path | None = None) -> Iterator[str]:
    """Yield the URL of the Prefect API to use: PREFECT_API_URL's when set, else a temporary
    server's, started for the block and stopped when it ends.

    Args:
        database: SQLite file of a temporary server (tests give each session its own); None
            takes Prefect's default, under PREFECT_HOME.
    """
    configured = PREFECT_API_URL.value()
    if configured:
        yield str(configured)
        return
    updates: dict = {PREFECT_SERVER_ANALYTICS_ENABLED: False}  # the server must not phone home
    if database is not None:
        updates[PREFECT_SERVER_DATABASE_CONNECTION_URL] = f"sqlite+aiosqlite:///{database}"
    with temporary_settings(updates=updates):
        server = _TemporaryServer(_free_port())
        try:
            server.start()
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                try:
                    yield server.api_url
                finally:
                    # Log lines still queued for the API, a crashed run's last ones included,
                    # go before the server does, not after it.
                    APILogWorker.drain_all(timeout=10)
        finally:
            server.stop()
