"""SpaceNet F1 of several checkpoints side by side, per validation AOI and overall.

Every checkpoint is scored on the same tiles: the validation tiles recorded in the first one
(``data.val``, written by the training flow), so methods trained on the same split compare one to
one. Run from the project root, where the recorded sources (``../shared/data/...``) resolve.

    python benchmarks/validation_f1.py [CKPT ...]

Without checkpoints it compares the shipped models of every trained method.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from footprints.models.checkpoint import load_checkpoint
from footprints.models.registry import METHODS, load_segmenter
from footprints.tasks.evaluation import eval_tiles, evaluate
from footprints.tasks.tiles import TileRef


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="*", type=Path)
    args = parser.parse_args()
    checkpoints = args.checkpoints or [m.checkpoint for m in METHODS.values() if m.checkpoint]
    refs = [TileRef(**r) for r in load_checkpoint(checkpoints[0])["data"]["val"]]
    tiles = eval_tiles(refs)
    print(f"{len(tiles)} validation tiles, {sum(len(t.truth) for t in tiles)} labelled buildings\n")
    names, scores = [], []
    for path in checkpoints:
        segmenter = load_segmenter(path)
        report = evaluate(segmenter, tiles, progress=True)
        names.append(segmenter.method)
        scores.append({**report.per_aoi["f1"].to_dict(), "overall": report.overall["f1"]})
    print("| validation AOI | " + " | ".join(f"{name} F1" for name in names) + " |")
    print("| --- |" + " --- |" * len(names))
    for aoi in scores[0]:
        print(f"| {aoi} | " + " | ".join(f"{s[aoi]:.3f}" for s in scores) + " |")


if __name__ == "__main__":
    main()
