"""Writing files so that nobody ever sees half of one, and no two writers lose each other's work."""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[IO[bytes]]:
    """A temporary file beside ``path`` that replaces it when the block succeeds.

    If the block raises, the temporary file is removed and ``path`` is left as it was. The file
    gets the permissions ``path`` had, or those of any new file (0666 less the umask).

    Args:
        path: The file to create or replace; its folder is created if needed.

    Yields:
        The open temporary file, for writing bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_file_beside(path)
    try:
        with open(tmp, "wb") as handle:
            yield handle
        keep_mode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def new_file_beside(path: Path) -> Path:
    """Create an empty, hidden file with a fresh name in ``path``'s folder, and return its path.

    Created with mode 0666 less the umask, as ``open`` creates files: ``tempfile``'s files are
    0600, which a rename would hand on to the file people read.
    """
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def keep_mode(path: str | Path, replacement: str | Path) -> None:
    """Give ``replacement`` the permission bits of ``path``, the file it is about to replace.

    A file that does not exist yet leaves ``replacement`` as created (0666 less the umask).
    """
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    os.chmod(replacement, mode)


@contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold the write lock of ``path`` for the block, waiting (and saying so) while another holds it.

    The lock is an advisory ``flock`` on a hidden file beside ``path`` (``.NAME.lock``), so it
    covers a read, modify and rename of ``path`` itself, which replaces the file's inode. The
    system releases it when its holder's process ends, killed or not, so a crashed run never
    leaves a file locked. The holder removes the lock file before releasing it, so none is left
    behind; a waiter that then wins the lock on the removed file takes a fresh one instead.

    Args:
        path: The file to be written; its folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    said = False
    while True:
        handle = open(lock, "a+b")  # noqa: SIM115 - closed below, after the unlink
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not said:
                    log.warning("%s is being written by another run; waiting for it to finish", path)
                    said = True
                fcntl.flock(handle, fcntl.LOCK_EX)
            if _same_file(handle, lock):
                break
        except BaseException:
            handle.close()
            raise
        handle.close()  # the holder removed this lock file as we waited on it: take the new one
    try:
        if said:
            log.info("%s: the other run has finished; writing", path)
        yield
    finally:
        lock.unlink(missing_ok=True)
        handle.close()


def _same_file(handle: IO[bytes], path: Path) -> bool:
    """Whether the open ``handle`` is still the file at ``path`` (not removed or replaced)."""
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False
