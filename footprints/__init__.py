"""footprints: building footprints from satellite image tiles.

The code lives in the top-level folders geo/, models/, tasks/ and flows/, installed as
``footprints.geo``, ``footprints.models``, ``footprints.tasks`` and ``footprints.flows``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("footprints")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
