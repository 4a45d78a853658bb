"""Where a forward pass runs fastest on one machine: this process, or a Dask worker of which kind.

Times the shipped model's ``predict`` on one batch of random chips (median of several calls after
a warm-up), with the same torch thread count everywhere, in: this process; a worker thread of an
in-process LocalCluster; a worker process started by ``dask worker`` with its nanny
(LocalCluster's ``processes=True`` as Dask configures it); one without a nanny; and a worker
process of the AOI flow's own LocalCluster (tasks/cluster.py: forked from a server process,
without the nanny's trim threshold). Prints a table with each time and its ratio to this
process's.

    python benchmarks/dask_worker_forward.py --batch 4 --chip 512 --repeats 5
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time

from distributed import Client, LocalCluster

from footprints.geo.runs import DEFAULTS
from footprints.tasks.cluster import dask_cluster


def forward_seconds(batch: int, chip: int, repeats: int, threads: int) -> float:
    """Median seconds of one ``predict`` call on a random batch, after one warm-up call."""
    import torch

    from footprints.models.registry import load_segmenter, resolve_checkpoint

    torch.set_num_threads(threads)
    segmenter = load_segmenter(resolve_checkpoint()[0])
    chips = torch.rand(batch, 3, chip, chip, generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        with torch.inference_mode():
            segmenter.predict(chips)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def on_worker_process(client: Client, address: str, nanny: bool, args: tuple[int, ...]) -> float:
    """The forward pass on a `dask worker` process started for the measurement."""
    command = [
        sys.executable,
        "-m",
        "distributed.cli.dask_worker",
        address,
        "--nthreads",
        "1",
        "--no-dashboard",
    ]
    worker = subprocess.Popen([*command, *([] if nanny else ["--no-nanny"])], stderr=subprocess.DEVNULL)
    try:
        client.wait_for_workers(1, timeout=120)
        return client.submit(forward_seconds, *args, pure=False).result()
    finally:
        worker.terminate()
        worker.wait(30)
        while client.scheduler_info()["workers"]:
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=DEFAULTS.batch_size)
    parser.add_argument("--chip", type=int, default=DEFAULTS.chip_size)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    measure = (args.batch, args.chip, args.repeats, os.cpu_count() or 1)

    found = {"this process": forward_seconds(*measure)}
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        found["LocalCluster worker thread"] = client.submit(forward_seconds, *measure, pure=False).result()
    with (
        LocalCluster(n_workers=0, dashboard_address=None, silence_logs=logging.ERROR) as cluster,
        Client(cluster) as client,
    ):
        found["worker process with nanny"] = on_worker_process(
            client, cluster.scheduler_address, True, measure
        )
        found["worker process, no nanny"] = on_worker_process(
            client, cluster.scheduler_address, False, measure
        )
    with dask_cluster(None, 1) as (address, _), Client(address) as client:
        found["worker process of the flow's LocalCluster"] = client.submit(
            forward_seconds, *measure, pure=False
        ).result()

    print(
        f"batch {args.batch} x {args.chip} px, {measure[3]} torch threads, median of {args.repeats} calls\n"
    )
    print("| where | seconds per batch | ratio |")
    print("|---|---|---|")
    for where, seconds in found.items():
        print(f"| {where} | {seconds:.3f} | {seconds / found['this process']:.2f} |")


if __name__ == "__main__":
    main()
