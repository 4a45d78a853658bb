"""Writing a scene: every tile's GeoTIFF and GeoJSON, then the solutions CSV."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from tqdm import tqdm

from .labels import SolutionRow, solutions_csv, tile_labels
from .rendering import geotiff_bytes, render_window
from .scene import build_scene


@dataclass(frozen=True)
class SceneSummary:
    """What `write_scene` wrote.

    Attributes:
        aoi_name: Name of the area of interest, e.g. ``AOI_9_Synthetic``.
        tiles: Number of image tiles written.
        buildings: Number of distinct, whole buildings in the scene; a building cut by a seam
            counts once.
        tile_keys: Keys of the GeoTIFF tiles in image-number order.
        grid: ``(rows, cols)`` of the tile grid; tiles are numbered row-major from 1 and the
            last row may be only partly filled.
    """

    aoi_name: str
    tiles: int
    buildings: int
    tile_keys: tuple[str, ...]
    grid: tuple[int, int]


def write_scene(
    write: Callable[[str, bytes], None],
    tiles: int,
    seed: int,
    *,
    aoi_name: str = "AOI_9_Synthetic",
    tile_size: int = 650,
    gsd_m: float = 0.3,
    origin_lonlat: tuple[float, float] = (-115.20, 36.15),
    progress: bool = False,
) -> SceneSummary:
    """Generate a synthetic SpaceNet-2 scene and hand each of its files to ``write``.

    Tiles form a grid of ``ceil(sqrt(tiles))`` columns that abut exactly; tile ``N`` is
    ``RGB-PanSharpen_<aoi>_img<N>.tif`` (3-band uint16, 11-bit values, EPSG:4326, north-up) with
    its labels in ``geojson/buildings/buildings_<aoi>_img<N>.geojson``. The solutions CSV comes
    last. Row ``k`` of an image in the CSV is feature ``k`` of that image's GeoJSON.

    Args:
        write: Called once per file with a relative key (forward slashes) and the file's bytes.
        tiles: Number of tiles, at least 1.
        seed: Seed of everything random; equal arguments give byte-identical files.
        aoi_name: Area of interest name; files go under ``<aoi_name>_Train/``.
        tile_size: Tile width and height in pixels, at least 64.
        gsd_m: Ground sample distance in metres per pixel.
        origin_lonlat: Longitude and latitude of the scene's north-west corner.
        progress: Show a progress bar over tiles.

    Returns:
        A summary of the scene.

    Raises:
        ValueError: If ``tiles``, ``tile_size`` or ``gsd_m`` is out of range.
    """
    if tiles < 1:
        raise ValueError(f"tiles must be at least 1, got {tiles}")
    if tile_size < 64:
        raise ValueError(f"tile_size must be at least 64 pixels, got {tile_size}")
    if not gsd_m > 0:
        raise ValueError(f"gsd_m must be positive, got {gsd_m}")
    cols = math.ceil(math.sqrt(tiles))
    rows = math.ceil(tiles / cols)
    scene = build_scene(seed, tiles, cols, tile_size, gsd_m, origin_lonlat)

    root = f"{aoi_name}_Train"
    tile_keys = []
    csv_rows: list[SolutionRow] = []
    for index in tqdm(range(tiles), desc=f"{aoi_name} tiles", unit="tile", disable=not progress):
        number = index + 1
        image_id = f"{aoi_name}_img{number}"
        row, col = divmod(index, cols)
        transform = scene.tile_transform(row, col)
        tif_key = f"{root}/RGB-PanSharpen/RGB-PanSharpen_{image_id}.tif"
        pixels = render_window(scene, col * tile_size, row * tile_size, tile_size, tile_size)
        write(tif_key, geotiff_bytes(pixels, transform, {"AOI": aoi_name, "IMAGE_ID": image_id}))
        tile_keys.append(tif_key)

        labels = tile_labels(scene, row, col, image_id)
        write(f"{root}/geojson/buildings/buildings_{image_id}.geojson", labels.geojson)
        csv_rows.extend(labels.rows)

    write(f"{root}/summaryData/{root}_Building_Solutions.csv", solutions_csv(csv_rows))
    return SceneSummary(
        aoi_name=aoi_name,
        tiles=tiles,
        buildings=len(scene.footprints.geoms),
        tile_keys=tuple(tile_keys),
        grid=(rows, cols),
    )
