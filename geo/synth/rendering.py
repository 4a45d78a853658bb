"""Rendering a window of the scene: ground texture, painted layers, blur, sensor noise, GeoTIFF."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.features import rasterize
from rasterio.io import MemoryFile
from rasterio.transform import Affine

from .buildings import RoofStyle
from .noise import value_noise
from .palette import ROOF_UNIT, STRAW
from .scene import Layer, Scene


def _smoothstep(lo: float, hi: float, v: np.ndarray) -> np.ndarray:
    t = np.clip((v - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class _Window:
    """A window of global pixel coordinates with the noise fields every layer shares."""

    x0: int
    y0: int
    w: int
    h: int
    xs: np.ndarray  # pixel-centre x of each column
    ys: np.ndarray  # pixel-centre y of each row
    grain: np.ndarray  # pixel-scale grit
    speckle: np.ndarray  # metre-scale clumps: lawn tufts, leaves
    stain: np.ndarray  # patches of wear and dirt a few metres across, around 1

    def ids(self, layer: Layer) -> np.ndarray:
        """Raster of 1 + layer index; later items are drawn over earlier ones."""
        chosen = layer.select(self.x0, self.y0, self.x0 + self.w, self.y0 + self.h)
        if chosen.size == 0:
            return np.zeros((self.h, self.w), dtype=np.int32)
        return rasterize(
            ((layer.geoms[i], int(i) + 1) for i in chosen),
            out_shape=(self.h, self.w),
            transform=Affine.translation(self.x0, self.y0),
            fill=0,
            dtype="int32",
        )


def _noise_field(scene: Scene, key: int, ys: np.ndarray, xs: np.ndarray, cell_m: float) -> np.ndarray:
    # Cells finer than ~1 pixel would alias, so the finest field is pixel-scale grit.
    return value_noise(scene.keys[key], ys, xs, max(cell_m / scene.gsd_m, 1.2))


def render_window(scene: Scene, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """The scene's pixels in a window of global pixel coordinates, as 11-bit uint16 RGB."""
    pad = 2  # room for the blur, so that edge pixels see their neighbours in the next tile
    ys = y0 - pad + 0.5 + np.arange(h + 2 * pad, dtype=np.float64)
    xs = x0 - pad + 0.5 + np.arange(w + 2 * pad, dtype=np.float64)
    win = _Window(
        x0=x0 - pad,
        y0=y0 - pad,
        w=w + 2 * pad,
        h=h + 2 * pad,
        xs=xs,
        ys=ys,
        grain=_noise_field(scene, 5, ys, xs, 0.0),
        speckle=_noise_field(scene, 6, ys, xs, 1.0),
        stain=0.9 + 0.2 * _noise_field(scene, 7, ys, xs, 6.0),
    )
    img = _ground(scene, win)
    _paint_surfaces(scene, win, img)
    img[:, win.ids(scene.shadows) > 0] *= np.array([0.45, 0.48, 0.56], dtype=np.float32)[:, None]
    _paint_roofs(scene, win, img)
    _paint_trees(scene, win, img)
    img = _blur(img)[:, pad:-pad, pad:-pad]
    # Sensor noise differs between tiles as it would between two captures; it is drawn from
    # the scene seed and the tile's position, so it is still reproducible.
    rng = np.random.default_rng([int(scene.keys[15]), x0, y0])
    dn = 70.0 + img * np.array([1900.0, 1880.0, 1800.0], dtype=np.float32)[:, None, None]
    dn += rng.standard_normal(dn.shape, dtype=np.float32) * (6.0 + 0.012 * dn)
    return np.clip(np.rint(dn), 1, 2047).astype(np.uint16)


def _ground(scene: Scene, win: _Window) -> np.ndarray:
    """Bare soil in patches of lighter and darker tone, with lawns and scrub in places."""
    ys, xs = win.ys, win.xs
    broad = 0.6 * _noise_field(scene, 0, ys, xs, 140.0) + 0.4 * _noise_field(scene, 1, ys, xs, 35.0)
    tone = (
        0.5 * _noise_field(scene, 2, ys, xs, 60.0)
        + 0.3 * _noise_field(scene, 3, ys, xs, 12.0)
        + 0.2 * _noise_field(scene, 4, ys, xs, 3.0)
    )
    tone = _smoothstep(0.2, 0.8, tone)
    # Lawns and scrub are the parts of a broad field above a level chosen for the wanted share
    # (the field is roughly normal around 0.5 with spread 0.155); finer noise frays their edges.
    level = 0.5 + 0.45 * (0.5 - scene.vegetation)
    patch = broad + 0.12 * (_noise_field(scene, 8, ys, xs, 4.0) - 0.5) + 0.04 * (win.speckle - 0.5)
    veg = _smoothstep(level - 0.03, level + 0.03, patch)
    dark, bright = scene.soil[0][:, None, None], scene.soil[1][:, None, None]
    soil = (dark + (bright - dark) * tone) * (0.9 + 0.2 * win.grain)
    lawn = 0.6 * _noise_field(scene, 9, ys, xs, 6.0) + 0.4 * win.speckle
    dry = _smoothstep(0.35, 0.75, _noise_field(scene, 13, ys, xs, 18.0))
    green, straw = scene.grass[:, None, None], np.array(STRAW, dtype=np.float32)[:, None, None]
    grass = (green + (straw - green) * dry) * (0.7 + 0.6 * lawn) * (0.92 + 0.16 * win.grain)
    return soil * (1.0 - veg) + grass * veg


def _paint_surfaces(scene: Scene, win: _Window, img: np.ndarray) -> None:
    """Lots, driveways, patios, pools, roads and markings, worn in patches."""
    ids = win.ids(scene.surfaces)
    m = ids > 0
    k = ids[m] - 1
    texture = win.stain[m] * (1.0 + scene.surface_grain[k] * (win.grain[m] - 0.5) * 2.0)
    img[:, m] = (scene.surface_colour[k] * texture[:, None]).T


def _paint_roofs(scene: Scene, win: _Window, img: np.ndarray) -> None:
    """Roofs with sunlit and shaded slopes, eaves or parapets, and plant on flat roofs."""
    parts = win.ids(scene.parts)
    m = parts > 0
    rr, cc = np.nonzero(m)
    p = parts[m] - 1
    b = scene.part_building[p]
    cx, cy, ax, ay, half_len, half_wid = scene.part_frame[p].T
    dx, dy = win.xs[cc] - cx, win.ys[rr] - cy
    along = dx * ax + dy * ay
    across = dy * ax - dx * ay
    sun_along = scene.sun[0] * ax + scene.sun[1] * ay
    sun_across = scene.sun[1] * ax - scene.sun[0] * ay
    style = scene.roof_style[b]
    relief = scene.roof_relief[b]
    # Each slope is lit by how much it faces the sun; a hip roof's end slopes take over where
    # the distance from the ridge's end exceeds the distance from the eaves.
    end = (style == RoofStyle.HIP) & (np.abs(along) - (half_len - half_wid) > np.abs(across))
    facing = np.where(end, np.sign(along) * sun_along, np.sign(across) * sun_across)
    # Flat roofs get a faint gradient instead: ponding, dirt and the view angle.
    flat = np.clip(across / np.maximum(half_wid, 1.0), -1.0, 1.0)
    factor = 1.0 + relief * np.where(style == RoofStyle.FLAT, flat, facing)
    factor *= np.where((style != RoofStyle.FLAT) & (np.abs(across) < 0.6) & ~end, 1.08, 1.0)
    # Outlines: parapets catch light, eaves of pitched roofs are in their own shade.
    building = np.zeros_like(parts)
    building[m] = b + 1
    factor *= np.where(_edges(building)[m], np.where(style == RoofStyle.FLAT, 1.12, 0.82), 1.0)
    factor *= win.stain[m] * (0.95 + 0.1 * win.grain[m])
    img[:, m] = (scene.roof_colour[b] * factor[:, None].astype(np.float32)).T

    m = win.ids(scene.roof_units) > 0
    img[:, m] = np.array(ROOF_UNIT, dtype=np.float32)[:, None] * (0.9 + 0.2 * win.grain[m])


def _paint_trees(scene: Scene, win: _Window, img: np.ndarray) -> None:
    """Crowns lit on the sun side, with clumps of leaves."""
    crowns = win.ids(scene.trees)
    m = crowns > 0
    rr, cc = np.nonzero(m)
    k = crowns[m] - 1
    cx, cy, radius = scene.tree_frame[k].T
    lit = ((win.xs[cc] - cx) * scene.sun[0] + (win.ys[rr] - cy) * scene.sun[1]) / radius
    factor = (0.75 + 0.35 * np.clip(lit, -1.0, 1.0)) * (0.6 + 0.8 * win.speckle[m])
    img[:, m] = (scene.tree_colour[k] * factor[:, None].astype(np.float32)).T


def _edges(ids: np.ndarray) -> np.ndarray:
    """Pixels of a labelled region that have a 4-neighbour with another label."""
    e = np.zeros(ids.shape, dtype=bool)
    e[1:] |= ids[1:] != ids[:-1]
    e[:-1] |= ids[:-1] != ids[1:]
    e[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    e[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    return e & (ids > 0)


def _blur(img: np.ndarray) -> np.ndarray:
    """A 3x3 binomial blur, the optics' softening that real pan-sharpened tiles show."""
    out = img.copy()
    out[:, 1:-1] = 0.25 * img[:, :-2] + 0.5 * img[:, 1:-1] + 0.25 * img[:, 2:]
    tmp = out.copy()
    out[:, :, 1:-1] = 0.25 * tmp[:, :, :-2] + 0.5 * tmp[:, :, 1:-1] + 0.25 * tmp[:, :, 2:]
    return out


def geotiff_bytes(pixels: np.ndarray, transform: Affine, tags: dict[str, str]) -> bytes:
    """A tiled, DEFLATE-compressed EPSG:4326 GeoTIFF of ``pixels`` with no time stamps."""
    count, height, width = pixels.shape
    with MemoryFile() as memory:
        with memory.open(
            driver="GTiff",
            width=width,
            height=height,
            count=count,
            dtype="uint16",
            crs="EPSG:4326",
            transform=transform,
            compress="DEFLATE",
            # Sensor noise makes higher levels barely smaller and much slower.
            zlevel=1,
            predictor=2,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            photometric="RGB",
        ) as dst:
            dst.write(pixels)
            dst.update_tags(**tags)
        return memory.read()
