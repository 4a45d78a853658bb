"""How well outlines follow buildings: the project's regularisation against `buildingregulariser`.

On real validation chips (by default the held-out tiles of the default model's checkpoint), each
building the model finds is outlined five ways, in metres: the mask's pixel outline, simplified
as `footprints run` does by default (0.3 m), squared by the project's regularisation (`footprints
run --regularise`: geo/regularise.py), and by `buildingregulariser` (PyPI, MIT) on the same
simplified outlines, with its defaults and with right angles only. For each: the SpaceNet F1, the
mean IoU of the buildings it finds (matched at IoU 0.5), the share of corners within 10 degrees
of a right angle (a pixel staircase is all right angles), vertices per building, and the time
per building; the truth's own corners and vertices for scale.

    pip install buildingregulariser==0.2.5
    python benchmarks/outline_quality.py [--model CKPT]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import geopandas as gpd
import numpy as np
import shapely
from buildingregulariser import regularize_geodataframe

from footprints.geo.overlap import pairwise_iou
from footprints.geo.regularise import regularise
from footprints.geo.scoring import score
from footprints.geo.vectorise import largest_polygon
from footprints.models.checkpoint import load_checkpoint
from footprints.models.registry import load_segmenter, resolve_checkpoint
from footprints.tasks.evaluation import EvalTile, eval_tiles, predict_polygons
from footprints.tasks.tiles import TileRef

SIMPLIFY_M = 0.3  # the AOI flow's default
RIGHT_ANGLE_WITHIN = 10.0


def simplified(polygons: np.ndarray) -> np.ndarray:
    """Outlines simplified as the AOI flow's default does."""
    return shapely.simplify(polygons, SIMPLIFY_M, preserve_topology=True)


def project_regularised(polygons: np.ndarray) -> np.ndarray:
    """The project's squaring of simplified outlines (geo/regularise.py)."""
    return regularise(simplified(polygons))


def buildingregulariser(polygons: np.ndarray, **settings: bool) -> np.ndarray:
    """`buildingregulariser` with its defaults but ``settings``, on simplified outlines; a
    polygon it drops is kept as it was."""
    if len(polygons) == 0:  # it fails on an empty table
        return polygons
    frame = gpd.GeoDataFrame({"row": np.arange(len(polygons))}, geometry=list(simplified(polygons)))
    out = regularize_geodataframe(frame, num_cores=1, **settings)  # parts and rows may split or go
    result = np.array(polygons, dtype=object)
    for row, parts in out.groupby("row").geometry:
        result[row] = largest_polygon(shapely.union_all(parts.to_numpy()))
    return result


WAYS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mask outline": lambda p: p,
    f"simplified {SIMPLIFY_M} m (default)": simplified,
    "project regularise (--regularise)": project_regularised,
    "buildingregulariser 0.2.5": buildingregulariser,
    "buildingregulariser, right angles only": lambda p: buildingregulariser(
        p, allow_45_degree=False, allow_circles=False
    ),
}


def right_angle_share(polygons: np.ndarray) -> float:
    """Share of exterior corners within RIGHT_ANGLE_WITHIN degrees of 90 or 270 (of each
    polygon's largest part)."""
    near = total = 0
    for polygon in map(largest_polygon, polygons):
        if polygon.is_empty:
            continue
        ring = np.asarray(polygon.exterior.coords)[:-1]
        before, after = ring - np.roll(ring, 1, axis=0), np.roll(ring, -1, axis=0) - ring
        turn = np.degrees(np.arctan2(np.cross(before, after), np.einsum("ij,ij->i", before, after)))
        near += int(np.sum(np.abs(np.abs(turn) - 90) <= RIGHT_ANGLE_WITHIN))
        total += len(ring)
    return near / max(total, 1)


def vertices(polygons: np.ndarray) -> float:
    """Mean exterior vertices per polygon (of its largest part)."""
    counts = [len(p.exterior.coords) - 1 for p in map(largest_polygon, polygons) if not p.is_empty]
    return float(np.mean(counts)) if counts else 0.0


def in_metres(polygons: np.ndarray, tile: EvalTile) -> np.ndarray:
    """Pixel-coordinate polygons scaled to metres (a local frame: angles and IoU are kept)."""
    return shapely.transform(polygons, lambda xy: xy * (tile.pixel_size or 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="checkpoint (default: the shipped default model)")
    args = parser.parse_args()
    source, record = resolve_checkpoint(args.model)
    segmenter = load_segmenter(source)
    tiles = eval_tiles([TileRef(**r) for r in load_checkpoint(source)["data"]["val"]])
    found = []
    for tile in tiles:
        polygons, scores = predict_polygons(segmenter, tile.image, tile.pixel_size)
        found.append((tile, in_metres(polygons, tile), scores))
    truth_all = np.concatenate([in_metres(t.truth, t) for t in tiles])
    print(
        f"{len(tiles)} held-out tiles of {record['method']} ({source}); "
        f"{sum(len(f[1]) for f in found)} buildings found, {len(truth_all)} in the truth"
    )
    corners, count = right_angle_share(truth_all), vertices(truth_all)
    print(f"truth: {corners:.0%} right-angled corners, {count:.1f} vertices\n")
    print("| outlines | F1 | mean IoU of found buildings | right-angled corners | vertices | ms a building |")
    print("| --- | --- | --- | --- | --- | --- |")
    for way, outline in WAYS.items():
        truth_rows, proposal_rows, seconds, shaped = [], [], 0.0, []
        for tile, polygons, scores in found:
            started = time.perf_counter()
            outlines = outline(polygons)
            seconds += time.perf_counter() - started
            shaped.append(outlines)
            truth_m = in_metres(tile.truth, tile)
            truth_rows += [(tile.image_id, g) for g in truth_m] or [(tile.image_id, None)]
            proposal_rows += [(tile.image_id, g, s) for g, s in zip(outlines, scores, strict=True)]
        truth = gpd.GeoDataFrame(truth_rows, columns=["image_id", "geometry"], geometry="geometry")
        proposals = gpd.GeoDataFrame(
            proposal_rows, columns=["image_id", "geometry", "confidence"], geometry="geometry"
        )
        pixel_m = float(np.median([t.pixel_size or 1.0 for t in tiles]))
        report = score(truth, proposals, min_area=20 * pixel_m**2)
        truth_of = {tile.image_id: in_metres(tile.truth, tile) for tile, _, _ in found}
        hits = proposals[report.matched]
        ious = [_best_iou(g, truth_of[i]) for i, g in zip(hits["image_id"], hits.geometry, strict=True)]
        everything = np.concatenate(shaped)
        print(
            f"| {way} | {report.overall['f1']:.3f} | {np.mean(ious):.3f} | "
            f"{right_angle_share(everything):.0%} | {vertices(everything):.1f} | "
            f"{1000 * seconds / max(len(everything), 1):.2f} |"
        )


def _best_iou(polygon: shapely.Geometry, truth: np.ndarray) -> float:
    """The IoU of a found building with the truth polygon it overlaps most."""
    near = truth[shapely.intersects(truth, polygon)]
    return float(pairwise_iou(np.full(len(near), polygon, dtype=object), near).max()) if len(near) else 0.0


if __name__ == "__main__":
    main()
