"""Writing files so that nobody ever sees half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_file(path: str | Path) -> Iterator[IO[bytes]]:
    """A temporary file beside ``path`` that replaces it when the block succeeds.

    If the block raises, the temporary file is removed and ``path`` is left as it was.

    Args:
        path: The file to create or replace; its folder is created if needed.

    Yields:
        The open temporary file, for writing bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        try:
            yield handle
        except BaseException:
            handle.close()
            Path(handle.name).unlink(missing_ok=True)
            raise
    os.replace(handle.name, path)
