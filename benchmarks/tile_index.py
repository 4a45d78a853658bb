"""Requests and time of planning a run over an S3 prefix, first and again, with the tile index.

A moto S3 server on loopback holds a prefix of small SpaceNet-2-named tiles (64 x 64 px GeoTIFFs
written as the synthetic scenes are, a grid of them); the run's plan (``plan_run``: listing,
headers, chip grid) goes over all of it three times per repeat, with a fresh tile index each
repeat: a first plan (empty index), a second plan (nothing changed), and a plan after
``--changed`` tiles were replaced (new content, so new ETags). Requests are counted by a proxy in
front of moto (tests/fault_proxy.py, with no faults), one per plan: GDAL keeps the blocks it read
per URL within a process, and a new endpoint starts it cold, as a nightly run's new process is.
Header reads are the GETs with a Range (GDAL reading a header in place). Prints medians of
``--repeats``.

    python benchmarks/tile_index.py --tiles 256 --repeats 3
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import boto3
import numpy as np
from moto.server import ThreadedMotoServer
from rasterio.transform import Affine

# The tests' proxy, which counts the requests it forwards.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fault_proxy import fault_proxy

from footprints.geo.aoi import read_aoi
from footprints.geo.stores import S3Options
from footprints.geo.synth.rendering import geotiff_bytes
from footprints.tasks.inference import plan_run

TILE_PX = 64
DEGREES_PER_PX = 2.7e-6  # about 0.3 m at the scenes' latitude
WEST, NORTH = -115.20, 36.15
BUCKET = "tile-index-benchmark"


def tile_key(number: int) -> str:
    """The SpaceNet-2 key of tile ``number``."""
    return f"AOI_9_Bench_Train/RGB-PanSharpen/RGB-PanSharpen_AOI_9_Bench_img{number}.tif"


def write_tiles(endpoint: str, prefix: str, tiles: int, value: int = 0) -> str:
    """Upload ``tiles`` tiles in a square grid under ``prefix``; returns the grid's bbox."""
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    cols = math.ceil(math.sqrt(tiles))
    for index in range(tiles):
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{tile_key(index + 1)}", Body=tile(index, cols, value))
    rows = math.ceil(tiles / cols)
    span = TILE_PX * DEGREES_PER_PX
    return f"{WEST},{NORTH - rows * span},{WEST + cols * span},{NORTH}"


def tile(index: int, cols: int, value: int) -> bytes:
    """One tile's GeoTIFF: constant pixels (``value`` makes new content) at its grid place."""
    row, col = divmod(index, cols)
    span = TILE_PX * DEGREES_PER_PX
    transform = Affine(DEGREES_PER_PX, 0, WEST + col * span, 0, -DEGREES_PER_PX, NORTH - row * span)
    pixels = np.full((3, TILE_PX, TILE_PX), value, dtype=np.uint16)
    return geotiff_bytes(pixels, transform, {"IMAGE_ID": f"img{index + 1}"})


def measure_plan(endpoint: str, uri: str, bbox: str) -> tuple[int, int, float, int]:
    """One plan through a proxy of its own: requests, header reads, wall seconds, tiles planned."""
    with fault_proxy(endpoint, 0.0) as proxy:
        started = time.perf_counter()
        plan = plan_run.fn(read_aoi(bbox), uri, S3Options(endpoint_url=proxy.url), 512, 128)
        wall = time.perf_counter() - started
        requested = proxy.requested()
    return len(requested), sum(1 for _, _, byte_range in requested if byte_range), wall, len(plan.tiles)


def main() -> None:
    """Parse arguments, run the plans, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiles", type=int, default=256)
    parser.add_argument("--changed", type=int, default=16, help="tiles replaced before the third plan")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        os.environ.setdefault(name, value)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    rows: dict[str, list[tuple[int, int, float, int]]] = {"first": [], "second": [], "changed": []}
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        bbox = write_tiles(endpoint, "tiles", args.tiles)
        with tempfile.TemporaryDirectory() as cache:
            # A plan over another prefix first: GDAL's and boto3's one-time set-up is not timed.
            os.environ["FOOTPRINTS_CACHE"] = f"{cache}/warm-up"
            measure_plan(endpoint, f"s3://{BUCKET}/warm-up", write_tiles(endpoint, "warm-up", 4))
            for repeat in range(args.repeats):
                os.environ["FOOTPRINTS_CACHE"] = f"{cache}/{repeat}"  # an empty index
                uri = f"s3://{BUCKET}/tiles"
                rows["first"].append(measure_plan(endpoint, uri, bbox))
                rows["second"].append(measure_plan(endpoint, uri, bbox))
                client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
                cols = math.ceil(math.sqrt(args.tiles))
                step = max(1, args.tiles // args.changed)
                for index in range(0, args.tiles, step)[: args.changed]:
                    body = tile(index, cols, repeat + 1)  # new pixels each repeat: a new ETag
                    client.put_object(Bucket=BUCKET, Key=f"tiles/{tile_key(index + 1)}", Body=body)
                rows["changed"].append(measure_plan(endpoint, uri, bbox))
    finally:
        server.stop()

    names = {
        "first": "first plan (empty index)",
        "second": "second plan (nothing changed)",
        "changed": f"plan after {args.changed} of {args.tiles} tiles replaced",
    }
    print(f"\n{args.tiles} tiles of {TILE_PX} x {TILE_PX} px on moto; medians of {args.repeats}\n")
    print("| plan | requests | header reads (ranged GETs) | wall s | tiles planned |")
    print("|---|---|---|---|---|")
    for name, runs in rows.items():
        requests, reads, wall, tiles = (statistics.median(column) for column in zip(*runs, strict=True))
        print(f"| {names[name]} | {requests:g} | {reads:g} | {wall:.3f} | {tiles:g} |")


if __name__ == "__main__":
    main()
