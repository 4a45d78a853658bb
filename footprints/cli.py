"""The ``footprints`` command line.

Each subcommand is a thin wrapper over the Prefect flows (run, train, demo) or over geo/ and the
tasks (synth, score, eval): it parses arguments, calls them, and prints results for people
(tables) or programs (``--json``). The methods a command offers come from the registry
(models/registry.py). Errors the project raises on purpose are printed as one line naming the
file or object and the cause.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd

from footprints import __version__
from footprints.console import Stopped, configure_console, report_stop, stopping_cleanly
from footprints.geo.errors import FootprintsError, InputError
from footprints.geo.runs import DEFAULTS
from footprints.geo.scoring import ScoreReport, read_polygon_table, score
from footprints.geo.stores import S3Options, open_store
from footprints.models.coco_panoptic import PanopticSource
from footprints.models.data import Augmentation
from footprints.models.registry import METHODS
from footprints.models.training import TrainConfig
from footprints.prefect_server import TemporaryServer

MAX_SYNTH_TILES = 10_000


def _add_s3_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("S3")
    group.add_argument("--endpoint-url", help="S3-compatible endpoint (MinIO, moto, ...)")
    group.add_argument("--region", help="bucket region")
    group.add_argument("--profile", help="AWS profile name")
    group.add_argument("--unsigned", action="store_true", help="anonymous requests (public buckets)")


def _add_dataset_options(parser: argparse.ArgumentParser) -> None:
    """--dataset, and where Cityscapes data is."""
    parser.add_argument(
        "--dataset",
        choices=("spacenet", "cityscapes", "coco-panoptic"),
        default="spacenet",
        help="spacenet: tiles named by --data, scored with the SpaceNet F1; cityscapes: the "
        "Cityscapes layout under --root, scored with the official AP; coco-panoptic (the pointer "
        "network): --images, --annotations and --panoptic-json, scored with panoptic quality and "
        "the single-segment IoU (default spacenet)",
    )
    parser.add_argument("--root", help="Cityscapes: the folder holding leftImg8bit/ and gtFine/")
    parser.add_argument("--val-split", default="val", help="Cityscapes split to validate on (default val)")
    coco = parser.add_argument_group("COCO panoptic")
    coco.add_argument("--images", help="folder of the images")
    coco.add_argument("--annotations", help="folder of the panoptic PNGs")
    coco.add_argument("--panoptic-json", help="the panoptic JSON (images, annotations, categories)")
    coco.add_argument(
        "--min-area", type=int, default=100, help="leave out segments under this many pixels (default 100)"
    )


def _panoptic_source(args: argparse.Namespace, prefix: str = "") -> PanopticSource | None:
    """The COCO panoptic data named by --images, --annotations and --panoptic-json (with a
    prefix: --val-images, ...); None when none of them is given.

    Raises:
        InputError: Some of the three but not all.
    """
    names = ("images", "annotations", "panoptic_json")
    given = [getattr(args, prefix + name, None) for name in names]
    if not any(given):
        return None
    if not all(given):
        missing = [f"--{(prefix + n).replace('_', '-')}" for n, g in zip(names, given, strict=True) if not g]
        raise InputError("--dataset coco-panoptic", f"needs {', '.join(missing)} too")
    return PanopticSource(*(str(g) for g in given))


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", type=Path, help="checkpoint (default: the method's shipped model, or its settings)"
    )
    group.add_argument(
        "--method",
        choices=sorted(METHODS),
        help="the method; checks a checkpoint is of it (default: the checkpoint's, else vec2instance)",
    )


def _config_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with the value read as JSON when it parses (numbers, booleans), else as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _positive_metres(text: str) -> float:
    """A positive number of metres."""
    try:
        size = float(text)
    except ValueError:
        size = 0.0
    if not size > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of metres")
    return size


def _pixel_size(text: str) -> float | None:
    """A pixel size in metres, or ``native`` (None): imagery as it comes."""
    if text == "native":
        return None
    try:
        return _positive_metres(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of metres or 'native'") from None


def _s3_options(args: argparse.Namespace) -> S3Options:
    return S3Options(args.endpoint_url, args.region, args.profile, args.unsigned)


def cmd_synth(args: argparse.Namespace) -> int:
    """Write a synthetic SpaceNet-2 AOI."""
    from footprints.geo.run_inputs import check_output_folder
    from footprints.geo.synth import write_scene

    if not 1 <= args.tiles <= MAX_SYNTH_TILES:
        # A scene is laid out whole before its first tile is written: some 0.4 MiB and 0.07 s a tile.
        raise InputError(f"--tiles {args.tiles}", f"a scene has 1 to {MAX_SYNTH_TILES} tiles")
    if args.seed < 0:
        raise InputError(f"--seed {args.seed}", "must be 0 or more")
    if not str(args.out).startswith("s3://"):
        check_output_folder(args.out)
    store = open_store(args.out, _s3_options(args))
    started = time.perf_counter()
    summary = write_scene(store.write_bytes, args.tiles, args.seed, progress=not args.quiet)
    print(
        f"wrote {summary.tiles} tiles ({summary.grid[0]} x {summary.grid[1]}) with "
        f"{summary.buildings} buildings of {summary.aoi_name} to {store.uri} "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Score proposals against truth with the SpaceNet building F1."""

    report = score(
        read_polygon_table(args.truth),
        read_polygon_table(args.proposals),
        iou_threshold=args.iou,
        min_area=args.min_area,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    return 0


def print_report(report: ScoreReport) -> None:
    """Per-AOI and overall scores as a table."""
    table = report.per_aoi.copy()
    table.loc["overall"] = pd.Series(report.overall)
    table[["tp", "fp", "fn"]] = table[["tp", "fp", "fn"]].astype(int)
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 120):
        print(table.rename_axis("AOI").to_string())


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: a synthetic AOI through the AOI flow, scored against its truth."""
    from footprints.flows.api_server import prefect_api
    from footprints.flows.demo import demo_flow

    with prefect_api(launched=args.api_server):
        result = demo_flow(
            Path(args.out),
            tiles=args.tiles,
            seed=args.seed,
            model=str(args.model) if args.model else None,
            progress=not args.quiet,
            pixel_size_m=args.pixel_size,
        )
    run = result.run
    print(f"\n{run.buildings} buildings from {run.tiles} tiles ({run.chips} chips) in {run.out}")
    for name, report in (("model", result.model), ("threshold baseline", result.baseline)):
        o = report.overall
        print(
            f"{name:>18}: F1 {o['f1']:.3f}  precision {o['precision']:.3f}  recall {o['recall']:.3f}"
            f"  (TP {o['tp']}, FP {o['fp']}, FN {o['fn']})"
        )
    print(f"preview: {result.preview}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the AOI flow: buildings of an area of interest into a GeoPackage."""
    from footprints.flows.aoi import aoi_flow
    from footprints.flows.api_server import prefect_api
    from footprints.tasks.preflight import check_run_inputs

    # The flow checks these too, but from within a flow run, whose start and failure Prefect
    # logs: here a bad input costs a second and one line.
    check_run_inputs(
        args.aoi,
        args.source,
        args.out,
        str(args.model) if args.model else None,
        args.method,
        aoi_crs=args.aoi_crs,
        crs=args.crs,
        chip_size=args.chip_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        min_area_m2=args.min_area,
        simplify_m=args.simplify,
        dask_workers=args.workers,
        dask_address=args.dask_address,
    )
    with prefect_api(launched=args.api_server):
        aoi_flow(
            aoi=args.aoi,
            source=args.source,
            out=args.out,
            model=str(args.model) if args.model else None,
            method=args.method,
            aoi_crs=args.aoi_crs,
            crs=args.crs,
            chip_size=args.chip_size,
            overlap=args.overlap,
            batch_size=args.batch_size,
            min_area_m2=args.min_area,
            simplify_m=args.simplify,
            regularise=args.regularise,
            dask_address=args.dask_address,
            dask_workers=args.workers,
            s3=_s3_options(args),
            progress=not args.quiet,
        )
    return 0  # the flow's closing line, logged, is the run's summary


def cmd_train(args: argparse.Namespace) -> int:
    """Train a method with the Prefect training flow."""
    from footprints.flows.api_server import prefect_api
    from footprints.flows.training import train_flow

    cityscapes, coco = args.dataset == "cityscapes", args.dataset == "coco-panoptic"
    panoptic = _panoptic_source(args) if coco else None
    if cityscapes and not (args.root and args.classes):
        raise InputError("--dataset cityscapes", "needs --root DIR and --classes car,person,...")
    if coco and METHODS[args.method].validation != "segment-iou":
        raise InputError(args.method, "trains on COCO panoptic only as the pointer network (pointer)")
    if coco and panoptic is None:
        raise InputError(
            "--dataset coco-panoptic", "needs --images DIR --annotations DIR --panoptic-json FILE"
        )
    if args.dataset == "spacenet" and not args.data:
        raise InputError("--data", "name at least one folder or s3:// prefix of labelled tiles")
    with prefect_api(launched=args.api_server):
        summary = train_flow(
            args.method,
            [args.root] if cityscapes else args.data or [],
            args.out,
            train_only=args.train_only,
            dataset=args.dataset,
            classes=args.classes.split(",") if args.classes else None,
            splits=(args.train_split, args.val_split),
            epochs=args.epochs,
            steps_per_epoch=args.steps,
            batch_size=args.batch_size,
            chip=args.chip,
            lr=args.lr,
            finetune_epochs=args.finetune_epochs,
            finetune_chip=args.finetune_chip,
            val_fraction=args.val_fraction,
            choose_fraction=args.choose_fraction,
            pixel_size_m=args.pixel_size,
            scale=tuple(args.scale) if args.scale else None,
            seed=args.seed,
            resume=args.resume,
            architecture=dict(args.config),
            s3=_s3_options(args),
            progress=not args.quiet,
            panoptic=panoptic,
            val_panoptic=_panoptic_source(args, "val_") if coco else None,
            min_area=args.min_area,
        )
    metric = "AP" if cityscapes else "IoU" if METHODS[args.method].validation == "segment-iou" else "F1"
    best = max(summary["history"], key=lambda h: h["val_score"])
    score, epoch = best["val_score"], best["epoch"]
    print(f"best validation {metric} {score:.4f} at epoch {epoch}; model saved to {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Run a model over labelled tiles and print the SpaceNet F1."""
    from footprints.models.registry import load_segmenter, resolve_checkpoint
    from footprints.tasks.evaluation import eval_tiles, evaluate
    from footprints.tasks.tiles import TileRef, open_sources

    source, record = resolve_checkpoint(args.model, args.method)
    segmenter = load_segmenter(source)
    if args.dataset == "cityscapes":
        return _eval_cityscapes(args, segmenter, record)
    if args.dataset == "coco-panoptic":
        return _eval_coco_panoptic(args, segmenter, source)
    if not args.data:
        raise InputError("--data", "name at least one folder or s3:// prefix of labelled tiles")
    s3 = _s3_options(args)
    refs = [TileRef(src, t.image_key) for src, ts in open_sources(args.data, s3).items() for t in ts.tiles]
    report = evaluate(segmenter, eval_tiles(refs, s3), progress=not args.quiet)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    return 0


def _eval_cityscapes(args: argparse.Namespace, segmenter: Any, record: dict[str, Any]) -> int:
    """Score a model on Cityscapes with the official evaluator; print AP and AP50 per class."""
    from footprints.models.cityscapes import find_frames
    from footprints.tasks.evaluation import evaluate_cityscapes

    if not args.root:
        raise InputError("--dataset cityscapes", "needs --root DIR, the folder of leftImg8bit/ and gtFine/")
    classes = record["config"].get("classes", [])
    frames = find_frames(args.root, args.val_split)
    work = Path(args.predictions) if args.predictions else Path(tempfile.mkdtemp(prefix="cityscapes-"))
    report = evaluate_cityscapes(segmenter, frames, classes, work, progress=not args.quiet)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"Cityscapes instance AP, official evaluator, {len(frames)} frames of {args.val_split}")
    print(f"{'class':<12} {'AP':>7} {'AP50':>7}")
    for name, scores in report.classes.items():
        print(f"{name:<12} {_ap(scores['ap']):>7} {_ap(scores['ap50']):>7}")
    print(f"{'mean':<12} {_ap(report.ap):>7} {_ap(report.ap50):>7}")
    print(f"predictions in Cityscapes' format: {work}")
    return 0


def _eval_coco_panoptic(args: argparse.Namespace, segmenter: Any, source: Path | bytes) -> int:
    """Score a pointer network on COCO panoptic: class-agnostic PQ, SQ, RQ by panopticapi's own
    code, and the single-segment mean IoU."""
    from footprints.models.deployed import method_segmenter
    from footprints.models.pointer import PointerSegmenter
    from footprints.tasks.evaluation import evaluate_coco_panoptic

    data = _panoptic_source(args)
    if data is None:
        raise InputError(
            "--dataset coco-panoptic", "needs --images DIR --annotations DIR --panoptic-json FILE"
        )
    segmenter = method_segmenter(segmenter)  # segments are pointed at in the images' own pixels
    if not isinstance(segmenter, PointerSegmenter):
        raise InputError(str(source), "is not a pointer network checkpoint (train one with `train pointer`)")
    work = Path(args.predictions) if args.predictions else Path(tempfile.mkdtemp(prefix="panoptic-"))
    report = evaluate_coco_panoptic(segmenter, data, args.min_area, work, progress=not args.quiet)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    q = report.quality
    print(f"COCO panoptic, class-agnostic, panopticapi's pq_compute, {report.images} images")
    print(f"PQ {q.pq:.3f}  SQ {q.sq:.3f}  RQ {q.rq:.3f}")
    print(f"single-segment mean IoU {report.segment_iou:.3f} over {report.segments} segments")
    print(f"predictions in COCO's panoptic format: {work}")
    return 0


def cmd_segment_at(args: argparse.Namespace) -> int:
    """The outline of the building under each point, into a GeoPackage."""
    from footprints.geo.point_chips import parse_point
    from footprints.tasks.segment_at import LAYER, segment_at, write_points

    points = [parse_point(text) for text in args.at]
    if not str(args.out).endswith(".gpkg"):
        raise InputError(str(args.out), "the output must be a GeoPackage (.gpkg)")
    if not 64 <= args.window <= 4096:
        raise InputError(f"--window {args.window}", "a window has 64 to 4096 pixels a side")
    results, model_id = segment_at(
        args.source,
        points,
        str(args.model) if args.model else None,
        window=args.window,
        crs=args.crs,
        s3=_s3_options(args),
    )
    written = write_points(args.out, results, args.crs, model_id)
    for r in results:
        where = f"{r.lon:.6f},{r.lat:.6f}"
        if r.outline is None:
            print(f"{where}: no building here")
        else:
            print(f"{where}: a building of {r.area_m2:.0f} m2 (score {r.score:.2f})")
    print(f"{written} of {len(results)} points on a building; layer {LAYER} of {args.out}")
    return 0


def _ap(value: float) -> str:
    """AP as a table cell; a class without ground truth has none."""
    return "-" if math.isnan(value) else f"{value:.3f}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="footprints", description=(__doc__ or "footprints").splitlines()[0])
    parser.add_argument("--version", action="version", version=f"footprints {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write a synthetic SpaceNet-2 AOI")
    synth.add_argument("--out", required=True, help="folder or s3://bucket/prefix")
    synth.add_argument("--tiles", type=int, default=4, help="number of 650 x 650 tiles")
    synth.add_argument("--seed", type=int, default=0)
    _add_s3_options(synth)
    synth.set_defaults(run=cmd_synth)

    score = commands.add_parser("score", help="SpaceNet building F1 of proposals against truth")
    score.add_argument("--truth", required=True, help="SpaceNet CSV, GeoJSON or GeoPackage")
    score.add_argument("--proposals", required=True, help="SpaceNet CSV, GeoJSON or GeoPackage")
    score.add_argument("--iou", type=float, default=0.5, help="IoU a match needs (default 0.5)")
    score.add_argument(
        "--min-area",
        type=float,
        default=20.0,
        help="ignore polygons smaller than this, in the files' units: px^2 for CSVs, m^2 for "
        "map coordinates (default 20, SpaceNet-2's pixel minimum)",
    )
    score.add_argument("--json", action="store_true", help="print JSON instead of a table")
    score.set_defaults(run=cmd_score)

    train = commands.add_parser("train", help="train a method (Prefect flow)")
    methods = train.add_subparsers(dest="method", required=True, metavar="METHOD")
    for entry in (m for m in METHODS.values() if m.trainable):
        one = methods.add_parser(entry.name, help=entry.summary)
        one.add_argument("--data", action="append", help="folder or s3:// prefix; repeat for more")
        one.add_argument("--train-only", action="append", default=[], help="source used for training only")
        _add_dataset_options(one)
        one.add_argument(
            "--train-split", default="train", help="Cityscapes split to train on (default train)"
        )
        one.add_argument("--classes", help="Cityscapes classes to learn, comma-separated (car,person,...)")
        if entry.validation == "segment-iou":
            val = one.add_argument_group("COCO panoptic validation (default: the training images)")
            val.add_argument("--val-images", help="folder of the validation images")
            val.add_argument("--val-annotations", help="folder of their panoptic PNGs")
            val.add_argument("--val-panoptic-json", help="their panoptic JSON")
        one.add_argument("--out", required=True, help="path of the best checkpoint (.pt)")
        one.add_argument("--epochs", type=int, default=20)
        one.add_argument("--steps", type=int, default=100, help="optimiser steps per epoch")
        one.add_argument("--batch-size", type=int, default=8)
        one.add_argument("--chip", type=int, default=256, help="training chip side, a multiple of 32")
        one.add_argument(
            "--lr", type=float, help=f"peak learning rate (default {entry.recipe.get('lr', TrainConfig.lr)})"
        )
        one.add_argument(
            "--finetune-epochs",
            type=int,
            default=0,
            help="epochs of a fine-tune stage on larger chips with batch-norm statistics frozen",
        )
        one.add_argument("--finetune-chip", type=int, default=512, help="chip side of the fine-tune stage")
        one.add_argument(
            "--val-fraction", type=float, default=0.2, help="share of tiles held out to score the final model"
        )
        one.add_argument(
            "--choose-fraction",
            type=float,
            default=0.15,
            help="share of the other tiles that choose the best epoch (0: the held-out tiles do)",
        )
        one.add_argument(
            "--pixel-size",
            type=_pixel_size,
            default=0.3,
            help="metres per pixel to resample every tile to, recorded for inference (default 0.3); "
            "'native': tiles as they come, the range of their sizes recorded",
        )
        one.add_argument(
            "--scale",
            type=float,
            nargs=2,
            metavar=("MIN", "MAX"),
            help="range of the random scale each training chip is resampled by "
            f"(default {' '.join(map(str, Augmentation().scale))})",
        )
        one.add_argument("--seed", type=int, default=0)
        one.add_argument(
            "--config",
            action="append",
            type=_config_value,
            default=[],
            metavar="KEY=VALUE",
            help=f"a setting of the method's model ({', '.join(f.name for f in fields(entry.config))})",
        )
        one.add_argument("--resume", action="store_true", help="continue from the last epoch's state")
        _add_s3_options(one)
        one.set_defaults(run=cmd_train)

    evaluate = commands.add_parser(
        "eval", help="SpaceNet F1 of a model on labelled tiles, its official Cityscapes AP or COCO PQ"
    )
    _add_model_options(evaluate)
    evaluate.add_argument("--data", action="append", help="folder or s3:// prefix; repeat for more")
    _add_dataset_options(evaluate)
    evaluate.add_argument(
        "--predictions", help="Cityscapes and COCO panoptic: folder to keep the predictions in"
    )
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_s3_options(evaluate)
    evaluate.set_defaults(run=cmd_eval)

    run = commands.add_parser("run", help="buildings of an area of interest into a GeoPackage (AOI flow)")
    run.add_argument("--aoi", required=True, help="minx,miny,maxx,maxy or a GeoJSON/GeoPackage of polygons")
    run.add_argument("--aoi-crs", default="EPSG:4326", help="CRS of a bbox AOI (default EPSG:4326)")
    run.add_argument("--source", required=True, help="folder or s3://bucket/prefix of tiles")
    _add_model_options(run)
    run.add_argument(
        "--out", required=True, help="GeoPackage to write (buildings inside the AOI are replaced)"
    )
    run.add_argument("--crs", default=DEFAULTS.crs, help=f"output CRS (default {DEFAULTS.crs})")
    run.add_argument(
        "--chip-size",
        type=int,
        default=DEFAULTS.chip_size,
        help=f"chip side in pixels (default {DEFAULTS.chip_size})",
    )
    run.add_argument(
        "--overlap",
        type=int,
        default=DEFAULTS.overlap,
        help=f"pixels shared by neighbouring chips (default {DEFAULTS.overlap})",
    )
    run.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULTS.batch_size,
        help=f"chips per model call (default {DEFAULTS.batch_size})",
    )
    run.add_argument(
        "--min-area",
        type=float,
        default=DEFAULTS.min_area_m2,
        help=f"drop outlines under this many m2 (default {DEFAULTS.min_area_m2:g})",
    )
    run.add_argument(
        "--simplify",
        type=float,
        default=DEFAULTS.simplify_m,
        help=f"simplification tolerance in m (default {DEFAULTS.simplify_m:g})",
    )
    run.add_argument("--regularise", action="store_true", help="square outlines to their main direction")
    run.add_argument("--dask-address", help="scheduler of an existing Dask cluster (default: a LocalCluster)")
    run.add_argument(
        "--workers", type=int, help="workers of the LocalCluster (default: one per GPU, else per core)"
    )
    _add_s3_options(run)
    run.set_defaults(run=cmd_run)

    at = commands.add_parser(
        "segment-at", help="the outline of the building under each point (click-to-segment)"
    )
    at.add_argument("--source", required=True, help="folder or s3://bucket/prefix of tiles")
    at.add_argument(
        "--at",
        action="append",
        required=True,
        metavar="LON,LAT",
        help="a point (write --at=LON,LAT); repeat for more",
    )
    at.add_argument(
        "--model",
        type=Path,
        help="a centroid-pointer or pointer checkpoint (default: the shipped centroid-pointer)",
    )
    at.add_argument("--out", required=True, help="GeoPackage to write (layer buildings_at)")
    at.add_argument("--crs", default=DEFAULTS.crs, help=f"output CRS (default {DEFAULTS.crs})")
    at.add_argument(
        "--window", type=int, default=384, help="pixels a side read round each point (default 384)"
    )
    _add_s3_options(at)
    at.set_defaults(run=cmd_segment_at)

    demo = commands.add_parser("demo", help="the main job: a synthetic AOI through the AOI flow, scored")
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument("--tiles", type=int, default=4)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--model", type=Path, help="checkpoint (default: the shipped model)")
    demo.add_argument(
        "--pixel-size",
        type=_positive_metres,
        default=0.3,
        help="metres per pixel the scene is drawn at, over the same ground (default 0.3)",
    )
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None, api_server: TemporaryServer | None = None) -> int:
    """Run a ``footprints`` command; return its exit status.

    Args:
        argv: The arguments (default: the process's).
        api_server: A temporary Prefect API server already starting, for a command that runs a
            flow (see footprints/command.py); None starts one when the flow needs it.
    """
    args = build_parser().parse_args(argv)
    args.api_server = api_server
    configure_console(args.verbose)
    try:
        with stopping_cleanly():
            return args.run(args)
    except FootprintsError as error:
        print(f"footprints: error: {error}", file=sys.stderr)
        return 2
    except Stopped as stopped:
        return report_stop(stopped)


if __name__ == "__main__":
    sys.exit(main())
