"""The methods by name: each one's configuration, model, segmenter, training losses and shipped
checkpoint, in one registry that the command line, training, evaluation and the AOI flow read.

Adding a method is one module (its config, model and segmenter) and one `register` call here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from footprints.geo.errors import InputError, first_line

from .backbone import fold_batch_norms
from .calibration import Calibration
from .centroid_pointer import CentroidPointerConfig, CentroidPointerModel, CentroidPointerSegmenter
from .checkpoint import checkpoint_bytes, load_checkpoint
from .deployed import Deployed
from .instances import InstanceSegmenter
from .pointer import PointerConfig, PointerModel, PointerSegmenter
from .semi_conv import SemiConvConfig, SemiConvModel, SemiConvSegmenter
from .spatial_embeddings import SpatialEmbeddingsConfig, SpatialEmbeddingsModel, SpatialEmbeddingsSegmenter
from .threshold import ThresholdConfig, ThresholdModel, ThresholdSegmenter
from .vec2instance import Vec2InstanceConfig, Vec2InstanceModel, Vec2InstanceSegmenter

WEIGHTS = Path(__file__).parent / "weights"

# (model, images, instance ids, generator, instances per step) -> named loss terms
Losses = Callable[[Any, torch.Tensor, torch.Tensor, torch.Generator, int], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Method:
    """What the project knows of one method.

    Attributes:
        name: How users and checkpoints name it.
        summary: One line for help texts.
        config: Its configuration dataclass (architecture and decoding settings, with
            ``to_dict()``), built from a checkpoint's plain values.
        model: Builds the (untrained) model from a config.
        segmenter: Wraps a model for inference, on a device (None: CUDA when present).
        losses: The training losses of a batch; None for a method with nothing to train.
        checkpoint: The trained model that ships with the project, if any.
        recipe: The method's own training settings (TrainConfig fields: optimiser, schedule,
            learning rate), which a user's settings override.
        validation: What training validates on: "f1" (the SpaceNet F1, or the official AP on
            Cityscapes, of everything the method finds) or "segment-iou" (the mean IoU of the
            segment found under a pointer inside each known segment).
    """

    name: str
    summary: str
    config: type
    model: Callable[[Any], nn.Module]
    segmenter: Callable[[Any, torch.device | None], InstanceSegmenter]
    losses: Losses | None = None
    checkpoint: Path | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    validation: str = "f1"

    @property
    def trainable(self) -> bool:
        """Whether the method learns anything (and so has a training command)."""
        return self.losses is not None


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry (a method of the same name is replaced)."""
    METHODS[method.name] = method
    return method


register(
    Method(
        "vec2instance",
        "centroid detector + Vec2Instance (a CNN predicts each building's mask MLP)",
        Vec2InstanceConfig,
        Vec2InstanceModel,
        Vec2InstanceSegmenter,
        losses=Vec2InstanceModel.losses,
        checkpoint=WEIGHTS / "vec2instance-default.pt",
    )
)
register(
    Method(
        "spatial-embeddings",
        "spatial embeddings with a learned clustering bandwidth (ERFNet, seed-driven clustering)",
        SpatialEmbeddingsConfig,
        SpatialEmbeddingsModel,
        SpatialEmbeddingsSegmenter,
        losses=SpatialEmbeddingsModel.losses,
        checkpoint=WEIGHTS / "spatial-embeddings-default.pt",
        # The paper's: Adam, lr 5e-4, weight decay 1e-4, polynomial decay with power 0.9.
        recipe={"optimiser": "adam", "schedule": "poly", "lr": 5e-4, "weight_decay": 1e-4},
    )
)
register(
    Method(
        "semi-conv",
        "semi-convolutional embeddings (position added to the embedding, Laplacian kernel clustering)",
        SemiConvConfig,
        SemiConvModel,
        SemiConvSegmenter,
        checkpoint=WEIGHTS / "semi-conv-default.pt",
        losses=SemiConvModel.losses,
        # The paper gives no schedule for this backbone: the spatial-embeddings recipe.
        recipe={"optimiser": "adam", "schedule": "poly", "lr": 5e-4, "weight_decay": 1e-4},
    )
)
register(
    Method(
        "pointer",
        "pointer network with an ROI (the segment under a point; every segment by sequential pointing)",
        PointerConfig,
        PointerModel,
        PointerSegmenter,
        losses=PointerModel.losses,
        validation="segment-iou",
    )
)
register(
    Method(
        "centroid-pointer",
        "centroid detector + pointer network (each peak points the network at its building)",
        CentroidPointerConfig,
        CentroidPointerModel,
        CentroidPointerSegmenter,
        losses=CentroidPointerModel.losses,
        checkpoint=WEIGHTS / "centroid-pointer-default.pt",
    )
)
register(
    Method(
        "threshold",
        "brightness threshold baseline (bright connected regions; nothing to train)",
        ThresholdConfig,
        ThresholdModel,
        ThresholdSegmenter,
    )
)

DEFAULT_METHOD = "vec2instance"


def get_method(name: str) -> Method:
    """The registered method of that name.

    Raises:
        InputError: Unknown method.
    """
    if name not in METHODS:
        raise InputError(name, f"unknown method; known: {', '.join(METHODS)}")
    return METHODS[name]


def build_model(name: str, config: dict[str, Any] | None = None) -> nn.Module:
    """A new (untrained) model of a method, from plain config values.

    Raises:
        InputError: Unknown method or config keys.
    """
    entry = get_method(name)
    try:
        return entry.model(entry.config(**(config or {})))
    except TypeError as error:
        raise InputError(name, f"bad configuration ({error})") from error


def resolve_checkpoint(
    path: str | Path | None = None, name: str | None = None
) -> tuple[Path | bytes, dict[str, Any]]:
    """The checkpoint a run or an evaluation uses, read and checked.

    Args:
        path: The checkpoint named by the user; None takes the method's shipped model or, for a
            method with nothing to train, a checkpoint of its default settings (as bytes).
        name: The method the checkpoint must be of; None accepts any (and, without ``path``,
            means the project's default method).

    Returns:
        (the checkpoint's file or content, its record).

    Raises:
        InputError: Unknown method, a method that learns but ships no model, an unreadable
            checkpoint, or one of another method.
    """
    source: Path | bytes
    if path:
        source = Path(path)
    else:
        entry = get_method(name or DEFAULT_METHOD)
        if entry.checkpoint is not None:
            source = entry.checkpoint
        elif entry.trainable:
            raise InputError(entry.name, "ships no trained model; name a checkpoint (--model)")
        else:
            config = entry.config()
            state = entry.model(config).state_dict()
            source = checkpoint_bytes({"method": entry.name, "config": config.to_dict(), "state_dict": state})
    record = load_checkpoint(source)
    where = str(source) if isinstance(source, Path) else f"the {record['method']} default"
    if name is not None and name != record["method"]:
        raise InputError(where, f"is a {record['method']} checkpoint, not {name}")
    # Here, not on the workers: they get the checkpoint's bytes, and would name it by its size,
    # once per worker and only after the run has started.
    check_weights(where, record)
    return source, record


def check_weights(where: str, record: dict[str, Any]) -> nn.Module:
    """The untrained model of a checkpoint's method, once its config and weights are seen to fit.

    Args:
        where: How to name the checkpoint in errors (its path).
        record: The checkpoint's content (see checkpoint.load_checkpoint).

    Returns:
        The model, built from the checkpoint's config, its weights not yet loaded.

    Raises:
        InputError: An unknown method, a config the method does not take, or weights of other
            names or shapes than its model's, in one line naming ``where``.
    """
    method = record["method"]
    if method not in METHODS:
        raise InputError(
            where, f"is a checkpoint of an unknown method {method!r}; known: {', '.join(METHODS)}"
        )
    entry = METHODS[method]
    try:
        model = entry.model(entry.config(**record["config"]))
    except (TypeError, ValueError) as error:
        raise InputError(where, f"its config does not fit the {method} model ({first_line(error)})") from None
    expected = model.state_dict()
    given = record["state_dict"]
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    reshaped = [
        k
        for k in expected
        if k in given and (not isinstance(given[k], torch.Tensor) or given[k].shape != expected[k].shape)
    ]
    problems = [
        f"{len(keys)} {what} (e.g. {keys[0]})"
        for keys, what in ((missing, "missing"), (unexpected, "unexpected"), (reshaped, "of another shape"))
        if keys
    ]
    if problems:
        raise InputError(
            where, f"weights do not fit the {method} model's {len(expected)} tensors: {', '.join(problems)}"
        )
    return model


def load_segmenter(path: str | Path | bytes, device: torch.device | None = None) -> InstanceSegmenter:
    """A trained method, ready for ``predict``, from its checkpoint (a file or its content).

    What the checkpoint adds to its method (a trained pixel size, calibrated scores) is applied
    around it (models/deployed.py).

    Raises:
        InputError: The checkpoint is unreadable or does not fit its method.
    """
    record = load_checkpoint(path)
    name = f"checkpoint of {len(path)} bytes" if isinstance(path, bytes) else str(path)
    model = check_weights(name, record)
    model.load_state_dict(record["state_dict"])
    segmenter = get_method(record["method"]).segmenter(fold_batch_norms(model), device)
    pixel_range = trained_pixel_sizes(record)
    calibration = Calibration.from_dict(record["calibration"]) if record.get("calibration") else None
    if pixel_range is None and calibration is None:
        return segmenter
    return Deployed(segmenter, pixel_range, calibration)


def trained_pixel_sizes(record: dict[str, Any]) -> tuple[float, float] | None:
    """The lowest and highest ground pixel size in metres a checkpoint's model was trained at:
    the size its chips were resampled to, or the range of its training tiles' own sizes; None
    where neither is known (older checkpoints, Cityscapes, COCO)."""
    size = record.get("training", {}).get("pixel_size_m")
    if size:
        return float(size), float(size)
    known = record.get("data", {}).get("pixel_range_m")
    return (float(known[0]), float(known[1])) if known else None
