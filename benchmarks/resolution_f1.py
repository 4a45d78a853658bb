"""SpaceNet F1 of a model on the same buildings at two pixel sizes: real chips as imaged, and
magnified (each pixel split into factor x factor, truth scaled alike), with the chips resampled into
the pixel sizes the model was trained at (as `footprints run` and `eval` do) and as they come.

    python benchmarks/resolution_f1.py [--model CKPT] [--source DIR] [--factor 2] [--held-out]

By default: the shipped default model on the 48 Banepa chips of ../shared/data (0.132 m as
georeferenced: 512 px over a zoom-19 web-map tile, imagery of about 0.27 m served at twice that).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from footprints.models.checkpoint import load_checkpoint
from footprints.models.deployed import Deployed
from footprints.models.registry import load_segmenter, resolve_checkpoint
from footprints.tasks.evaluation import eval_tiles, evaluate, magnified
from footprints.tasks.tiles import TileRef, open_sources

BANEPA = Path(__file__).resolve().parents[2] / "shared" / "data" / "oam_banepa"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="checkpoint (default: the shipped default model)")
    parser.add_argument("--source", default=str(BANEPA), help="labelled tiles (default: Banepa)")
    parser.add_argument("--factor", type=int, default=2, help="magnification (default 2)")
    parser.add_argument(
        "--held-out", action="store_true", help="only the tiles the model's checkpoint holds out"
    )
    args = parser.parse_args()
    source, _ = resolve_checkpoint(args.model)
    segmenter = load_segmenter(source)
    tile_set = open_sources([args.source])[args.source]
    refs = [TileRef(args.source, t.image_key) for t in tile_set.tiles]
    if args.held_out:
        held = {r["image_key"] for r in load_checkpoint(source)["data"]["val"]}
        refs = [r for r in refs if r.image_key in held]
    tiles = eval_tiles(refs)
    sizes = sorted({round(t.pixel_size or 0, 3) for t in tiles})
    print(f"{len(tiles)} tiles at {sizes} m, {sum(len(t.truth) for t in tiles)} buildings; model {source}")
    trained = segmenter.pixel_range_m if isinstance(segmenter, Deployed) else None
    print(f"trained at pixel sizes: {trained} m\n")
    ways = {"resampled into the trained pixel sizes": segmenter}
    if isinstance(segmenter, Deployed) and trained:
        ways["as they come"] = Deployed(segmenter.inner, None, segmenter.calibration)
    print(f"| chips | as imaged F1 | magnified {args.factor}x F1 | difference |")
    print("| --- | --- | --- | --- |")
    for way, model in ways.items():
        native = evaluate(model, tiles).overall["f1"]
        finer = evaluate(model, [magnified(t, args.factor) for t in tiles]).overall["f1"]
        print(f"| {way} | {native:.3f} | {finer:.3f} | {finer - native:+.3f} |")


if __name__ == "__main__":
    main()
