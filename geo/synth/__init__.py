"""Deterministic synthetic SpaceNet-2 scenes: pan-sharpened RGB tiles with building labels.

A scene is one continuous area of interest. Roads, paved lots, pools, buildings, trees and their
shadows are laid out once in scene metres (x east, y south, origin at the scene's north-west
corner) and every tile renders its own window of that plan, with ground texture drawn from value
noise that is a pure function of global pixel coordinates. A building that crosses a tile seam is
therefore drawn and labelled consistently on both sides.

The files follow the SpaceNet-2 training layout: ``RGB-PanSharpen`` GeoTIFFs, per-tile
``geojson/buildings`` and the ``summaryData`` solutions CSV. The same arguments always give
byte-identical files.

Modules, in the order a scene is made:

- ``planning``: the planner that lays out roads, buildings, lots, pools and trees in metres;
  ``buildings`` holds building outlines and roof styles, ``palette`` the colours, ``sampling``
  the weighted draws and colour jitter.
- ``scene``: the layout turned into layers in global pixels, with the sun and ground colours.
- ``rendering``: noise-textured ground, painted layers and sensor noise for one tile's window
  (``noise`` holds the value noise), and its GeoTIFF.
- ``labels``: per-tile GeoJSON, rows of the solutions CSV, and `scene_truth`.
- ``writing``: `write_scene`, which writes every file of a scene.
"""

from .labels import scene_truth
from .writing import SceneSummary, write_scene

__all__ = ["SceneSummary", "scene_truth", "write_scene"]
