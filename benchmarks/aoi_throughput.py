"""End-to-end throughput of the AOI flow on synthetic AOIs of growing size.

For each AOI size, every measurement runs in a fresh process (so peak memory is that run's own): the
flow over the whole AOI (Prefect's API started beforehand), then the bare model forward pass
(``segmenter.predict``) over the same chips, read beforehand, in the same batches: once with the
flow's parallelism (one single-threaded pass per LocalCluster worker, in processes side by side),
once one pass at a time on every core. Prints a table: tiles/s and km^2/h end to end, peak memory of
the process and the worker processes it starts (their summed PSS), the share of time per stage
(worker stages summed over workers), and the ratio of end-to-end time to each bare forward pass: the
cost of everything that is not the model; the model's FLOP per km^2 (torch's flop counter), the rate
of a large matrix product in the precision the model runs in on every core, and the share of that
rate the forward pass reaches. Then, as whole processes with their start-up, alternating:
``footprints run`` over the AOI as a user types it, and ``naive_tile_loop.py`` (the same model over
each whole tile, one at a time, no overlap, no seams, no dedup), with the ratio of the two. With
``--credentials``, every size is measured a second time with AWS credentials in the environment, as
on every S3 deployment, with the ratio of its time to the time without.

    python benchmarks/aoi_throughput.py --tiles 16 64 256 --repeats 3
    python benchmarks/aoi_throughput.py --tiles 16 --repeats 3 --credentials
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import torch

from footprints.geo.chips import ChipPlan
from footprints.geo.runs import DEFAULTS

STAGES = ("plan", "worker_read", "worker_model", "worker_vectorise", "merge", "write")
# What an S3 deployment has in its environment; the runs read local tiles, so they are never used.
AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "benchmark", "AWS_SECRET_ACCESS_KEY": "benchmark"}


def measure(scene: Path, chip: int, overlap: int, batch: int, workers: int | None) -> dict:
    """One run of the flow and of the bare forward pass over the same chips (in this process and
    in worker processes like the flow's)."""
    from prefect import flow
    from torch.utils.flop_counter import FlopCounterMode

    from footprints.flows.aoi import aoi_flow
    from footprints.geo.aoi import read_aoi
    from footprints.geo.layouts import find_tiles
    from footprints.geo.stores import LocalStore, S3Options
    from footprints.models.registry import load_segmenter, resolve_checkpoint
    from footprints.tasks.cluster import default_workers
    from footprints.tasks.inference import plan_run

    @flow
    def warm_up() -> None:
        """Start the ephemeral Prefect API before the clock runs."""

    warm_up()
    tile_set = find_tiles(LocalStore(scene))
    bbox = tile_set.bbox()
    # The flow starts its own LocalCluster (worker processes), as a user's run does: the clock
    # includes it, and the memory its workers.
    with tempfile.TemporaryDirectory() as out, TreeMemory() as memory:
        started = time.perf_counter()
        summary = aoi_flow(
            bbox,
            str(scene),
            f"{out}/b.gpkg",
            chip_size=chip,
            overlap=overlap,
            batch_size=batch,
            dask_workers=workers,
            progress=False,
        )
        wall = time.perf_counter() - started
    flow_mib = memory.peak / 2**20

    # The same forward passes with the flow's parallelism: one single-threaded pass per worker
    # process, side by side, each over every n-th batch.
    workers = workers or default_workers()
    context = multiprocessing.get_context("forkserver")
    with multiprocessing.Manager() as manager, ProcessPoolExecutor(workers, mp_context=context) as pool:
        barrier = manager.Barrier(workers)
        shares = [
            pool.submit(_forward_share, scene, bbox, chip, overlap, batch, n, workers, barrier)
            for n in range(workers)
        ]
        forward = max(share.result() for share in shares)

    plan = plan_run.fn(read_aoi(bbox), str(scene), S3Options(), chip, overlap)
    segmenter = load_segmenter(resolve_checkpoint()[0])
    batches = _read_batches(scene, plan, batch)
    chips = list(plan.chips)

    def predict(chips: torch.Tensor) -> None:
        with torch.inference_mode():
            segmenter.predict(chips)

    # And one pass at a time on every core.
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    for chips_batch in batches:
        predict(chips_batch)
    forward_all_cores = time.perf_counter() - started
    # How close the forward pass comes to the machine: its FLOP (convolutions and matrix
    # products, as torch counts them) against a large matrix product's rate on the same cores.
    with FlopCounterMode(display=False) as counter:
        predict(batches[0])
    flop = counter.get_total_flops() / len(batches[0]) * len(chips)
    return {
        "wall": wall,
        "forward": forward,
        "forward_all_cores": forward_all_cores,
        "km2": summary.area_km2,
        "tiles": summary.tiles,
        "chips": summary.chips,
        "buildings": summary.buildings,
        "seconds": summary.seconds,
        "flow_mib": flow_mib,
        "flop": flop,
        "precision": str(segmenter.dtype).removeprefix("torch."),
        "matmul_flops": _matmul_flops(segmenter.dtype),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiles", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chip", type=int, default=DEFAULTS.chip_size)
    parser.add_argument("--overlap", type=int, default=DEFAULTS.overlap)
    parser.add_argument("--batch", type=int, default=DEFAULTS.batch_size)
    parser.add_argument("--workers", type=int, help="LocalCluster workers (default: the flow's)")
    parser.add_argument("--scenes", type=Path, default=Path("runs/bench-scenes"))
    parser.add_argument(
        "--credentials", action="store_true", help="measure again with AWS credentials in the environment"
    )
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # internal: measure one scene
    args = parser.parse_args()
    if args.one:
        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(measure(args.one, args.chip, args.overlap, args.batch, args.workers)))
        return

    from footprints.geo.stores import LocalStore
    from footprints.geo.synth import write_scene

    without = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    environments = {"no": without} | ({"yes": without | AWS_CREDENTIALS} if args.credentials else {})
    rows = []
    for tiles in args.tiles:
        scene = args.scenes / f"tiles-{tiles}"
        if not (scene / "done").exists():
            write_scene(LocalStore(scene).write_bytes, tiles, seed=1, progress=True)
            (scene / "done").touch()
        for credentials, env in environments.items():
            runs = []
            for _ in range(args.repeats):
                run = _measure_in_new_process(scene, args, env)
                run["run_process"], run["naive_process"] = _whole_processes(scene, args, env)
                runs.append(run)
            rows.append((tiles, credentials, runs))
        print(f"measured {tiles} tiles", file=sys.stderr)

    print(
        f"chip {args.chip} px, overlap {args.overlap} px, batch {args.batch}, "
        f"{args.workers or 'default'} workers; medians of {args.repeats} runs\n"
    )
    header = (
        "| tiles | AWS credentials | chips | km^2 | wall s | wall / without credentials | tiles/s | km^2/h "
        "| peak MiB | "
        + " | ".join(s.removeprefix("worker_") for s in STAGES)
        + " | end-to-end / forward | end-to-end / forward on all cores "
        + "| `footprints run` process s | naive loop process s | run / naive | naive km^2/h "
        + "| model GFLOP / km^2 | precision | matmul GFLOP/s | forward GFLOP/s on all cores "
        + "| share of matmul |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    baseline = {
        tiles: statistics.median(r["wall"] for r in runs) for tiles, cred, runs in rows if cred == "no"
    }
    for tiles, credentials, runs in rows:
        med = {
            k: statistics.median(r[k] for r in runs)
            for k in (
                "wall",
                "forward",
                "forward_all_cores",
                "flow_mib",
                "run_process",
                "naive_process",
                "flop",
                "matmul_flops",
            )
        }
        stage = {s: statistics.median(r["seconds"].get(s, 0.0) for r in runs) for s in STAGES}
        total = sum(stage.values())
        km2 = runs[0]["km2"]
        print(
            f"| {tiles} | {credentials} | {runs[0]['chips']} | {km2:.3f} | {med['wall']:.1f} | "
            f"{med['wall'] / baseline[tiles]:.2f} | {tiles / med['wall']:.2f} | "
            f"{km2 / med['wall'] * 3600:.1f} | {med['flow_mib']:.0f} | "
            + " | ".join(f"{stage[s] / total:.0%}" for s in STAGES)
            + f" | {med['wall'] / med['forward']:.2f} | {med['wall'] / med['forward_all_cores']:.2f} "
            + f"| {med['run_process']:.1f} | {med['naive_process']:.1f} "
            + f"| {med['run_process'] / med['naive_process']:.2f} | {km2 / med['naive_process'] * 3600:.1f} "
            + f"| {med['flop'] / km2 / 1e9:.0f} | {runs[0]['precision']} | {med['matmul_flops'] / 1e9:.1f} "
            + f"| {med['flop'] / med['forward_all_cores'] / 1e9:.1f} "
            + f"| {med['flop'] / med['forward_all_cores'] / med['matmul_flops']:.0%} |"
        )


class TreeMemory:
    """The largest memory this process and the processes it starts meanwhile held at once (the
    flow's worker processes, and the one they are forked from), sampled every ``every_s``: the
    sum of their proportional set sizes (PSS), so that the pages the workers share with the
    process they were forked from count once. Processes already running (Prefect's API server)
    are left out."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s = every_s
        self.peak = 0
        self._me = psutil.Process()
        self._before = {p.pid for p in self._me.children(recursive=True)}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        # Reading a process's PSS walks its page tables (about 3 ms for a worker): sampled more
        # often, the sampling itself slowed the flow down.
        while not self._done.wait(self.every_s):
            total = 0
            for process in [self._me, *self._me.children(recursive=True)]:
                if process.pid not in self._before:
                    with contextlib.suppress(psutil.Error):
                        total += process.memory_full_info().pss
            self.peak = max(self.peak, total)


def _read_batches(scene: Path, plan: ChipPlan, batch: int) -> list[torch.Tensor]:
    """The plan's chips, read and stretched as the flow reads them, in batches."""
    import numpy as np

    from footprints.geo.chips import read_chip, tile_limits
    from footprints.geo.stores import LocalStore

    store = LocalStore(scene)
    paths = {k: store.local_path(k) for k in plan.tiles}
    limits = {k: tile_limits(paths[k], fp.info.nodata, k) for k, fp in plan.tiles.items()}
    chips = list(plan.chips)
    images = [read_chip(c, plan, lambda fp: paths[fp.key], lambda fp: limits[fp.key]).image for c in chips]
    return [torch.from_numpy(np.stack(images[i : i + batch])) for i in range(0, len(images), batch)]


def _forward_share(
    scene: Path, bbox: str, chip: int, overlap: int, batch: int, n: int, workers: int, barrier: Any
) -> float:
    """Seconds of single-threaded forward passes over every ``workers``-th batch from the n-th,
    in a process of its own, timed once every such process has read its chips."""
    from footprints.geo.aoi import read_aoi
    from footprints.geo.stores import S3Options
    from footprints.models.registry import load_segmenter, resolve_checkpoint
    from footprints.tasks.inference import plan_run

    torch.set_num_threads(1)
    plan = plan_run.fn(read_aoi(bbox), str(scene), S3Options(), chip, overlap)
    segmenter = load_segmenter(resolve_checkpoint()[0])
    batches = _read_batches(scene, plan, batch)[n::workers]
    barrier.wait()
    started = time.perf_counter()
    with torch.inference_mode():
        for chips in batches:
            segmenter.predict(chips)
    return time.perf_counter() - started


def _matmul_flops(dtype: torch.dtype, side: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a matrix product of two side x side matrices of ``dtype`` on every core (median)."""
    torch.set_num_threads(os.cpu_count() or 1)
    a, b = torch.rand(side, side).to(dtype), torch.rand(side, side).to(dtype)
    a @ b  # warm-up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        seconds.append(time.perf_counter() - started)
    return 2 * side**3 / statistics.median(seconds)


def _whole_processes(scene: Path, args: argparse.Namespace, env: dict[str, str]) -> tuple[float, float]:
    """Seconds of ``footprints run`` over the whole AOI and of the naive per-tile loop, each a
    whole process from its start (imports, Prefect's API, the cluster) to its exit."""
    from footprints.geo.layouts import find_tiles
    from footprints.geo.stores import LocalStore

    bbox = find_tiles(LocalStore(scene)).bbox()
    naive = Path(__file__).with_name("naive_tile_loop.py")
    seconds = []
    with tempfile.TemporaryDirectory() as out:
        for command in (
            [
                str(Path(sys.executable).with_name("footprints")),
                "-q",
                "run",
                f"--aoi={bbox}",
                "--source",
                str(scene),
                "--out",
                f"{out}/run.gpkg",
            ]
            + [f"--chip-size={args.chip}", f"--overlap={args.overlap}", f"--batch-size={args.batch}"]
            + ([f"--workers={args.workers}"] if args.workers else []),
            [sys.executable, str(naive), str(scene), f"{out}/naive.gpkg"],
        ):
            started = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True, env=env)
            seconds.append(time.perf_counter() - started)
    return seconds[0], seconds[1]


def _measure_in_new_process(scene: Path, args: argparse.Namespace, env: dict[str, str]) -> dict:
    """One measurement in a fresh process with environment ``env``, so that peak memory is its own."""
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--one",
            str(scene),
            "--chip",
            str(args.chip),
            "--overlap",
            str(args.overlap),
            "--batch",
            str(args.batch),
            *(["--workers", str(args.workers)] if args.workers else []),
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
