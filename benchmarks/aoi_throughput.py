"""End-to-end throughput of the AOI flow on synthetic AOIs of growing size.

For each AOI size, every measurement runs in a fresh process (so peak memory is that run's own):
the flow over the whole AOI (Prefect's API started beforehand), then the bare model forward
pass (``segmenter.predict``) over the same chips, read beforehand, in the same batches: once with
the flow's parallelism (one single-threaded pass per LocalCluster worker, side by side), once one
pass at a time on every core. Prints a table: tiles/s and km^2/h end to end, peak memory of the
process (flow and its workers), the share of time per stage (worker stages summed over workers),
and the ratio of end-to-end time to each bare forward pass: the cost of everything that is not
the model; the model's FLOP per km^2 (torch's flop counter), the rate of a large matrix
product in the precision the model runs in on every core, and the share of that rate the
forward pass reaches. Then, as whole processes with their start-up, alternating: ``footprints
run`` over the AOI as a user types it, and ``naive_tile_loop.py`` (the same model over each
whole tile, one at a time, no overlap, no seams, no dedup), with the ratio of the two. With
``--credentials``, every size is measured a second time with AWS credentials in the
environment, as on every S3 deployment, with the ratio of its time to the time without.

    python benchmarks/aoi_throughput.py --tiles 16 64 256 --repeats 3
    python benchmarks/aoi_throughput.py --tiles 16 --repeats 3 --credentials
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from footprints.geo.runs import DEFAULTS

STAGES = ("plan", "worker_read", "worker_model", "worker_vectorise", "merge", "write")
# What an S3 deployment has in its environment; the runs read local tiles, so they are never used.
AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "benchmark", "AWS_SECRET_ACCESS_KEY": "benchmark"}


def measure(scene: Path, chip: int, overlap: int, batch: int, workers: int | None) -> dict:
    """One run of the flow and of the bare forward pass over the same chips (in this process)."""
    import numpy as np
    from prefect import flow
    from torch.utils.flop_counter import FlopCounterMode

    from footprints.flows.aoi import aoi_flow
    from footprints.geo.aoi import read_aoi
    from footprints.geo.chips import read_chip, tile_limits
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
    # The flow starts its own LocalCluster (workers are threads of this process), as a user's
    # run does: the clock includes it.
    with tempfile.TemporaryDirectory() as out:
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
    flow_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    plan = plan_run.fn(read_aoi(bbox), str(scene), S3Options(), chip, overlap)
    segmenter = load_segmenter(resolve_checkpoint()[0])
    store = LocalStore(scene)
    paths = {k: store.local_path(k) for k in plan.tiles}
    limits = {k: tile_limits(paths[k], fp, k) for k, fp in plan.tiles.items()}
    chips = list(plan.chips)
    batches = [
        torch.from_numpy(
            np.stack(
                [read_chip(c, plan, lambda fp: paths[fp.key], lambda fp: limits[fp.key]).image for c in group]
            )
        )
        for group in (chips[i : i + batch] for i in range(0, len(chips), batch))
    ]

    def predict(chips: torch.Tensor) -> None:
        with torch.inference_mode():
            segmenter.predict(chips)

    # The same forward passes with the flow's parallelism: one single-threaded pass per worker.
    workers = workers or default_workers()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(predict, batches))
    forward = time.perf_counter() - started
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
