"""Time per point of click-to-segment (``footprints segment-at``) on a synthetic AOI.

For calls of 1, 8 and 32 points (each on a building, drawn at random), prints the medians over
several runs of: the whole call (model loading, tile headers from the tile index, reading a
window round each point, the network, outlines on the map) per point, and the same without the
model's loading, which a long-lived process (a QGIS plugin, a server) pays once.

    python benchmarks/segment_at_speed.py [--model CKPT] [--tiles 4] [--points 1 8 32] [--repeats 5]

Without a checkpoint it uses the shipped centroid-pointer model; the device is CUDA when present.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import shapely
import torch
from timing import median_ms

from footprints.geo.layouts import find_tiles
from footprints.geo.stores import LocalStore
from footprints.geo.synth import scene_truth, write_scene
from footprints.models.registry import load_segmenter, resolve_checkpoint
from footprints.tasks.segment_at import segment_at


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, help="checkpoint (default: the shipped centroid-pointer model)")
    parser.add_argument("--tiles", type=int, default=4, help="synthetic tiles")
    parser.add_argument("--points", type=int, nargs="+", default=[1, 8, 32], help="points per call")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = str(args.model) if args.model else None
    method = None if model else "centroid-pointer"

    def load() -> object:
        return load_segmenter(resolve_checkpoint(model, method)[0])

    device = load_segmenter(resolve_checkpoint(model, method)[0]).device
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        write_scene(LocalStore(folder).write_bytes, args.tiles, seed=2024, gsd_m=0.3)
        truth = scene_truth(find_tiles(LocalStore(folder)))
        inside = [p.coords[0] for p in shapely.point_on_surface(truth.geometry.values)]
        print(
            f"device {device}, {args.tiles} synthetic tiles of 650 x 650 at 0.3 m, medians of {args.repeats}"
        )
        print("| points per call | whole call ms / point | without loading the model ms / point | found |")
        print("| --- | --- | --- | --- |")
        for n in args.points:
            points = [inside[i] for i in rng.choice(len(inside), n, replace=False)]
            whole_ms = median_ms(
                lambda points=points: segment_at(folder, points, model), args.repeats, device
            )
            found = sum(r.outline is not None for r in segment_at(folder, points, model)[0])
            model_ms = median_ms(load, args.repeats, device)
            print(f"| {n} | {whole_ms / n:.1f} | {(whole_ms - model_ms) / n:.1f} | {found} of {n} |")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
