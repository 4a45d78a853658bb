"""Network and decoding time per 650 x 650 tile of every trained method, side by side.

For each method and batch size, prints the medians over several runs of: the network's forward
pass per tile, the decoding per tile (Vec2Instance: peak finding, the instance network and the
mask MLPs; the embedding methods: seed-driven clustering with their kernel; centroid-pointer:
peak finding and the pointer network's rounds over the buildings' crops), the decoding's
share of the total, and the instances per tile. For the embedding methods a baseline measured in
the same run clusters each tile on its own (as the reference does, one image at a time); the
last column is its ratio to the batched clustering.

    python benchmarks/method_speed.py [--vec2instance CKPT] [--spatial-embeddings CKPT]
                                      [--semi-conv CKPT] [--centroid-pointer CKPT]
                                      [--tiles 8] [--batch 1 4] [--repeats 5]

Without checkpoints it uses the shipped models. Tiles come from a synthetic AOI; the device is
CUDA when present, else the CPU.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from timing import median_ms
from torch.nn import functional as F

from footprints.geo.stores import LocalStore
from footprints.geo.synth import write_scene
from footprints.models.backbone import UNet
from footprints.models.centroid import find_peaks
from footprints.models.centroid_pointer import CentroidPointerSegmenter
from footprints.models.crops import sample_crops
from footprints.models.deployed import method_segmenter
from footprints.models.embeddings import EmbeddingSegmenter, cluster
from footprints.models.registry import load_segmenter, resolve_checkpoint
from footprints.models.vec2instance import Vec2InstanceSegmenter, decode_masks
from footprints.tasks.tiles import open_sources, read_model_input


def row(method: str, batch: int, instances: int, network_ms: float, decode_ms: float, looped: str) -> str:
    """One table row, times per tile."""
    share = decode_ms / (network_ms + decode_ms)
    return (
        f"| {method} | {batch} | {instances / batch:.1f} | {network_ms / batch:.1f} | "
        f"{decode_ms / batch:.1f} | {share:.0%} | {looped} |"
    )


@torch.inference_mode()
def measure_vec2instance(segmenter: Vec2InstanceSegmenter, tiles: torch.Tensor, repeats: int) -> str:
    """Network: the centroid network. Decoding: peaks, instance network, masks."""
    device, model, cfg = segmenter.device, segmenter.model, segmenter.config
    batch, _, rows, cols = tiles.shape
    chips = F.pad(tiles, (0, -cols % UNet.multiple, 0, -rows % UNet.multiple)).to(device)

    def network() -> tuple[torch.Tensor, ...]:
        with segmenter.autocast():  # the precision predict runs the networks in
            return model(chips)

    maps = network()

    def decode() -> list:
        peaks = find_peaks(*maps, cfg.stride, cfg.peak_threshold, cfg.min_distance, cfg.max_instances)
        side = (peaks.size * cfg.margin).clamp(min=4.0)
        with segmenter.autocast():
            params = model.instances(sample_crops(chips, peaks.batch, peaks.centre, side, cfg.patch))
        return decode_masks(params.float(), peaks, side, (rows, cols), batch, cfg)

    found = sum(len(chip) for chip in decode())
    network_ms = median_ms(network, repeats, device)
    return row("vec2instance", batch, found, network_ms, median_ms(decode, repeats, device), "")


@torch.inference_mode()
def measure_centroid_pointer(segmenter: CentroidPointerSegmenter, tiles: torch.Tensor, repeats: int) -> str:
    """Network: the centroid network. Decoding: peaks, the pointer network's rounds over every
    building's crop, and pasting (the whole prediction less the network)."""
    device, model = segmenter.device, segmenter.model
    batch, _, rows, cols = tiles.shape
    chips = F.pad(tiles, (0, -cols % UNet.multiple, 0, -rows % UNet.multiple)).to(device)
    found = sum(len(chip) for chip in segmenter.predict(tiles))

    def network() -> tuple[torch.Tensor, ...]:
        with segmenter.autocast():
            return model(chips)

    network_ms = median_ms(network, repeats, device)
    whole_ms = median_ms(lambda: segmenter.predict(tiles), repeats, device)
    return row(segmenter.method, batch, found, network_ms, whole_ms - network_ms, "")


@torch.inference_mode()
def measure_embeddings(segmenter: EmbeddingSegmenter, tiles: torch.Tensor, repeats: int) -> str:
    """Network: the branched ERFNet. Decoding: clustering with the method's kernel (batched, and
    tile by tile as a baseline)."""
    device, cfg, kernel = segmenter.device, segmenter.network.config, type(segmenter).kernel
    batch = len(tiles)
    embeddings, sigmas, seeds = segmenter.outputs(tiles)
    settings = (cfg.foreground, cfg.seed_threshold, cfg.min_pixels(None), cfg.min_unclustered)

    def batched() -> object:
        return cluster(embeddings, sigmas, seeds[:, 0], kernel, *settings)

    def looped() -> object:
        return [
            cluster(embeddings[i : i + 1], sigmas[i : i + 1], seeds[i : i + 1, 0], kernel, *settings)
            for i in range(batch)
        ]

    found = sum(len(chip) for chip in segmenter.decode(embeddings, sigmas, seeds, None))
    network_ms = median_ms(lambda: segmenter.outputs(tiles), repeats, device)
    batched_ms = median_ms(batched, repeats, device)
    looped_ms = median_ms(looped, repeats, device)
    return row(segmenter.method, batch, found, network_ms, batched_ms, f"{looped_ms / batched_ms:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--vec2instance", type=Path, help="checkpoint (default: the shipped model)")
    parser.add_argument("--spatial-embeddings", type=Path, help="checkpoint (default: the shipped model)")
    parser.add_argument("--semi-conv", type=Path, help="checkpoint (default: the shipped model)")
    parser.add_argument("--centroid-pointer", type=Path, help="checkpoint (default: the shipped model)")
    parser.add_argument("--tiles", type=int, default=8, help="synthetic tiles to draw from")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    vec2instance = method_segmenter(load_segmenter(resolve_checkpoint(args.vec2instance, "vec2instance")[0]))
    assert isinstance(vec2instance, Vec2InstanceSegmenter)
    embedding_methods = []
    checkpoints = {"spatial-embeddings": args.spatial_embeddings, "semi-conv": args.semi_conv}
    for method, checkpoint in checkpoints.items():
        segmenter = method_segmenter(load_segmenter(resolve_checkpoint(checkpoint, method)[0]))
        assert isinstance(segmenter, EmbeddingSegmenter)
        embedding_methods.append(segmenter)
    centroid_pointer = method_segmenter(
        load_segmenter(resolve_checkpoint(args.centroid_pointer, "centroid-pointer")[0])
    )
    assert isinstance(centroid_pointer, CentroidPointerSegmenter)
    with tempfile.TemporaryDirectory() as folder:
        write_scene(LocalStore(folder).write_bytes, args.tiles, seed=2024)
        tile_set = open_sources([folder])[folder]
        images = torch.stack([torch.from_numpy(read_model_input(tile_set, t)) for t in tile_set.tiles])

    print(f"device {vec2instance.device}, {len(images)} tiles of 650 x 650, medians of {args.repeats} runs")
    columns = ["method", "batch", "instances / tile", "network ms / tile", "decoding ms / tile"]
    print("| " + " | ".join([*columns, "decoding share", "looped / batched"]) + " |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for batch in args.batch:
        print(measure_vec2instance(vec2instance, images[:batch], args.repeats))
        for segmenter in embedding_methods:
            print(measure_embeddings(segmenter, images[:batch], args.repeats))
        print(measure_centroid_pointer(centroid_pointer, images[:batch], args.repeats))


if __name__ == "__main__":
    main()
