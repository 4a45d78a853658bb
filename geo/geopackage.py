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
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyogrio.errors import DataSourceError

from .errors import InputError, first_line
from .files import keep_mode, locked
from .overlap import pairwise_iou, pairwise_overlap
from .runs import RunRecord

T = TypeVar("T")

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
    none = not len(earlier)
    geometry = np.array([], dtype=object) if none else earlier.geometry.to_numpy()
    earlier_ids = np.array([], dtype=np.int64) if none else np.asarray(earlier["id"], dtype=np.int64)
    replaced = shapely.contains(aoi, shapely.point_on_surface(geometry))
    if unread is not None and not shapely.is_empty(unread):
        replaced &= ~shapely.intersects(unread, geometry)
    if run.unreadable_tiles and not none:
        replaced &= ~_from_tiles(np.asarray(earlier["source_tiles"]), run.unreadable_tiles)
    outlines = _beside(_valid_polygons(buildings.geometry.to_numpy()), geometry[~replaced])
    keep = ~shapely.is_empty(outlines)
    fresh = buildings.assign(geometry=outlines).loc[keep]
    ids = _same_ids(outlines[keep], geometry[replaced], earlier_ids[replaced])
    new = ids == 0
    next_id = 1 if none else int(earlier_ids.max()) + 1
    ids[new] = np.arange(next_id, next_id + int(new.sum()))
    if not none:
        earlier = earlier.loc[~replaced]
    fresh = fresh.assign(id=ids)
    parts: list[pd.DataFrame] = [
        pd.DataFrame(frame[[*COLUMNS, "geometry"]]) for frame in (earlier, fresh) if len(frame)
    ]
    merged = gpd.GeoDataFrame(
        pd.concat(parts, ignore_index=True) if parts else fresh[[*COLUMNS, "geometry"]],
        geometry="geometry",
        crs=buildings.crs,
    )

    def write(tmp: str) -> RunRecord:
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
        all_runs = pd.concat([runs, row], ignore_index=True) if len(runs) else row
        pyogrio.write_dataframe(all_runs.astype(str), tmp, layer=RUNS, driver="GPKG")
        pyogrio.write_dataframe(_style_table(), tmp, layer=STYLES, driver="GPKG")
        return record

    return replace_geopackage(path, write)


def replace_geopackage(path: Path, write: Callable[[str], T]) -> T:
    """Write a GeoPackage beside ``path`` with ``write`` (given the new file's path), then put it
    in ``path``'s place: nobody sees half a file, and a failed write leaves ``path`` as it was.

    Returns:
        What ``write`` returns.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".gpkg", dir=path.parent)
    os.close(handle)
    os.unlink(tmp)  # GDAL creates the file itself
    try:
        result = write(tmp)
        keep_mode(path, tmp)  # GDAL made it 0666 less the umask; a replaced file keeps its own
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return result


def _valid_polygons(geometry: np.ndarray) -> np.ndarray:
    """Each outline as one valid polygon: its largest part once repaired, or empty.

    An outline valid in the metric CRS can come out of a reprojection with a ring crossing
    itself where two of its vertices lie closer than the rounding of the new coordinates.
    """
    repaired = shapely.make_valid(geometry)
    parts, index = shapely.get_parts(repaired, return_index=True)
    polygonal = shapely.get_type_id(parts) == shapely.GeometryType.POLYGON
    parts, index = parts[polygonal], index[polygonal]
    out = np.full(len(geometry), shapely.Polygon(), dtype=object)
    # Smallest first, so that each outline's largest part is written last and stays.
    order = np.argsort(shapely.area(parts))
    out[index[order]] = parts[order]
    return out


def _from_tiles(source_tiles: np.ndarray, tiles: list[str]) -> np.ndarray:
    """Whether each building was found in any of ``tiles`` (its source_tiles name them)."""
    wanted = set(tiles)
    return np.array([bool(wanted & set(str(s).split(";"))) for s in source_tiles], dtype=bool)


def _beside(fresh: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """This run's outlines, less what the earlier buildings that stay already hold (or empty).

    Where AOIs meet, a building on the border may be found by both runs, with its centre a
    little to either side each time. One mostly (half or more) covered by a building that stays
    is that building, already in the file, and is dropped; one overlapped less, a neighbour, is
    cut back to where the earlier one is not.
    """
    fresh = fresh.copy()
    if not len(kept) or not len(fresh):
        return fresh
    f_idx, k_idx = shapely.STRtree(kept).query(fresh, predicate="intersects")
    inter = shapely.area(shapely.intersection(fresh[f_idx], kept[k_idx]))
    _, covered = pairwise_overlap(fresh[f_idx], kept[k_idx])
    drop = np.unique(f_idx[covered >= 0.5])
    trim = (inter > 1e-9 * shapely.area(fresh[f_idx])) & (covered < 0.5)
    for f in np.setdiff1d(f_idx[trim], drop):
        rest = shapely.difference(fresh[f], shapely.union_all(kept[k_idx[trim & (f_idx == f)]]))
        fresh[f] = _valid_polygons(np.array([rest], dtype=object))[0]
    fresh[drop] = shapely.Polygon()
    return fresh


def _same_ids(fresh: np.ndarray, replaced: np.ndarray, replaced_ids: np.ndarray) -> np.ndarray:
    """Ids of the earlier buildings this run finds again (IoU >= 0.5, the scorer's rule), else 0.

    So that re-running an AOI keeps the ids of its unchanged buildings; each earlier id goes to
    at most one building, the best overlapping first.
    """
    ids = np.zeros(len(fresh), dtype=np.int64)
    if not len(fresh) or not len(replaced):
        return ids
    f_idx, r_idx = shapely.STRtree(replaced).query(fresh, predicate="intersects")
    iou = pairwise_iou(fresh[f_idx], replaced[r_idx])
    taken: set[int] = set()
    for k in np.argsort(-iou, kind="stable"):
        if iou[k] < 0.5:
            break
        if ids[f_idx[k]] == 0 and r_idx[k] not in taken:
            ids[f_idx[k]] = replaced_ids[r_idx[k]]
            taken.add(int(r_idx[k]))
    return ids


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
