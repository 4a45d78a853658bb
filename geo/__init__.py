"""Pure geospatial code: tile stores, SpaceNet layouts and labels, rasterising, scoring, synthetic scenes.

Nothing here imports torch or Prefect.
"""
