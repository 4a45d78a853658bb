"""footprints: building footprints from satellite image tiles.

The code lives in the top-level folders geo/, models/, tasks/ and flows/, installed as
``footprints.geo``, ``footprints.models``, ``footprints.tasks`` and ``footprints.flows`` (the
editable install lays links to them under build/, which type checkers and editors follow).
"""

import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("footprints")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

# Python run in the checkout's root finds this folder before the installed package, and the
# subpackages are not in it but beside it: look for them there too.
_here = Path(__file__).parent
if not (_here / "geo").exists() and (_here.parent / "geo" / "__init__.py").is_file():
    __path__.append(str(_here.parent))


@cache
def code_version() -> str:
    """The package version, with the git commit when running from a checkout (``0.1.0+g1a2b3c4``).

    Checkpoints and the GeoPackage's ``runs`` table record this, so a model or a result can be
    traced to the code that made it.
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}"
