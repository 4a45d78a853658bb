"""Preview images: a tile with truth and proposal outlines, for people who would rather look."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
from PIL import Image, ImageDraw

from .raster import normalise

TRUTH_COLOUR = (60, 230, 90)
PROPOSAL_COLOUR = (255, 60, 60)


def render_preview(
    image: np.ndarray,
    path: str | Path,
    truth: np.ndarray | None = None,
    proposals: np.ndarray | None = None,
) -> Path:
    """Write a PNG of a tile with outlines: truth in green, proposals in red.

    Args:
        image: (bands, rows, cols) pixels; the first three bands are shown as RGB (one band as grey).
        path: Where to write the PNG.
        truth: Polygons in pixel coordinates.
        proposals: Polygons in pixel coordinates.

    Returns:
        The path written.
    """
    rgb = normalise(image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0))
    picture = Image.fromarray((rgb.transpose(1, 2, 0) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for polygons, colour in ((truth, TRUTH_COLOUR), (proposals, PROPOSAL_COLOUR)):
        for polygon in shapely.get_parts(np.asarray(polygons if polygons is not None else [], dtype=object)):
            for ring in (polygon.exterior, *polygon.interiors):
                draw.line([tuple(xy) for xy in np.asarray(ring.coords)], fill=colour, width=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path
