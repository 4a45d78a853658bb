"""A scene of plain blocks on flat ground, and a segmenter that reads it perfectly.

The blocks are bright, the ground dark and every block stands apart, so connected components of
the bright pixels are exactly the buildings wherever a chip is cut: what differs between two
chippings of this scene is what the pipeline does with chips, never what a model sees. Blocks
cross the seams of the 2 x 2 tile grid, one sits on the corner where four tiles meet, one is
larger than any chip overlap the tests use, and one has a courtyard (a hole).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import rasterio
import shapely
import torch
from rasterio.features import rasterize
from rasterio.transform import Affine
from torch import nn

from footprints.geo.baseline import bright_regions
from footprints.models.checkpoint import save_checkpoint
from footprints.models.instances import Instance, labels_to_instances
from footprints.models.registry import Method, register

TILE = 160
PIXEL_M = 0.5
CRS = "EPSG:32611"
ORIGIN = (500_000.0, 4_000_000.0)  # top-left corner, UTM metres
GROUND, ROOF = 40, 220

# Blocks in scene pixels (col0, row0, col1, row1), on a 320 x 320 scene of 2 x 2 tiles.
BLOCKS = [
    (10, 10, 40, 30),
    (60, 12, 90, 50),
    (120, 20, 150, 35),  # stops short of the vertical seam at 160
    (150, 60, 175, 85),  # crosses the vertical seam
    (145, 145, 180, 175),  # on the corner of four tiles
    (20, 150, 60, 172),  # crosses the horizontal seam
    (200, 20, 290, 110),  # 90 px: larger than the overlaps the tests use
    (30, 220, 70, 300),
    (230, 200, 300, 270),  # with a courtyard, below
    (100, 240, 140, 255),
    (110, 100, 130, 130),
]
COURTYARD = (250, 220, 280, 250)


def scene_polygons() -> list[shapely.Polygon]:
    """The buildings in scene pixels (the courtyard cut out of its block)."""
    polygons = [shapely.box(*b) for b in BLOCKS]
    polygons[8] = polygons[8].difference(shapely.box(*COURTYARD))
    return polygons


def scene_transform() -> Affine:
    """Scene pixels to UTM."""
    return Affine(PIXEL_M, 0, ORIGIN[0], 0, -PIXEL_M, ORIGIN[1])


def write_block_scene(folder: Path, nodata_left_of: int | None = None) -> list[Path]:
    """Write the 2 x 2 tiles as GeoTIFFs (uint8, 3 bands) in a plain folder.

    Args:
        folder: Where to write.
        nodata_left_of: If set, scene columns left of this are nodata (0, declared), as at the
            edge of a real acquisition.
    """
    folder.mkdir(parents=True, exist_ok=True)
    scene = rasterize(
        [(p, 1) for p in scene_polygons()], out_shape=(2 * TILE, 2 * TILE), fill=0, dtype="uint8"
    )
    pixels = np.where(scene == 1, ROOF, GROUND).astype(np.uint8)
    # Gentle texture, so that the per-tile stretch has a spread to work with.
    pixels = pixels + (np.indices(pixels.shape).sum(axis=0) % 7).astype(np.uint8)
    if nodata_left_of is not None:
        pixels[:, :nodata_left_of] = 0
    paths = []
    for row in range(2):
        for col in range(2):
            window = pixels[row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE]
            transform = scene_transform() @ Affine.translation(col * TILE, row * TILE)
            path = folder / f"tile_r{row}_c{col}.tif"
            with rasterio.open(
                path,
                "w",
                driver="GTiff",
                width=TILE,
                height=TILE,
                count=3,
                dtype="uint8",
                crs=CRS,
                transform=transform,
                nodata=0 if nodata_left_of is not None else None,
            ) as dst:
                dst.write(np.repeat(window[None], 3, axis=0))
            paths.append(path)
    return paths


@dataclass(frozen=True)
class BlockConfig:
    """The toy method has nothing to configure."""

    def to_dict(self) -> dict[str, int]:
        return {}


class BlockNet(nn.Module):
    """No weights: carries the configuration, as every method's model does."""

    def __init__(self, config: BlockConfig = BlockConfig()) -> None:
        super().__init__()
        self.config = config


class BlockSegmenter:
    """Connected components of bright pixels, each an instance with score 1.

    ``loads`` counts the segmenters made in this process (for clusters whose workers are threads
    of it). Each call adds its number of chips as a line to the file $BLOCKS_CHIPS_LOG, where
    set, which a run's worker processes share (see segmented_chips).
    $BLOCKS_SECONDS_PER_BATCH slows each call down, so that a test can interrupt a run part-way.
    """

    loads: ClassVar[int] = 0
    device = torch.device("cpu")

    def __init__(self, model: BlockNet, device: torch.device | None = None) -> None:
        BlockSegmenter.loads += 1

    def predict(self, chips: torch.Tensor, pixel_size: float | None = None) -> list[list[Instance]]:
        """Per chip, its bright components."""
        if log := os.environ.get("BLOCKS_CHIPS_LOG"):
            with open(log, "a") as lines:  # one short append per call: whole lines, in any process
                lines.write(f"{len(chips)}\n")
        time.sleep(float(os.environ.get("BLOCKS_SECONDS_PER_BATCH", "0")))
        found = []
        for chip in chips.numpy():
            labels, _ = bright_regions(chip.mean(axis=0), threshold=0.5, min_pixels=1)
            found.append(labels_to_instances(labels))
        return found


def segmented_chips(log: Path) -> int:
    """The chips BlockSegmenters segmented while $BLOCKS_CHIPS_LOG named ``log``."""
    return sum(map(int, log.read_text().split())) if log.exists() else 0


# A method registered from the tests: the flows, tasks and CLI know it from the registry alone.
register(Method("blocks", "the perfect segmenter of block scenes", BlockConfig, BlockNet, BlockSegmenter))


def block_checkpoint(path: Path) -> Path:
    """A checkpoint of the block method, as any method's checkpoint is written."""
    return save_checkpoint(path, {"method": "blocks", "config": {}, "state_dict": {}})
