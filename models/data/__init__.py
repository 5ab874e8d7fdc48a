"""Datasets for the reference detectors: synthetic shapes, COCO-format export and loading, batching helpers."""

from .coco import CocoDetection, RandomHorizontalFlip, collate_fn, export_coco, horizontal_flip
from .shapes import CLASSES, ShapesConfig, ShapesDataset

__all__ = [
    "CLASSES",
    "CocoDetection",
    "RandomHorizontalFlip",
    "ShapesConfig",
    "ShapesDataset",
    "collate_fn",
    "export_coco",
    "horizontal_flip",
]
