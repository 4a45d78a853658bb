"""Cityscapes frames as training tiles, and predictions in Cityscapes' instance format.

The layout is the official one: ``leftImg8bit/{split}/{city}/{frame}_leftImg8bit.png`` with
``gtFine/{split}/{city}/{frame}_gtFine_instanceIds.png`` beside it, where an instance id is
label id * 1000 + instance number and ids below 1000 are whole label ids (crowds and "stuff").
Class names and label ids are cityscapesScripts' own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.labels import id2label, name2label
from PIL import Image

from footprints.geo.errors import InputError

from .data import LabelledTile
from .embeddings import CLASS_STRIDE
from .instances import Instance

INSTANCE_CLASSES = tuple(
    label.name for label in id2label.values() if label.hasInstances and not label.ignoreInEval
)


@dataclass(frozen=True)
class Frame:
    """One Cityscapes frame: its image and its instance ground truth."""

    name: str
    image: Path
    instances: Path


def check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    """The classes, checked against Cityscapes' classes with instances.

    Raises:
        InputError: A name that is not one of them.
    """
    unknown = [c for c in classes if c not in INSTANCE_CLASSES]
    if unknown or not classes:
        raise InputError(
            ",".join(unknown) or "--classes",
            f"not Cityscapes instance classes; known: {', '.join(INSTANCE_CLASSES)}",
        )
    return tuple(classes)


def find_frames(root: str | Path, split: str) -> list[Frame]:
    """The frames of a split, in name order.

    Raises:
        InputError: No frame of that split under ``root``, or a frame without its ground truth.
    """
    root = Path(root)
    images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    if not images:
        raise InputError(str(root / "leftImg8bit" / split), "holds no */*_leftImg8bit.png frames")
    frames = []
    for image in images:
        name = image.name.removesuffix("_leftImg8bit.png")
        truth = root / "gtFine" / split / image.parent.name / f"{name}_gtFine_instanceIds.png"
        if not truth.exists():
            raise InputError(str(truth), "missing: every frame needs its gtFine instance ids")
        frames.append(Frame(name, image, truth))
    return frames


def read_frame(frame: Frame, classes: Sequence[str]) -> LabelledTile:
    """A frame as a training tile: the image in [0, 1] and the instances of ``classes``.

    Instance ids are class index * CLASS_STRIDE + instance number + 1 (the class index in
    ``classes``); crowds and every other label are background.
    """
    image = np.asarray(Image.open(frame.image).convert("RGB"), dtype=np.float32) / 255
    raw = np.asarray(Image.open(frame.instances), dtype=np.int64)
    ids = np.zeros(raw.shape, np.int32)
    for index, name in enumerate(classes):
        label = name2label[name].id
        mine = (raw >= 1000) & (raw // 1000 == label)
        ids[mine] = index * CLASS_STRIDE + raw[mine] % 1000 + 1
    return LabelledTile(np.ascontiguousarray(image.transpose(2, 0, 1)), ids, str(frame.image))


def write_predictions(
    folder: Path, frame: Frame, instances: list[Instance], classes: Sequence[str], shape: tuple[int, int]
) -> Path:
    """Write a frame's instances in Cityscapes' result format; returns the frame's list file.

    Each instance is a full-frame binary PNG; ``{frame}_pred.txt`` lists one per line as
    ``relative/mask.png label_id confidence``.
    """
    masks = folder / frame.name
    masks.mkdir(parents=True, exist_ok=True)
    lines = []
    for number, inst in enumerate(instances):
        path = masks / f"{number:04d}.png"
        Image.fromarray(inst.full_mask(shape).astype(np.uint8) * 255).save(path)
        label = name2label[classes[inst.label]].id
        lines.append(f"{path.relative_to(folder).as_posix()} {label} {inst.score:.6f}\n")
    listing = folder / f"{frame.name}_pred.txt"
    listing.write_text("".join(lines))
    return listing
