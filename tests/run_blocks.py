"""``footprints`` in a process of its own, with the block method registered.

``python tests/run_blocks.py ARGS`` runs ``footprints ARGS``.
"""

from __future__ import annotations

import sys

import block_scene  # noqa: F401  (registers the block method)

from footprints.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
