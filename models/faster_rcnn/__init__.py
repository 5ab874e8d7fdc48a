"""Faster R-CNN on pydet_ops, one module per stage: backbone, matching (labels and sampling), rpn, roi_head,
detector."""

from .config import DetectorConfig, load_config
from .detector import FasterRCNN, ImageBatch

__all__ = ["DetectorConfig", "FasterRCNN", "ImageBatch", "load_config"]
