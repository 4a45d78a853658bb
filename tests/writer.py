"""A separate process writing runs into one GeoPackage: ``python tests/writer.py OUT NAME X0 RUNS``.

Each run writes a row of 20 square buildings inside its own AOI (a 100 m strip starting at x0 + 100 m
times the run's number), so that two writers given different x0 never touch each other's AOIs and
every building of every run must be in the file at the end.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from records import run_record

from footprints.geo.geopackage import write_buildings

CRS = "EPSG:32611"
BUILDINGS_PER_RUN = 20
Y0 = 4_000_000.0


def aoi_of(x0: float, run: int) -> shapely.Polygon:
    """The AOI of the writer's run number ``run``."""
    left = x0 + 100.0 * run
    return shapely.box(left, Y0, left + 100.0, Y0 + 100.0)


def buildings_of(aoi: shapely.Polygon, run_id: str) -> gpd.GeoDataFrame:
    """A row of squares inside ``aoi``."""
    left, bottom = aoi.bounds[0], aoi.bounds[1]
    squares = [shapely.box(left + 5 * i, bottom + 40, left + 5 * i + 3, bottom + 43) for i in range(20)]
    return gpd.GeoDataFrame(
        {
            "score": np.full(len(squares), 0.9),
            "area_m2": shapely.area(squares),
            "method": "blocks",
            "model_id": "blocks@test",
            "source_tiles": "tile.tif",
            "run_id": run_id,
        },
        geometry=squares,
        crs=CRS,
    )


def main(out: str, name: str, x0: float, runs: int) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    for run in range(runs):
        run_id = f"{name}-{run}"
        aoi = aoi_of(x0, run)
        write_buildings(Path(out), buildings_of(aoi, run_id), aoi, run_record(Path(out), run_id, CRS))
    print(f"{name} done", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
