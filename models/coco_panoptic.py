"""COCO panoptic images as training tiles, and segments in COCO's panoptic result format.

The layout is the official one: a panoptic JSON (``images``, ``annotations`` with each image's
``segments_info``, ``categories``), a folder of panoptic PNGs named by the annotations'
``file_name``, in which a pixel's segment id is R + 256 G + 256^2 B (0: unlabelled), and a folder
of the images named by the images' ``file_name``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from footprints.geo.errors import InputError

from .data import LabelledTile


@dataclass(frozen=True)
class Segment:
    """One segment of an image's panoptic annotation."""

    id: int
    category_id: int
    iscrowd: bool
    area: int


@dataclass(frozen=True)
class PanopticImage:
    """One annotated image: where its pixels and its segment ids are, and its segments."""

    image_id: int
    image: Path
    panoptic: Path
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class PanopticSource:
    """Where a COCO panoptic data set is: its images, its panoptic PNGs and its panoptic JSON."""

    images: str
    annotations: str
    json_file: str

    def find(self) -> list[PanopticImage]:
        """Its annotated images (see ``find_images``)."""
        return find_images(self.images, self.annotations, self.json_file)


def read_json(path: str | Path) -> dict[str, Any]:
    """A panoptic JSON file, checked for the keys the project reads.

    Raises:
        InputError: The file is missing, not JSON, or not in COCO's panoptic format.
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(str(path), "no such panoptic JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(str(path), f"not JSON ({error})") from None
    missing = [k for k in ("images", "annotations", "categories") if k not in content]
    if not isinstance(content, dict) or missing:
        raise InputError(str(path), f"not a COCO panoptic JSON: no {', '.join(missing) or 'object'}")
    return content


def find_images(images: str | Path, annotations: str | Path, json_file: str | Path) -> list[PanopticImage]:
    """The annotated images of a panoptic JSON, in image id order.

    Args:
        images: Folder of the images.
        annotations: Folder of the panoptic PNGs.
        json_file: The panoptic JSON.

    Raises:
        InputError: An annotation without its image record, image file or PNG.
    """
    content = read_json(json_file)
    files = {record["id"]: record["file_name"] for record in content["images"]}
    found = []
    for annotation in content["annotations"]:
        image_id = annotation["image_id"]
        if image_id not in files:
            raise InputError(str(json_file), f"annotation of image {image_id}, which is not in its images")
        image = Path(images) / files[image_id]
        panoptic = Path(annotations) / annotation["file_name"]
        for path in (image, panoptic):
            if not path.exists():
                raise InputError(str(path), f"missing: image {image_id} of {json_file} needs it")
        segments = tuple(
            Segment(s["id"], s["category_id"], bool(s.get("iscrowd", 0)), int(s["area"]))
            for s in annotation["segments_info"]
        )
        found.append(PanopticImage(image_id, image, panoptic, segments))
    return sorted(found, key=lambda p: p.image_id)


def read_segment_ids(path: Path) -> np.ndarray:
    """(rows, cols) uint32 segment ids of a panoptic PNG: R + 256 G + 256^2 B.

    Raises:
        InputError: The file is not an RGB image.
    """
    try:
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint32)
    except OSError as error:
        raise InputError(str(path), f"not a readable image ({error})") from None
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def read_labelled(image: PanopticImage, min_area: int) -> LabelledTile:
    """An image as a training tile: RGB in [0, 1] and one instance per kept segment.

    Crowd segments and segments under ``min_area`` pixels are dropped (they become 0, like the
    unlabelled pixels); every other segment, thing or stuff, is an instance, numbered from 1 in
    the order of ``segments_info``.
    """
    pixels = np.asarray(Image.open(image.image).convert("RGB"), dtype=np.float32) / 255
    raw = read_segment_ids(image.panoptic)
    if raw.shape != pixels.shape[:2]:
        raise InputError(str(image.panoptic), f"is {raw.shape}, its image {pixels.shape[:2]}")
    ids = np.zeros(raw.shape, np.int32)
    kept = [s for s in image.segments if not s.iscrowd and s.area >= min_area]
    for number, segment in enumerate(kept, start=1):
        ids[raw == segment.id] = number
    return LabelledTile(np.ascontiguousarray(pixels.transpose(2, 0, 1)), ids, str(image.image))


def write_prediction(folder: Path, image: PanopticImage, masks: list[np.ndarray], category_id: int) -> dict:
    """Write one image's predicted segments as a panoptic PNG; returns its JSON annotation.

    Segments are numbered from 1 in the order given, and a pixel claimed twice stays with the
    earlier segment (a panoptic map gives every pixel one segment at most).

    Args:
        folder: Where the PNG goes (named like the ground truth's).
        image: The image predicted.
        masks: Full-size boolean masks.
        category_id: The category of every segment (the pointer network knows none).
    """
    ids = np.zeros(read_segment_ids(image.panoptic).shape, np.uint32)
    infos = []
    for number, mask in enumerate(masks, start=1):
        free = mask & (ids == 0)
        if not free.any():
            continue
        ids[free] = number
        infos.append({"id": number, "category_id": category_id, "iscrowd": 0, "area": int(free.sum())})
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(folder / image.panoptic.name)
    return {"image_id": image.image_id, "file_name": image.panoptic.name, "segments_info": infos}
