"""The GeoPackage people open in QGIS: buildings, a table of runs, and a default style.

The file holds:

- ``buildings``: one valid polygon per building, with a spatial index and the attributes id,
  score, area_m2, method, model_id, source_tiles and run_id;
- ``runs``: one row per run that wrote into the file (AOI, parameters, model checksum, code
  version, timings), so a result can always be traced to what made it;
- ``layer_styles``: QGIS's table of styles, holding a default style (fill graded by score) that
  QGIS applies when the layer is opened.

Writing is atomic and locked: the whole file is built beside the target and renamed over it, while
holding the file's lock (files.locked), so two runs writing one file at once wait for each other
instead of one losing the other's buildings. Writing a run into an existing file replaces the
buildings inside the run's AOI and keeps the rest, so re-running an AOI never duplicates features
and runs over neighbouring AOIs can share one file.

GeoPackage 1.2 is written (GDAL's default is newer), as GDAL 3.6, which ships with the QGIS of
current Debian and Ubuntu LTS releases, warns on opening a 1.4 file.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyogrio.errors import DataSourceError

from .errors import InputError, first_line
from .files import keep_mode, locked
from .runs import RunRecord

LAYER = "buildings"
RUNS = "runs"
STYLES = "layer_styles"
COLUMNS = ("id", "score", "area_m2", "method", "model_id", "source_tiles", "run_id")


def write_buildings(
    path: str | Path,
    buildings: gpd.GeoDataFrame,
    aoi: shapely.Geometry,
    run: RunRecord,
    unread: shapely.Geometry | None = None,
) -> RunRecord:
    """Write a run's buildings into a GeoPackage, replacing earlier buildings inside its AOI.

    Args:
        path: The GeoPackage; created if missing.
        buildings: Columns score, area_m2, method, model_id, source_tiles, run_id and geometry,
            in the output CRS. Ids are assigned here.
        aoi: The run's AOI in the output CRS; earlier buildings whose centre lies inside it are
            replaced.
        run: The run's record, complete but for the writing.
        unread: Where the run could not read its tiles, in the output CRS: earlier buildings
            touching it are kept although their centres lie in the AOI.

    Returns:
        The record as the ``runs`` table holds it: with the buildings written, the buildings in
        the file, and the write's time up to the moment the row was made (the runs table and
        the style are all that is written after it).

    Raises:
        InputError: The existing file is not a GeoPackage of this layout, or uses another CRS.

    Another run writing the same file is waited for (with a warning in the log).
    """
    started = time.perf_counter()
    path = Path(path)
    with locked(path):
        return _write_locked(path, buildings, aoi, run, unread, started)


def _write_locked(
    path: Path,
    buildings: gpd.GeoDataFrame,
    aoi: shapely.Geometry,
    run: RunRecord,
    unread: shapely.Geometry | None,
    started: float,
) -> RunRecord:
    """write_buildings' read, merge and replace, run while holding the file's lock."""
    earlier, runs = _read_existing(path, buildings.crs)
    if len(earlier):
        geometry = earlier.geometry.to_numpy()
        replaced = shapely.contains(aoi, shapely.point_on_surface(geometry))
        if unread is not None and not shapely.is_empty(unread):
            replaced &= ~shapely.intersects(unread, geometry)
        earlier = earlier[~replaced]
    first_id = int(np.asarray(earlier["id"]).max()) + 1 if len(earlier) else 1
    fresh = buildings.assign(id=np.arange(first_id, first_id + len(buildings)))
    parts: list[pd.DataFrame] = [
        pd.DataFrame(frame[[*COLUMNS, "geometry"]]) for frame in (earlier, fresh) if len(frame)
    ]
    merged = gpd.GeoDataFrame(
        pd.concat(parts, ignore_index=True) if parts else fresh[[*COLUMNS, "geometry"]],
        geometry="geometry",
        crs=buildings.crs,
    )

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".gpkg", dir=path.parent)
    os.close(handle)
    os.unlink(tmp)  # GDAL creates the file itself
    try:
        pyogrio.write_dataframe(
            merged,
            tmp,
            layer=LAYER,
            driver="GPKG",
            promote_to_multi=False,
            geometry_type="Polygon",
            dataset_options={"VERSION": "1.2"},
            layer_options={"SPATIAL_INDEX": "YES"},
        )
        seconds = run.seconds | {"write": time.perf_counter() - started}
        record = replace(run, buildings=len(fresh), buildings_in_file=len(merged), seconds=seconds)
        row = pd.DataFrame([record.row()])
        runs = pd.concat([runs, row], ignore_index=True) if len(runs) else row
        pyogrio.write_dataframe(runs.astype(str), tmp, layer=RUNS, driver="GPKG")
        pyogrio.write_dataframe(_style_table(), tmp, layer=STYLES, driver="GPKG")
        keep_mode(path, tmp)  # GDAL made it 0666 less the umask; a replaced file keeps its own
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return record


def _read_existing(path: Path, crs: Any) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    if not path.exists():
        return gpd.GeoDataFrame(), pd.DataFrame()
    try:
        layers = {name for name, _ in pyogrio.list_layers(path)}
        if LAYER not in layers:
            raise InputError(str(path), f"exists but has no {LAYER!r} layer; refusing to overwrite it")
        earlier = pyogrio.read_dataframe(path, layer=LAYER)
        runs = pyogrio.read_dataframe(path, layer=RUNS) if RUNS in layers else pd.DataFrame()
    except DataSourceError as error:
        raise InputError(
            str(path), f"exists but is not a readable GeoPackage ({first_line(error)})"
        ) from error
    if earlier.crs is not None and not earlier.crs.equals(crs):
        raise InputError(str(path), f"holds buildings in {earlier.crs.to_string()}, this run writes {crs}")
    return earlier, runs


def _style_table() -> pd.DataFrame:
    """QGIS's layer_styles table with the default style of the buildings layer."""
    styles = files("footprints.geo") / "styles"
    return pd.DataFrame(
        [
            {
                "f_table_catalog": "",
                "f_table_schema": "",
                "f_table_name": LAYER,
                "f_geometry_column": "geom",
                "styleName": "footprints",
                "styleQML": (styles / "buildings.qml").read_text(),
                "styleSLD": (styles / "buildings.sld").read_text(),
                "useAsDefault": True,
                "description": "Buildings shaded by score",
                "owner": "footprints",
                "ui": None,
                "update_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            }
        ]
    )
