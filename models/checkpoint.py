"""Checkpoints: configuration, weights and the code version, loaded without unpickling objects.

A checkpoint is a dict of plain values and tensors written by ``torch.save`` and read back with
``torch.load(weights_only=True)``, which refuses anything but tensors and builtin containers, so a
checkpoint from elsewhere cannot run code when it is opened.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from footprints import code_version
from footprints.geo.errors import InputError, first_line
from footprints.geo.files import atomic_file

FORMAT = 1


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
        name, source = f"checkpoint of {len(path)} bytes", io.BytesIO(path)
    else:
        name = str(path)
        source = Path(path)
        if not source.is_file():
            raise InputError(name, "no such checkpoint file")
    try:
        record = torch.load(source, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise InputError(name, f"not a readable footprints checkpoint ({first_line(error)})") from error
    if not isinstance(record, dict):
        raise InputError(name, "not a footprints checkpoint (no dict inside)")
    missing = [k for k in required if k not in record]
    if missing:
        raise InputError(name, f"checkpoint lacks {', '.join(missing)}")
    return record
