"""Buildings in scene metres: sizes, outlines from rectangles, roof parts and roof styles."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

import numpy as np
from shapely.geometry import Polygon

from .palette import Colour
from .sampling import weighted

BuildingKind = Literal["house", "shed", "apartment", "commercial"]


class RoofStyle(IntEnum):
    """How a roof is shaded: flat, two slopes, or four slopes."""

    FLAT = 0
    GABLE = 1
    HIP = 2


@dataclass(frozen=True)
class Rect:
    """A rectangle in a building's local frame, in metres.

    ``u`` runs along the building's front and ``v`` away from it.
    """

    u0: float
    u1: float
    v0: float
    v1: float


@dataclass(frozen=True)
class BuildingSize:
    """Front width and depth of a building, in metres."""

    width: float
    depth: float


@dataclass(frozen=True)
class PartFrame:
    """Where a convex roof part lies and which way its ridge runs, for shading its slopes."""

    centre_x: float
    centre_y: float
    ridge_x: float  # unit vector along the ridge
    ridge_y: float
    half_length: float  # along the ridge
    half_width: float  # across the ridge

    def as_row(self) -> tuple[float, float, float, float, float, float]:
        """The frame as one row of the scene's part-frame array."""
        return (self.centre_x, self.centre_y, self.ridge_x, self.ridge_y, self.half_length, self.half_width)


@dataclass
class Building:
    """A building in scene metres while the plan is built."""

    parts: list[Polygon]
    frames: list[PartFrame]
    footprint: Polygon
    colour: Colour
    style: RoofStyle
    relief: float
    height_m: float
    units: list[Polygon] = field(default_factory=list)


def building_size(kind: BuildingKind, rng: np.random.Generator) -> BuildingSize:
    """Front width and depth in metres; every building is 4 m to 60 m across."""
    if kind == "shed":
        return BuildingSize(width=rng.uniform(4.0, 7.0), depth=rng.uniform(4.0, 7.0))
    if kind == "commercial":
        return BuildingSize(width=rng.uniform(25.0, 60.0), depth=rng.uniform(18.0, 45.0))
    if kind == "apartment":
        return BuildingSize(width=rng.uniform(28.0, 48.0), depth=rng.uniform(11.0, 17.0))
    return BuildingSize(width=rng.uniform(9.0, 20.0), depth=rng.uniform(8.0, 16.0))


def shape_rects(kind: BuildingKind, width: float, depth: float, rng: np.random.Generator) -> list[Rect]:
    """Rectangles in a ``width`` x ``depth`` local frame whose union is a building outline.

    Wings come first and the main bar last, so the bar's roof is drawn over the junction.
    """
    if kind == "shed":
        return [Rect(0.0, width, 0.0, depth)]
    weights = {
        "house": (0.45, 0.35, 0.12, 0.08),
        "apartment": (0.5, 0.2, 0.15, 0.15),
        "commercial": (0.45, 0.2, 0.15, 0.2),
    }[kind]
    shape = weighted(rng, weights)
    bar = rng.uniform(max(4.0, 0.35 * depth), max(4.0, 0.6 * depth))
    arm = rng.uniform(max(4.0, 0.25 * width), max(4.0, 0.4 * width))
    if shape == 0 or width < 3 * 4.0 or depth < bar + 3.0:
        return [Rect(0.0, width, 0.0, depth)]
    if shape == 1:
        rects = [Rect(0.0, arm, 0.0, depth), Rect(0.0, width, 0.0, bar)]
    elif shape == 2:
        mid = rng.uniform(arm / 2, width - arm / 2) if kind != "apartment" else width / 2
        lo = min(max(mid - arm / 2, 0.0), width - arm)
        rects = [Rect(lo, lo + arm, 0.0, depth), Rect(0.0, width, 0.0, bar)]
    else:
        arm = min(arm, width / 3)
        rects = [Rect(0.0, arm, 0.0, depth), Rect(width - arm, width, 0.0, depth), Rect(0.0, width, 0.0, bar)]
    # Mirroring in u and v gives every orientation of the L, T and U from one recipe.
    if rng.random() < 0.5:
        rects = [Rect(width - r.u1, width - r.u0, r.v0, r.v1) for r in rects]
    if rng.random() < 0.5:
        rects = [Rect(r.u0, r.u1, depth - r.v1, depth - r.v0) for r in rects]
    return rects


def frame_rect(origin: np.ndarray, t: np.ndarray, n: np.ndarray, rect: Rect) -> Polygon:
    """``rect`` in scene metres, for a local frame at ``origin`` with axes ``t`` (u) and ``n`` (v)."""
    u = np.array([rect.u0, rect.u1, rect.u1, rect.u0])
    v = np.array([rect.v0, rect.v0, rect.v1, rect.v1])
    return Polygon(origin + u[:, None] * t + v[:, None] * n)


def part_frame(origin: np.ndarray, t: np.ndarray, n: np.ndarray, rect: Rect) -> PartFrame:
    """Centre, ridge direction, half length along the ridge and half width of a roof part."""
    centre = origin + (rect.u0 + rect.u1) / 2 * t + (rect.v0 + rect.v1) / 2 * n
    half_u, half_v = (rect.u1 - rect.u0) / 2, (rect.v1 - rect.v0) / 2
    ridge, half_len, half_wid = (t, half_u, half_v) if half_u >= half_v else (n, half_v, half_u)
    return PartFrame(
        centre_x=centre[0],
        centre_y=centre[1],
        ridge_x=ridge[0],
        ridge_y=ridge[1],
        half_length=half_len,
        half_width=half_wid,
    )
