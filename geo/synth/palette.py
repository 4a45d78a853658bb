"""Colours of roofs, ground surfaces, markings and trees, as reflectance in 0..1."""

from __future__ import annotations

from dataclasses import dataclass

Colour = tuple[float, float, float]


@dataclass(frozen=True)
class PaletteEntry:
    """A colour of a palette and how often it occurs, relative to the palette's other entries."""

    colour: Colour
    weight: float


Palette = tuple[PaletteEntry, ...]

# Roof materials and how often they occur. Both ends of the range are deliberate: bright
# concrete is as bright as sidewalks and bare soil, dark shingle is as dark as asphalt, so no
# brightness threshold separates roofs from the ground.
ROOF_WHITE: Colour = (0.86, 0.86, 0.83)
ROOF_LIGHT_GREY: Colour = (0.63, 0.63, 0.62)
ROOF_DARK_GREY: Colour = (0.25, 0.26, 0.28)
ROOF_BLACK: Colour = (0.14, 0.14, 0.15)
ROOF_TERRACOTTA: Colour = (0.62, 0.37, 0.27)
ROOF_TAN: Colour = (0.60, 0.53, 0.43)
ROOF_BROWN: Colour = (0.38, 0.30, 0.23)
ROOF_BLUE_METAL: Colour = (0.36, 0.47, 0.62)
ROOF_GREEN_METAL: Colour = (0.33, 0.47, 0.38)
HOUSE_ROOFS: Palette = (
    PaletteEntry(ROOF_TERRACOTTA, 0.24),
    PaletteEntry(ROOF_TAN, 0.16),
    PaletteEntry(ROOF_DARK_GREY, 0.21),
    PaletteEntry(ROOF_BROWN, 0.12),
    PaletteEntry(ROOF_LIGHT_GREY, 0.11),
    PaletteEntry(ROOF_WHITE, 0.08),
    PaletteEntry(ROOF_BLACK, 0.08),
)
COMMERCIAL_ROOFS: Palette = (
    PaletteEntry(ROOF_WHITE, 0.24),
    PaletteEntry(ROOF_LIGHT_GREY, 0.26),
    PaletteEntry(ROOF_TAN, 0.12),
    PaletteEntry(ROOF_DARK_GREY, 0.18),
    PaletteEntry(ROOF_BLACK, 0.07),
    PaletteEntry(ROOF_BLUE_METAL, 0.07),
    PaletteEntry(ROOF_GREEN_METAL, 0.06),
)
SHED_ROOFS: Palette = (
    PaletteEntry(ROOF_WHITE, 0.25),
    PaletteEntry(ROOF_LIGHT_GREY, 0.2),
    PaletteEntry(ROOF_BLUE_METAL, 0.2),
    PaletteEntry(ROOF_GREEN_METAL, 0.15),
    PaletteEntry(ROOF_DARK_GREY, 0.2),
)
ASPHALT_DARK: Colour = (0.17, 0.17, 0.18)
ASPHALT_AGED: Colour = (0.38, 0.37, 0.36)
CONCRETE: Colour = (0.70, 0.68, 0.64)
POOL: Colour = (0.22, 0.55, 0.68)
PAVERS: Colour = (0.62, 0.53, 0.43)
STRAW: Colour = (0.47, 0.45, 0.31)  # lawn gone dry, as bright as many roofs
MARKING_WHITE: Colour = (0.85, 0.85, 0.82)
MARKING_YELLOW: Colour = (0.80, 0.68, 0.25)
ROOF_UNIT: Colour = (0.74, 0.74, 0.73)
# Tree crowns, equally likely.
TREE_GREENS: tuple[Colour, ...] = ((0.13, 0.20, 0.10), (0.17, 0.24, 0.12), (0.22, 0.25, 0.14))
