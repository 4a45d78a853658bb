"""Speed of Vec2Instance on 650 x 650 tiles: forward passes, peak finding and mask decoding.

Prints a table of medians over several runs: centroid-network forward time per tile, instance-
network time per tile (crop sampling and forward pass), decoding time per tile and per instance
(peak finding, every MLP at full resolution, overlap resolution, mask crops), with the batch size
and the instances per tile. As a baseline measured in the same run, the MLPs alone are also
drawn the naive way, one instance at a time in a Python loop; the last column is the ratio.

    python benchmarks/vec2instance_speed.py [--model CKPT] [--tiles 8] [--batch 1 4] [--repeats 5]

Without --model it uses the shipped default model. Tiles come from a synthetic AOI (so the instance
counts are those of real-looking scenes); the device is CUDA when present, else the CPU.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from timing import median_ms

from footprints.geo.stores import LocalStore
from footprints.geo.synth import write_scene
from footprints.models.centroid import find_peaks
from footprints.models.crops import sample_crops
from footprints.models.deployed import method_segmenter
from footprints.models.registry import load_segmenter, resolve_checkpoint
from footprints.models.vec2instance import Vec2InstanceSegmenter, coordinate_mlp, decode_masks
from footprints.tasks.tiles import open_sources, read_model_input


def looped_decode(params: torch.Tensor, side: torch.Tensor, patch: int, hidden: int) -> list[torch.Tensor]:
    """The baseline: each instance's mask drawn on its own, one at a time in a Python loop, with the
    same sampling as decode_masks (at most patch x patch MLP samples, interpolated to the crop)."""
    masks = []
    for i in range(len(params)):
        s = int(torch.ceil(side[i]))
        g = min(s, patch)
        steps = (torch.arange(g, device=params.device) + 0.5) * (s / g) / (side[i] / 2) - 1
        grid = torch.stack(torch.meshgrid(steps, steps, indexing="xy"), dim=-1).reshape(-1, 2)
        logits = coordinate_mlp(params[i : i + 1], grid, hidden).reshape(1, 1, g, g)
        logits = torch.nn.functional.interpolate(logits, size=(s, s), mode="bilinear", align_corners=False)
        masks.append(logits[0, 0] >= 0)
    return masks


def measure(segmenter: Vec2InstanceSegmenter, tiles: torch.Tensor, repeats: int) -> str:
    """One table row: every stage timed on one batch of tiles."""
    device, model, cfg = segmenter.device, segmenter.model, segmenter.config
    batch, _, rows, cols = tiles.shape
    chips = torch.nn.functional.pad(tiles, (0, -cols % 32, 0, -rows % 32)).to(device)
    with torch.inference_mode():
        maps = model(chips)
        peaks = find_peaks(*maps, cfg.stride, cfg.peak_threshold, cfg.min_distance, cfg.max_instances)
        side = (peaks.size * cfg.margin).clamp(min=4.0)
        params = model.instances(sample_crops(chips, peaks.batch, peaks.centre, side, cfg.patch))

        def decode() -> object:
            found = find_peaks(*maps, cfg.stride, cfg.peak_threshold, cfg.min_distance, cfg.max_instances)
            return decode_masks(params, found, side, (rows, cols), batch, cfg)

        centroid_ms = median_ms(lambda: model(chips), repeats, device)
        instance_ms = median_ms(
            lambda: model.instances(sample_crops(chips, peaks.batch, peaks.centre, side, cfg.patch)),
            repeats,
            device,
        )
        decode_ms = median_ms(decode, repeats, device)
        looped_ms = median_ms(lambda: looped_decode(params, side, cfg.patch, cfg.hidden), repeats, device)
    n = len(peaks.score)
    per = max(n, 1)
    return (
        f"{batch:>5} {n / batch:>9.1f} {centroid_ms / batch:>13.1f} {instance_ms / batch:>13.1f} "
        f"{decode_ms / batch:>9.1f} {decode_ms / per:>12.3f} {looped_ms / per:>12.3f} "
        f"{looped_ms / decode_ms:>15.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="checkpoint (default: the shipped model)")
    parser.add_argument("--tiles", type=int, default=8, help="synthetic tiles to draw chips from")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    segmenter = method_segmenter(load_segmenter(resolve_checkpoint(args.model, "vec2instance")[0]))
    assert isinstance(segmenter, Vec2InstanceSegmenter)
    with tempfile.TemporaryDirectory() as folder:
        write_scene(LocalStore(folder).write_bytes, args.tiles, seed=2024)
        tile_set = open_sources([folder])[folder]
        images = torch.stack([torch.from_numpy(read_model_input(tile_set, t)) for t in tile_set.tiles])

    parameters = sum(p.numel() for p in segmenter.model.parameters())
    print(
        f"device {segmenter.device}, model {args.model.name}, {parameters:,} parameters, {len(images)} tiles"
    )
    header = (
        f"{'batch':>5} {'inst/tile':>9} {'centroid net':>13} {'instance net':>13} {'decode':>9} "
        f"{'decode/inst':>12} {'looped/inst':>12} {'looped/batched':>15}"
    )
    print(header)
    print(
        f"{'':>5} {'':>9} {'ms/tile':>13} {'ms/tile':>13} {'ms/tile':>9} {'ms':>12} {'ms':>12} {'ratio':>15}"
    )
    for batch in args.batch:
        print(measure(segmenter, images[:batch], args.repeats))


if __name__ == "__main__":
    main()
