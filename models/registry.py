"""The methods by name: how to build a model from a checkpoint's config and wrap it for inference."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from footprints.geo.errors import InputError

from .checkpoint import load_checkpoint
from .instances import InstanceSegmenter
from .vec2instance import Vec2InstanceConfig, Vec2InstanceModel, Vec2InstanceSegmenter

DEFAULT_MODEL = Path(__file__).parent / "weights" / "vec2instance-default.pt"

METHODS = {"vec2instance": (Vec2InstanceConfig, Vec2InstanceModel, Vec2InstanceSegmenter)}


def build_model(method: str, config: dict | None = None) -> nn.Module:
    """A new (untrained) model of a method, from plain config values.

    Raises:
        InputError: Unknown method or config keys.
    """
    if method not in METHODS:
        raise InputError(method, f"unknown method; known: {', '.join(METHODS)}")
    config_type, model_type, _ = METHODS[method]
    try:
        return model_type(config_type(**(config or {})))
    except TypeError as error:
        raise InputError(method, f"bad configuration ({error})") from error


def load_segmenter(path: str | Path | bytes, device: torch.device | None = None) -> InstanceSegmenter:
    """A trained method, ready for ``predict``, from its checkpoint (a file or its content).

    Raises:
        InputError: The checkpoint is unreadable or does not fit its method.
    """
    record = load_checkpoint(path)
    model = build_model(record["method"], record["config"])
    try:
        model.load_state_dict(record["state_dict"])
    except RuntimeError as error:
        name = f"checkpoint of {len(path)} bytes" if isinstance(path, bytes) else str(path)
        raise InputError(name, f"weights do not fit the {record['method']} model ({error})") from error
    _, _, segmenter_type = METHODS[record["method"]]
    return segmenter_type(model, device)
