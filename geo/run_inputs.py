"""Checks of an AOI run's settings and output, made before any work: a run never spends its
inference on sizes it cannot hold in memory or on a file it then cannot write.

What a run writes is a GeoPackage of this project's layout (geopackage.py): a missing file, or
one written by an earlier run. A folder, a read-only file, a file in a folder nobody may write
to, a file that is no GeoPackage, or a GeoPackage of another tool (no ``buildings`` layer, one of
other columns or geometries, layers of its own that the rewrite would drop) is refused, naming
the path and the cause.
"""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path

import pyogrio
from pyogrio.errors import DataSourceError
from pyproj import CRS
from pyproj.exceptions import CRSError

from .errors import InputError, first_line
from .files import new_file_beside
from .geopackage import COLUMNS, LAYER, RUNS, STYLES

# What a run writes into the file; any other layer would be lost when the file is rewritten.
OUR_LAYERS = (LAYER, RUNS, STYLES)

MIN_CHIP = 32  # the model's stride: a smaller chip holds no whole building anyway
MAX_CHIP = 4096
MAX_BATCH_PIXELS = 2**24  # pixels of one model call: 64 chips of 512 px, or one of 4096


def output_crs(crs: str) -> CRS:
    """The output CRS a run writes in.

    Raises:
        InputError: pyproj does not know it, or it is not one of a map (a vertical or
            engineering CRS, say).
    """
    try:
        parsed = CRS.from_user_input(crs)
    except CRSError as error:
        raise InputError(f"output CRS {crs!r}", f"not a CRS pyproj knows ({first_line(error)})") from error
    if not (parsed.is_geographic or parsed.is_projected):
        raise InputError(
            f"output CRS {crs!r}", "is neither geographic nor projected; buildings need a map CRS"
        )
    return parsed


def check_output(path: str | Path, crs: str) -> None:
    """Refuse, before any work, an output that a run in ``crs`` could not write or would damage.

    Args:
        path: The GeoPackage to write: a file, or an ``s3://bucket/key.gpkg`` object.
        crs: The run's output CRS.

    Raises:
        InputError: Naming the path (or the CRS) and the cause.
    """
    target = output_crs(crs)
    text = str(path)
    if text.startswith("s3://"):
        # Its content is checked once fetched (geo/outputs.py).
        if not re.fullmatch(r"s3://[^/]+/.*[^/]\.gpkg", text, flags=re.IGNORECASE):
            raise InputError(text, "an S3 output is a GeoPackage object: s3://bucket/key.gpkg")
        return
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", text):  # s3:/... is what a Path makes of s3://...
        raise InputError(text, "the output must be a GeoPackage file or an s3://bucket/key.gpkg object")
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(
            text, f"is a folder; name the GeoPackage to write in it (e.g. {path / 'buildings.gpkg'})"
        )
    if path.suffix.lower() != ".gpkg":
        # GDAL would write a GeoPackage under any name; one called .geojson or .shp misleads.
        raise InputError(text, "the output is a GeoPackage: give it the .gpkg extension")
    _check_folder(path.parent, text)
    if not path.exists():
        return
    if not path.is_file():
        raise InputError(text, "exists and is not a regular file")
    mode = path.stat().st_mode
    # The mode bits as well as access(): root may write to anything, but a file its owner made
    # read-only is one nobody meant a run to replace.
    if not mode & stat.S_IWUSR or not os.access(path, os.W_OK):
        raise InputError(text, "is read-only; make it writable (chmod u+w) or name another output")
    _check_layout(path, text, target)


def check_output_folder(path: str | Path) -> Path:
    """Refuse, before any work, a folder to write files into that cannot be made or written.

    Args:
        path: The folder; it may be still to be made.

    Returns:
        The path, as a Path.

    Raises:
        InputError: It is a file, or no file can be created where it is or would be.
    """
    text = str(path)
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(text, "exists and is not a folder")
    _check_folder(path, text)
    return path


def _check_folder(folder: Path, text: str) -> None:
    """``folder`` (or, where it is still to be made, its nearest existing parent) must be one
    this process may create files in: a write renames a new file into it."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(text, f"cannot be created: {folder} is a file, not a folder")
    # A file made and removed again, rather than access(): that says yes to root on a read-only
    # mount or an immutable folder, where the write would fail after all the work.
    try:
        os.unlink(new_file_beside(folder / "probe"))
    except OSError as error:
        why = error.strerror or first_line(error)
        raise InputError(text, f"cannot be written: creating a file in {folder} fails ({why})") from None


def _check_layout(path: Path, text: str, crs: CRS) -> None:
    """An existing file must be a GeoPackage this project wrote, in the run's CRS."""
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
        info = pyogrio.read_info(path, layer=LAYER) if LAYER in layers else None
    except DataSourceError as error:
        # GDAL's first sentence; the next advises naming a driver, which would not help here.
        why = first_line(error).split("; ")[0]
        raise InputError(text, f"exists but is not a readable GeoPackage ({why})") from None
    if info is None:
        raise InputError(text, f"exists but has no {LAYER!r} layer; refusing to overwrite it")
    others = [name for name in layers if name not in OUR_LAYERS]
    if others:
        raise InputError(
            text,
            f"holds layers of another tool ({', '.join(others)}) that a run would drop; "
            "refusing to overwrite it",
        )
    missing = [c for c in COLUMNS if c not in list(info["fields"])]
    geometry = str(info["geometry_type"])
    if missing or geometry != "Polygon":
        raise InputError(
            text,
            f"has a {LAYER!r} layer of another tool ({geometry} geometries"
            + (f", without the columns {', '.join(missing)}" if missing else "")
            + "); refusing to overwrite it",
        )
    held = info["crs"]
    if held is not None and not CRS.from_user_input(held).equals(crs):
        raise InputError(text, f"holds buildings in {held}, this run writes {crs.to_string()}")


def check_sizes(
    chip_size: int,
    overlap: int,
    batch_size: int,
    min_area_m2: float = 0.0,
    simplify_m: float = 0.0,
    workers: int | None = None,
) -> None:
    """Refuse sizes a run cannot work with, before it starts.

    A model call holds about 220 bytes per pixel of its batch on the CPU (measured with the
    shipped model), so the pixels of one call, ``batch_size * chip_size**2``, are capped at
    MAX_BATCH_PIXELS (some 3.5 GiB): a larger request would end hours later in a MemoryError.

    Raises:
        InputError: Naming the setting, its value and the rule it breaks.
    """
    if not MIN_CHIP <= chip_size <= MAX_CHIP:
        raise InputError(f"chip size {chip_size}", f"must be from {MIN_CHIP} to {MAX_CHIP} pixels")
    if not 0 <= overlap < chip_size:
        raise InputError(
            f"overlap {overlap}", f"must be at least 0 and less than the chip size ({chip_size})"
        )
    if batch_size < 1:
        raise InputError(f"batch size {batch_size}", "must be at least 1 chip per model call")
    pixels = batch_size * chip_size**2
    if pixels > MAX_BATCH_PIXELS:
        raise InputError(
            f"batch size {batch_size} of {chip_size} px chips",
            f"{pixels / 2**20:.0f} Mpx per model call, over the {MAX_BATCH_PIXELS / 2**20:.0f} Mpx "
            "a call may hold in memory; lower the batch or chip size",
        )
    for name, value in (("minimum area", min_area_m2), ("simplification tolerance", simplify_m)):
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"{name} {value}", "must be a finite number, 0 or more (m or m2)")
    if workers is not None and workers < 1:
        raise InputError(f"workers {workers}", "must be at least 1")
