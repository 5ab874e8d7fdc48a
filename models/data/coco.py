"""COCO-format export of detection datasets, a loader for COCO-format folders, and batching/flip helpers.

A folder written by :func:`export_coco` looks like::

    out_dir/
        annotations.json
        images/000001.png, 000002.png, ...

:class:`CocoDetection` reads that layout, and any other COCO annotation file whose ``file_name`` entries are
relative to ``root/images/`` or to ``root/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset

__all__ = ["CocoDetection", "RandomHorizontalFlip", "collate_fn", "export_coco", "horizontal_flip"]

Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]


def export_coco(
    dataset: Dataset, out_dir: str | os.PathLike, *, split_name: str | None = None, supercategory: str = "shape"
) -> Path:
    """Writes ``dataset`` as a COCO-format folder and returns the path of its annotation file.

    Items of ``dataset`` are ``(image, target)``: ``image`` a ``[3, H, W]`` tensor (float in ``[0, 1]`` or
    uint8), ``target`` a dict with ``boxes`` (xyxy), ``labels`` (1..K) and optionally ``masks``, ``area`` and
    ``image_id`` (default ``index + 1``). ``dataset.classes`` names the categories 1..K. Images are written as
    ``out_dir/images/{image_id:06d}.png`` and segmentations as compressed RLE (a box outline when the target
    has no masks).
    """
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    if not hasattr(dataset, "classes"):
        raise AttributeError(f"{type(dataset).__name__} has no 'classes' attribute naming categories 1..K")
    classes = list(dataset.classes)

    images: list[dict] = []
    annotations: list[dict] = []
    for index in range(len(dataset)):
        image, target = dataset[index]
        pixels = _to_uint8_hwc(image)
        height, width = pixels.shape[:2]
        image_id = int(target.get("image_id", index + 1))
        file_name = f"{image_id:06d}.png"
        Image.fromarray(pixels).save(image_dir / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})

        boxes = target["boxes"].tolist()
        labels = target["labels"].tolist()
        masks = target.get("masks")
        areas = target.get("area")
        for k, ((x1, y1, x2, y2), label) in enumerate(zip(boxes, labels)):
            if masks is not None:
                rle = mask_utils.encode(np.asfortranarray(masks[k].numpy().astype(np.uint8)))
                segmentation: Any = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
                area = float(mask_utils.area(rle))
            else:
                segmentation = [[x1, y1, x2, y1, x2, y2, x1, y2]]
                area = (x2 - x1) * (y2 - y1)
            if areas is not None:
                area = float(areas[k])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                    "area": float(area),
                    "iscrowd": 0,
                    "segmentation": segmentation,
                }
            )

    info = {"description": f"{type(dataset).__name__} exported to COCO format", "version": "1.0"}
    if split_name is not None:
        info["split"] = split_name
    config = getattr(dataset, "config", None)
    if config is not None:
        info["generator"] = _describe_config(config)
    categories = [{"id": i + 1, "name": name, "supercategory": supercategory} for i, name in enumerate(classes)]
    ann_path = out_dir / "annotations.json"
    with open(ann_path, "w") as f:
        json.dump(
            {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories},
            f,
        )
    return ann_path


class CocoDetection(Dataset):
    """A COCO-format detection folder as a dataset of ``(image, target)``, like :class:`ShapesDataset`.

    ``image`` is float32 ``[3, H, W]`` RGB in ``[0, 1]``. ``target`` holds ``boxes`` (float32 xyxy), ``labels``
    (int64, contiguous 1..K following the sorted COCO category ids), ``image_id`` (the COCO id), ``area``
    (float32), ``iscrowd`` (int64) and, with ``with_masks``, ``masks`` (uint8 ``[N, H, W]``, from RLE or
    polygons; a filled box for annotations without a segmentation). Annotations whose box has a non-positive
    width or height are skipped.

    Args:
        root: dataset folder; image files are looked up in ``root/images/`` first, then in ``root/``.
        ann_file: annotation file, by default ``root/annotations.json``.
        with_masks: also decode instance masks.
        transforms: callable applied to ``(image, target)``, returning the same pair.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        ann_file: str | os.PathLike | None = None,
        *,
        with_masks: bool = False,
        transforms: Transform | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {self.root}")
        self.ann_file = Path(ann_file) if ann_file is not None else self.root / "annotations.json"
        if not self.ann_file.is_file():
            raise FileNotFoundError(f"annotation file not found: {self.ann_file}")
        self.with_masks = with_masks
        self.transforms = transforms

        self.coco = _load_coco(self.ann_file)
        cat_ids = sorted(self.coco.cats)
        self.cat_id_to_label: dict[int, int] = {cat_id: label for label, cat_id in enumerate(cat_ids, start=1)}
        self.label_to_cat_id: dict[int, int] = {label: cat_id for cat_id, label in self.cat_id_to_label.items()}
        self.classes: tuple[str, ...] = tuple(self.coco.cats[cat_id]["name"] for cat_id in cat_ids)
        self.ids: list[int] = sorted(self.coco.imgs)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        image = self._load_image(info["file_name"])
        target = self._load_target(image_id, info, image.shape[1:])
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _load_image(self, file_name: str) -> torch.Tensor:
        candidates = [self.root / "images" / file_name, self.root / file_name]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"image {file_name!r} not found in {candidates[0].parent} or {self.root}")
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB"))
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy()).float().div_(255.0)

    def _load_target(self, image_id: int, info: dict, size: Sequence[int]) -> Target:
        height, width = int(size[0]), int(size[1])
        if ("height" in info and info["height"] != height) or ("width" in info and info["width"] != width):
            raise ValueError(
                f"image {info['file_name']!r} is {height}x{width} but {self.ann_file} says "
                f"{info.get('height')}x{info.get('width')}"
            )
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if a["bbox"][2] > 0 and a["bbox"][3] > 0]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        target: Target = {
            "boxes": boxes,
            "labels": torch.tensor([self.cat_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": image_id,
            "area": torch.tensor(
                [a.get("area", a["bbox"][2] * a["bbox"][3]) for a in anns], dtype=torch.float32
            ),
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64),
        }
        if self.with_masks:
            masks = np.zeros((len(anns), height, width), dtype=np.uint8)
            for k, ann in enumerate(anns):
                masks[k] = self._decode_mask(ann, height, width)
            target["masks"] = torch.from_numpy(masks)
        return target

    def _decode_mask(self, ann: dict, height: int, width: int) -> np.ndarray:
        segmentation = ann.get("segmentation")
        if not segmentation:
            x, y, w, h = ann["bbox"]
            mask = np.zeros((height, width), dtype=np.uint8)
            mask[int(round(y)) : int(round(y + h)), int(round(x)) : int(round(x + w))] = 1
            return mask
        if isinstance(segmentation, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:  # compressed RLE
            rle = segmentation
        return mask_utils.decode(rle)


def collate_fn(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Batches detection samples as ``(images, targets)`` lists, for ``DataLoader(collate_fn=...)``."""
    return [image for image, _ in batch], [target for _, target in batch]


def horizontal_flip(image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
    """Mirrors an image ``[C, H, W]`` left-right together with its target's ``boxes`` and ``masks``.

    Boxes use the exclusive ``x2`` convention, so a box ``[x1, x2)`` becomes ``[W - x2, W - x1)``. The target
    is copied; other fields are shared with the input.
    """
    width = image.shape[-1]
    target = dict(target)
    if "boxes" in target:
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
        target["boxes"] = boxes
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


class RandomHorizontalFlip:
    """Applies :func:`horizontal_flip` with probability ``p``; a ``generator`` makes the draws reproducible."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p
        self.generator = generator

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if torch.rand((), generator=self.generator).item() < self.p:
            return horizontal_flip(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


def _to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """A ``[3, H, W]`` image (float in ``[0, 1]`` or uint8) as a uint8 ``[H, W, 3]`` array."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image of shape [3, H, W], got {tuple(image.shape)}")
    if image.dtype != torch.uint8:
        image = (image.detach().float() * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    return np.ascontiguousarray(image.cpu().numpy().transpose(1, 2, 0))


def _describe_config(config: Any) -> Any:
    """A JSON-friendly description of a dataset's configuration."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, dict):
        return config
    return repr(config)


def _load_coco(ann_file: Path) -> COCO:
    """Reads and indexes a COCO annotation file, with errors that name the file."""
    try:
        with open(ann_file) as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{ann_file} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{ann_file} is not a COCO detection file (top level is not an object)")
    missing = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing:
        raise ValueError(f"{ann_file} is not a COCO detection file (missing {', '.join(missing)})")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress on stdout
        coco.createIndex()
    return coco
