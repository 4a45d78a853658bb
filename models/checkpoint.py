"""Checkpoints: configuration, weights and the code version, loaded without unpickling objects.

A checkpoint is a dict of plain values and tensors written by ``torch.save`` and read back with
``torch.load(weights_only=True)``, which refuses anything but tensors and builtin containers, so a
checkpoint from elsewhere cannot run code when it is opened.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from footprints import code_version
from footprints.geo.errors import InputError, first_line
from footprints.geo.files import atomic_file

FORMAT = 1
# The types of the values a checkpoint holds, where it holds them.
KINDS: dict[str, type] = {"method": str, "config": dict, "state_dict": dict}


def checkpoint_bytes(content: dict[str, Any]) -> bytes:
    """A checkpoint's file content, stamped with the format and the code version."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "code_version": code_version(), **content}, buffer)
    return buffer.getvalue()


def save_checkpoint(path: str | Path, content: dict[str, Any]) -> Path:
    """Write a checkpoint atomically (a temporary file renamed over the target).

    Args:
        path: Where to write.
        content: Plain values and tensors: method, config, state_dict, metrics, ...

    Returns:
        The path written.
    """
    path = Path(path)
    with atomic_file(path) as f:
        f.write(checkpoint_bytes(content))
    return path


def checkpoint_identity(source: Path | bytes, method: str) -> tuple[bytes, str, str]:
    """A checkpoint's content, its id (its file's stem, or its method for one built from settings,
    and a checksum prefix) and its SHA-256, as runs and outputs name it."""
    content = source.read_bytes() if isinstance(source, Path) else source
    digest = hashlib.sha256(content).hexdigest()
    stem = source.stem if isinstance(source, Path) else method
    return content, f"{stem}@{digest[:12]}", digest


def load_checkpoint(
    path: str | Path | bytes, required: tuple[str, ...] = ("method", "config", "state_dict")
) -> dict[str, Any]:
    """Read a checkpoint safely.

    Args:
        path: The file, or its content.
        required: Keys it must have.

    Returns:
        Its content, tensors on the CPU.

    Raises:
        InputError: Missing, unreadable, unsafe or incomplete checkpoint.
    """
    if isinstance(path, bytes):
        name, content = f"checkpoint of {len(path)} bytes", path
    else:
        name = str(path)
        source = Path(path)
        if source.is_dir():
            raise InputError(name, "is a folder, not a checkpoint file")
        if not source.is_file():
            raise InputError(name, "no such checkpoint file")
        try:
            content = source.read_bytes()
        except OSError as error:
            raise InputError(name, f"cannot be read ({error.strerror or first_line(error)})") from error
    record = _safe_load(name, content)
    if not isinstance(record, dict):
        raise InputError(
            name, f"not a footprints checkpoint (it holds a {type(record).__name__}, not a dict)"
        )
    missing = [k for k in required if k not in record]
    if missing:
        raise InputError(name, f"not a footprints checkpoint (it lacks {', '.join(missing)})")
    wrong = [k for k, kind in KINDS.items() if k in record and not isinstance(record[k], kind)]
    if wrong:
        raise InputError(name, f"not a footprints checkpoint (wrong type of {', '.join(wrong)})")
    return record


def _safe_load(name: str, content: bytes) -> Any:
    """``torch.load(weights_only=True)`` of a checkpoint's bytes, any failure as one InputError.

    The weights-only unpickler refuses every object but tensors and builtin containers without
    running it. Its failures are told in our words: torch's text advises loading again with
    ``weights_only=False``, which would run whatever the file holds.
    """
    if not content:
        raise InputError(name, "not a readable footprints checkpoint (an empty file)")
    try:
        with warnings.catch_warnings():
            # The weights-only unpickler warns of pickle protocols it did not write (any pickle
            # from elsewhere), before refusing the file anyway: the error says it all.
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except Exception as error:  # whatever torch raises over a bad file, it is unreadable
        raise InputError(
            name, f"not a readable footprints checkpoint ({_load_failure(content, error)})"
        ) from None


def _load_failure(content: bytes, error: Exception) -> str:
    """Why ``torch.load`` could not read a checkpoint, in a few words of ours."""
    if content.startswith(b"PK\x03\x04"):
        return f"a torch archive of {len(content)} bytes that cannot be read: truncated or corrupt?"
    if isinstance(error, pickle.UnpicklingError) and "weights only" in str(error).lower():
        return "it holds Python objects, not only tensors and plain values; refused without running them"
    return f"{len(content)} bytes that are neither a torch archive nor a pickle of tensors"
