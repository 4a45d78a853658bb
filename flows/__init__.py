"""Prefect flows: AOI inference and training, each a recipe of the named tasks in tasks/.

Inside a flow run, the log lines of every ``footprints`` module, the pure geo/ and models/ ones
included, go to the Prefect API (and so to its UI) as well as to the terminal: the project's
logger gets Prefect's API handler, as Prefect's extra-loggers setting would give it, but only for
records made inside a flow or task run, so that code run outside one logs quietly as before.
"""

import logging

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler
from prefect.settings import PREFECT_LOGGING_EXTRA_LOGGERS


class _InsideRuns(logging.Filter):
    """Passes the records made inside a Prefect flow or task run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _send_logs_to_prefect() -> None:
    project = logging.getLogger("footprints")
    if "footprints" in PREFECT_LOGGING_EXTRA_LOGGERS.value():
        return  # Prefect already sends them
    if not any(isinstance(h, APILogHandler) for h in project.handlers):
        handler = APILogHandler()
        handler.addFilter(_InsideRuns())
        project.addHandler(handler)
    if project.level == logging.NOTSET:
        project.setLevel(logging.INFO)


_send_logs_to_prefect()
