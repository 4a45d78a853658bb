"""SpaceNet F1 of models on the same buildings at several pixel sizes: real chips as imaged and
resampled (the truth scaled alike), run as `footprints run` and `eval` run them (chips resampled
into the pixel sizes the model was trained at).

    python benchmarks/resolution_f1.py [--model CKPT ...] [--source DIR ...] [--held-out]
                                       [--factor 2 | --pixel-sizes 0.15 0.3 0.5]

By default: the shipped default model on the 48 Banepa chips of ../shared/data (0.132 m as
georeferenced: 512 px over a zoom-19 web-map tile, imagery of about 0.27 m served at twice that),
as imaged and magnified ``--factor`` times, also run on the chips as they come. With
``--pixel-sizes``, every chip is resampled to each ground pixel size in turn (Rio's 0.48 m chips
and Banepa's 0.13 m ones alike), one row per model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from footprints.models.checkpoint import load_checkpoint
from footprints.models.deployed import Deployed
from footprints.models.instances import InstanceSegmenter
from footprints.models.registry import load_segmenter, resolve_checkpoint
from footprints.tasks.evaluation import EvalTile, eval_tiles, evaluate, resampled
from footprints.tasks.tiles import TileRef, open_sources

BANEPA = Path(__file__).resolve().parents[2] / "shared" / "data" / "oam_banepa"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", action="append", help="checkpoint; repeat for more (default: the shipped model)"
    )
    parser.add_argument("--source", action="append", help="labelled tiles; repeat for more (default: Banepa)")
    parser.add_argument("--factor", type=int, default=2, help="magnification (default 2)")
    parser.add_argument(
        "--pixel-sizes", type=float, nargs="+", help="ground pixel sizes in metres to resample to"
    )
    parser.add_argument(
        "--held-out", action="store_true", help="only the tiles the first model's checkpoint holds out"
    )
    args = parser.parse_args()
    checkpoints = [resolve_checkpoint(m)[0] for m in args.model or [None]]
    sources = args.source or [str(BANEPA)]
    tile_sets = open_sources(sources)
    refs = [TileRef(s, t.image_key) for s in sources for t in tile_sets[s].tiles]
    if args.held_out:
        held = {r["image_key"] for r in load_checkpoint(checkpoints[0])["data"]["val"]}
        refs = [r for r in refs if r.image_key in held]
    tiles = eval_tiles(refs)
    sizes = sorted({round(t.pixel_size or 0, 3) for t in tiles})
    print(f"{len(tiles)} tiles at {sizes} m, {sum(len(t.truth) for t in tiles)} buildings\n")
    if args.pixel_sizes:
        by_size(checkpoints, tiles, args.pixel_sizes)
    else:
        magnified(checkpoints, tiles, args.factor)


def magnified(checkpoints: list[Path | bytes], tiles: list[EvalTile], factor: int) -> None:
    """One table per model: as imaged and magnified, resampled into its pixel sizes and not."""
    finer_tiles = [resampled(t, factor) for t in tiles]
    for source in checkpoints:
        segmenter = load_segmenter(source)
        trained = segmenter.pixel_range_m if isinstance(segmenter, Deployed) else None
        print(f"model {_name(source)}, trained at pixel sizes {trained} m\n")
        ways: dict[str, InstanceSegmenter] = {"resampled into the trained pixel sizes": segmenter}
        if isinstance(segmenter, Deployed) and trained:
            ways["as they come"] = Deployed(segmenter.inner, None, segmenter.calibration)
        print(f"| chips | as imaged F1 | magnified {factor}x F1 | difference |")
        print("| --- | --- | --- | --- |")
        for way, model in ways.items():
            native = evaluate(model, tiles).overall["f1"]
            finer = evaluate(model, finer_tiles).overall["f1"]
            print(f"| {way} | {native:.3f} | {finer:.3f} | {finer - native:+.3f} |")
        print()


def by_size(checkpoints: list[Path | bytes], tiles: list[EvalTile], pixel_sizes: list[float]) -> None:
    """One row per model: F1 as imaged and with every chip resampled to each pixel size."""
    known = [t for t in tiles if t.pixel_size]
    at_size = {p: [resampled(t, (t.pixel_size or p) / p) for t in known] for p in pixel_sizes}
    header = " | ".join(f"{p:g} m F1" for p in pixel_sizes)
    print(f"| model | as imaged F1 | {header} | widest gap |")
    print("| --- | --- |" + " --- |" * (len(pixel_sizes) + 1))
    for source in checkpoints:
        segmenter = load_segmenter(source)
        scores = [evaluate(segmenter, at_size[p]).overall["f1"] for p in pixel_sizes]
        native = evaluate(segmenter, known).overall["f1"]
        row = " | ".join(f"{s:.3f}" for s in scores)
        print(f"| {_name(source)} | {native:.3f} | {row} | {max(scores) - min(scores):.3f} |")


def _name(source: Path | bytes) -> str:
    return "the shipped default" if isinstance(source, bytes) else str(source)


if __name__ == "__main__":
    main()
