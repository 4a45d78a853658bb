"""What each way of running the default model's network costs on this machine's CPU cores.

The same chips (read from a synthetic AOI as the flow reads them) go through the network of the
shipped default model (the centre heatmap's U-Net, without decoding) in each of these forms, and
the table gives the median milliseconds per chip, megapixels per second, the speed-up over the
first form and the largest difference of the centre logits from the first form's:

- float32 as trained: batch norms, contiguous (NCHW) tensors; the baseline;
- float32, channels-last (NHWC), which lets oneDNN pick its fastest convolutions;
- float32, channels-last, with the batch norms folded into their convolutions;
- bfloat16 autocast, channels-last, not folded;
- bfloat16 autocast, channels-last, folded: what the AOI flow runs on a CPU with native
  bfloat16 (models/instances.py: inference_dtype);
- with ``--compile``, torch.compile (inductor) of the float32 and bfloat16 channels-last forms,
  with its compile time;
- ONNX Runtime (float32, all graph optimisations) where ``onnxruntime`` is installed
  (``pip install onnxruntime onnx``); it is not a dependency of the project.

    python benchmarks/forward_levers.py --chip 1024 --batch 1 --threads 1 --repeats 7
    python benchmarks/forward_levers.py --chip 1024 --batch 1 --threads 1 --repeats 9 --compile
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from timing import median_ms

from footprints.geo.aoi import read_aoi
from footprints.geo.chips import read_chip, tile_limits
from footprints.geo.layouts import find_tiles
from footprints.geo.stores import LocalStore, S3Options
from footprints.geo.synth import write_scene
from footprints.models.backbone import fold_batch_norms
from footprints.models.checkpoint import load_checkpoint
from footprints.models.registry import check_weights, resolve_checkpoint
from footprints.tasks.inference import plan_run

CPU = torch.device("cpu")


def real_chips(chip: int, count: int) -> torch.Tensor:
    """``count`` chips of ``chip`` px from a 16-tile synthetic AOI, read and stretched as the flow does."""
    with tempfile.TemporaryDirectory() as folder:
        store = LocalStore(Path(folder))
        write_scene(store.write_bytes, 16, seed=1, progress=False)
        plan = plan_run.fn(read_aoi(find_tiles(store).bbox()), folder, S3Options(), chip, 64)
        paths = {k: store.local_path(k) for k in plan.tiles}
        limits = {k: tile_limits(paths[k], fp.info.nodata, k) for k, fp in plan.tiles.items()}
        images = [
            read_chip(c, plan, lambda fp: paths[fp.key], lambda fp: limits[fp.key]).image
            for c in plan.chips[:count]
        ]
    return torch.from_numpy(np.stack(images))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chip", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the flow: 1 per worker)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    record = load_checkpoint(resolve_checkpoint()[0])
    trained = check_weights("the default model", record)
    trained.load_state_dict(record["state_dict"])
    trained.eval()
    folded = fold_batch_norms(copy.deepcopy(trained))
    last = copy.deepcopy(trained).to(memory_format=torch.channels_last)  # pyright: ignore[reportCallIssue]
    folded_last = copy.deepcopy(folded).to(memory_format=torch.channels_last)  # pyright: ignore[reportCallIssue]
    chips = real_chips(args.chip, args.batch)
    megapixels = chips.numel() / 3 / 1e6

    def plain(model: torch.nn.Module) -> Callable[[], torch.Tensor]:
        return lambda: model(chips)[0]

    def bfloat16(model: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(chips)[0].float()

        return run

    forms: list[tuple[str, Callable[[], torch.Tensor], str]] = [
        ("float32, batch norms, contiguous (as trained)", plain(trained), ""),
        ("float32, channels-last", plain(last), ""),
        ("float32, channels-last, folded", plain(folded_last), ""),
        ("bfloat16 autocast, channels-last", bfloat16(last), ""),
        ("bfloat16 autocast, channels-last, folded (the flow's)", bfloat16(folded_last), ""),
    ]
    if args.compile:
        compiled = torch.compile(folded_last)
        for name, run in (("float32", plain(compiled)), ("bfloat16", bfloat16(compiled))):
            started = time.perf_counter()
            with torch.inference_mode():
                run()
            forms.append(
                (f"torch.compile, {name}, channels-last", run, f"{time.perf_counter() - started:.0f} s")
            )
    forms.extend(_onnx_runtime(folded, chips, args.threads))

    with torch.inference_mode():
        reference = forms[0][1]()
        print(
            f"{args.batch} chip(s) of {args.chip} px per call, {args.threads} thread(s), "
            f"medians of {args.repeats}\n"
        )
        print("| form | ms per chip | Mpx/s | speed-up | largest logit difference | compile |")
        print("|---|---|---|---|---|---|")
        base = None
        for name, run, compile_time in forms:
            ms = median_ms(run, args.repeats, CPU)
            base = base or ms
            diff = (run() - reference).abs().max().item()
            print(
                f"| {name} | {ms / args.batch:.0f} | {megapixels / ms * 1000:.2f} | {base / ms:.2f} "
                f"| {diff:.1e} | {compile_time} |"
            )


def _onnx_runtime(
    model: torch.nn.Module, chips: torch.Tensor, threads: int
) -> list[tuple[str, Callable[[], torch.Tensor], str]]:
    """The folded float32 model exported to ONNX and run by ONNX Runtime, where it is installed."""
    try:
        import onnxruntime
    except ImportError:
        print("onnxruntime is not installed: no ONNX Runtime row (pip install onnxruntime onnx)")
        return []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        started = time.perf_counter()
        torch.onnx.export(model, (chips,), str(path), input_names=["chips"], dynamo=False, opset_version=17)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        prepare = f"{time.perf_counter() - started:.0f} s"
    feed = {"chips": chips.numpy()}
    return [
        (
            "ONNX Runtime, float32, folded",
            lambda: torch.from_numpy(session.run(None, feed)[0]),
            prepare,
        )
    ]


if __name__ == "__main__":
    main()
