"""The baseline the AOI flow must beat: the short script a user would write instead of it.

Every tile of a folder, whole and one at a time: read it, stretch each band between its 2nd and
98th percentiles as the flow does, pad it to a multiple of 32, run the shipped default model over
it, trace each building's polygon in the tile's CRS, and write them all to one GeoPackage. No
chips, no overlap, no seams handled, no deduplication, no Prefect and no Dask: buildings cut by a
tile edge come out as two pieces, or as one piece and nothing.

    python benchmarks/naive_tile_loop.py runs/bench-scenes/tiles-16 /tmp/naive.gpkg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import torch
from shapely.geometry import shape

from footprints.geo.raster import as_rgb, ground_pixel_size, normalise
from footprints.models.registry import load_segmenter, resolve_checkpoint

MULTIPLE = 32


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tiles", type=Path, help="a folder of GeoTIFF tiles (searched recursively)")
    parser.add_argument("out", type=Path, help="the GeoPackage to write")
    args = parser.parse_args()
    segmenter = load_segmenter(resolve_checkpoint()[0])
    polygons, scores, crs = [], [], None
    for path in sorted(args.tiles.rglob("*.tif")):
        with rasterio.open(path) as tile:
            image = normalise(as_rgb(tile.read()))
            transform, crs = tile.transform, tile.crs
        rows, cols = image.shape[1:]
        padded = np.pad(image, ((0, 0), (0, -rows % MULTIPLE), (0, -cols % MULTIPLE)))
        with torch.inference_mode():
            (found,) = segmenter.predict(torch.from_numpy(padded)[None], ground_pixel_size(transform, crs))
        for instance in found:
            at = transform * rasterio.Affine.translation(instance.col, instance.row)
            mask = instance.mask.astype(np.uint8)
            for geometry, _ in rasterio.features.shapes(mask, mask=mask.astype(bool), transform=at):
                polygons.append(shape(geometry))
                scores.append(instance.score)
    gpd.GeoDataFrame({"score": scores}, geometry=polygons, crs=crs).to_file(args.out, layer="buildings")
    print(f"{len(polygons)} buildings written to {args.out}")


if __name__ == "__main__":
    main()
