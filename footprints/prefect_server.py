"""Prefect's temporary API server as a process of the command's own, started without Prefect.

A command that runs a flow with no API configured needs a server, and starting one takes seconds
(Prefect's imports, the database). The command line starts it as soon as it has parsed its
arguments, so that the server starts while the command imports the flows and checks its inputs
(flows/api_server.py waits for it, or stops it when an API is configured after all). This module
imports nothing of Prefect for that reason: it runs Prefect's own command line for the server,
uvicorn over Prefect's app factory, found without importing the package.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

POLL_S = 0.2
REPORT_EVERY_S = 15.0
STOP_WAIT_S = 5.0
PORT_IN_USE = 3  # uvicorn's exit status when its port was taken meanwhile


class TemporaryServer:
    """Prefect's API server in a process of its own on loopback, for one command.

    Attributes:
        port: The port it listens on.
        env: Settings it starts with, over this process's environment.
        process: Its process from `launch` to `stop`.
    """

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        """The API's base URL."""
        return f"http://127.0.0.1:{self.port}/api"

    def launch(self) -> TemporaryServer:
        """Start the server's process and return at once (see `wait`)."""
        spec = importlib.util.find_spec("prefect")
        if spec is None or spec.origin is None:
            raise RuntimeError("Prefect is not installed")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(Path(spec.origin).parent.parent),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env={
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                **self.env,
            },
        )
        return self

    def wait(self) -> None:
        """Return once the server answers, however long its start takes (a first start on a busy
        machine creates and migrates a database: 20 s once); raise if its process exits first.
        A slow start is reported while it lasts."""
        started = reported = time.monotonic()
        with httpx.Client(timeout=5) as client:
            while not self._answers(client):
                assert self.process is not None, "launched"
                status = self.process.poll()
                if status == PORT_IN_USE:  # taken between choosing it and binding it
                    self.port = free_port()
                    self.launch()
                elif status is not None:
                    self.process = None
                    raise RuntimeError(f"the temporary Prefect API server exited with status {status}")
                if time.monotonic() - reported > REPORT_EVERY_S:
                    reported = time.monotonic()
                    log.info("waiting for the temporary Prefect API server (%.0f s)", reported - started)
                time.sleep(POLL_S)
        log.debug("temporary Prefect API server on %s after %.1f s", self.api_url, time.monotonic() - started)

    def stop(self) -> None:
        """Stop the server: terminated, then killed if it has not gone after a few seconds."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def _answers(self, client: httpx.Client) -> bool:
        try:
            return client.get(f"{self.api_url}/health").status_code == 200
        except httpx.HTTPError:
            return False


def free_port() -> int:
    """A loopback port free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
