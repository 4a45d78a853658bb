"""The checks of an AOI run's inputs, made before any of its work, and which failures to retry.

`check_run_inputs` needs no Prefect: the command line runs it before starting the
flow, so that a bad input costs a second and prints one line, and the flow runs it first, for
deployments. Every failure is an InputError naming the input and the cause.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from distributed.comm.addressing import parse_address, parse_host_port
from prefect import Task
from prefect.client.schemas.objects import State, TaskRun
from prefect.states import Failed

from footprints.geo.aoi import read_aoi
from footprints.geo.errors import InputError
from footprints.geo.run_inputs import check_output, check_sizes
from footprints.geo.runs import DEFAULTS
from footprints.models.registry import resolve_checkpoint


def check_run_inputs(
    aoi: str,
    source: str,
    out: str | Path,
    model: str | None = None,
    method: str | None = None,
    aoi_crs: str = "EPSG:4326",
    crs: str = DEFAULTS.crs,
    chip_size: int = DEFAULTS.chip_size,
    overlap: int = DEFAULTS.overlap,
    batch_size: int = DEFAULTS.batch_size,
    min_area_m2: float = DEFAULTS.min_area_m2,
    simplify_m: float = DEFAULTS.simplify_m,
    dask_workers: int | None = None,
    dask_address: str | None = None,
) -> None:
    """Refuse an AOI run whose inputs cannot work, before it reads a tile.

    The arguments are aoi_flow's. The checks go from the cheapest to the dearest: the sizes,
    the output file and CRS, a local source folder, the AOI, a Dask scheduler named by address,
    and last the checkpoint (read, and its weights compared with its method's model).

    Raises:
        InputError: The first input at fault, named, with the cause.
    """
    check_sizes(chip_size, overlap, batch_size, min_area_m2, simplify_m, dask_workers)
    check_output(out, crs)
    if "://" not in source and not Path(source).expanduser().is_dir():
        raise InputError(source, "no such folder of tiles")
    read_aoi(aoi, aoi_crs)
    if dask_address:
        check_scheduler(dask_address)
    resolve_checkpoint(model, method)


def check_scheduler(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a Dask scheduler address that is malformed or where nothing answers.

    Without this, a run plans its chips and then waits Dask's 30 s connect timeout, to end in a
    traceback of a few hundred lines. Only TCP-based addresses (tcp, tls) are tried.

    Raises:
        InputError: Naming the address and the cause.
    """
    try:
        scheme, location = parse_address(address)
        if scheme not in ("tcp", "tls"):
            return
        host, port = parse_host_port(location)
    except ValueError as error:
        raise InputError(f"Dask scheduler {address}", f"not a scheduler address ({error})") from None
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as error:
        why = error.strerror or type(error).__name__
        raise InputError(f"Dask scheduler {address}", f"cannot be reached ({why})") from None


def retry_unless_input_error(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """A task's ``retry_condition_fn``: retry any failure but bad input, which a retry repeats.

    An InputError (a file or setting that cannot be used) fails the same way every time; a
    store that drops out, or a worker lost, may well work on the next try.
    """
    return not isinstance(state.data, InputError)


def refused_run(**inputs: Any) -> State[Any] | None:
    """The Failed state that ends a flow run whose inputs `check_run_inputs` refuses, else None.

    A flow that returns it ends Failed and makes its caller raise the InputError, without the
    traceback Prefect logs for an exception raised in the flow: the one line says it all.

    Args:
        inputs: check_run_inputs' arguments, by name.
    """
    try:
        check_run_inputs(**inputs)
    except InputError as error:
        return Failed(message=str(error), data=error)
    return None
