"""Hyper-parameters of the reference Faster R-CNN, in one serialisable dataclass.

Defaults follow the Faster R-CNN paper's recipe (anchor labelling at IoU 0.7 / 0.3, 256 anchors per image at
most half positive, 12000 / 6000 proposals before NMS at 0.7 and 2000 / 300 after it, 128 RoIs per image with a
quarter foreground at IoU >= 0.5 and background in [0.1, 0.5), smooth-L1 with beta 1) scaled to the synthetic
shapes data: 128x128 images, a stride-8 backbone and anchors of 16, 32 and 64 pixels.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union


@dataclass
class DetectorConfig:
    num_classes: int = 3  # foreground classes; label 0 is background
    class_names: Tuple[str, ...] = ()

    # Backbone: "small" (this package's 8-layer CNN, stride 8), or "resnet18" / "resnet34" / "resnet50"
    # (torchvision.models, weights=None, up to layer3: stride 16).
    backbone: str = "small"
    backbone_width: int = 32  # channels of the first stage of the small backbone (doubled twice)

    # Input: images are normalised, optionally resized (shorter side to min_size, longer at most max_size;
    # None keeps the size), and padded to a multiple of size_divisible.
    image_mean: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: Tuple[float, float, float] = (0.25, 0.25, 0.25)
    min_size: Optional[int] = None
    max_size: Optional[int] = None
    size_divisible: int = 32

    # Anchors: sizes x aspect ratios at every location of the feature map.
    anchor_sizes: Tuple[float, ...] = (16.0, 32.0, 64.0)
    aspect_ratios: Tuple[float, ...] = (0.5, 1.0, 2.0)

    # Region proposal network.
    rpn_fg_iou: float = 0.7  # positive: IoU > this, or the best anchor of a ground-truth box
    rpn_bg_iou: float = 0.3  # negative: IoU < this
    rpn_allowed_border: float = 0.0  # anchors reaching further outside the image are ignored in training
    rpn_batch_size: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_pre_nms_top_n_train: int = 12000
    rpn_pre_nms_top_n_test: int = 6000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 300
    rpn_nms_threshold: float = 0.7
    rpn_min_size: float = 1.0  # proposals narrower or lower than this (pixels) are dropped

    # RoI head.
    roi_op: str = "align"  # "align" (RoIAlign) or "pool" (RoIPool)
    roi_output_size: int = 7
    roi_sampling_ratio: int = 2
    roi_batch_size: int = 128
    roi_positive_fraction: float = 0.25
    roi_fg_iou: float = 0.5  # foreground: IoU >= this
    roi_bg_iou_low: float = 0.1  # background: IoU in [roi_bg_iou_low, roi_fg_iou)
    # When an image has fewer background RoIs in that range than its batch needs, top it up with RoIs of
    # lower IoU (False: sample only from the range).
    roi_bg_top_up: bool = True
    representation_size: int = 256
    box_coder_weights: Tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    smooth_l1_beta: float = 1.0

    # Inference.
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections_per_image: int = 100

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "DetectorConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"DetectorConfig: unknown option(s) {unknown}; known: {sorted(names)}")
        # JSON has lists where the dataclass has tuples.
        converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        config = cls(**converted)
        config.validate()
        return config

    @classmethod
    def from_file(cls, path: Union[str, Path]) -> "DetectorConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return cls.from_dict(json.loads(path.read_text()))

    def validate(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"DetectorConfig: {what}")

        need(self.num_classes >= 1, f"num_classes must be >= 1, got {self.num_classes}")
        need(not self.class_names or len(self.class_names) == self.num_classes,
             f"class_names must name the {self.num_classes} classes, got {len(self.class_names)}")
        need(self.backbone in ("small", "resnet18", "resnet34", "resnet50"),
             f"backbone must be 'small', 'resnet18', 'resnet34' or 'resnet50', got {self.backbone!r}")
        need(self.roi_op in ("align", "pool"), f"roi_op must be 'align' or 'pool', got {self.roi_op!r}")
        need(len(self.anchor_sizes) > 0 and all(s > 0 for s in self.anchor_sizes), "anchor_sizes must be positive")
        need(len(self.aspect_ratios) > 0 and all(r > 0 for r in self.aspect_ratios), "aspect_ratios must be positive")
        need(0 <= self.rpn_bg_iou <= self.rpn_fg_iou <= 1, "need 0 <= rpn_bg_iou <= rpn_fg_iou <= 1")
        need(0 <= self.roi_bg_iou_low <= self.roi_fg_iou <= 1, "need 0 <= roi_bg_iou_low <= roi_fg_iou <= 1")
        need(0 < self.rpn_positive_fraction <= 1 and 0 < self.roi_positive_fraction <= 1,
             "positive fractions must be in (0, 1]")
        need(self.rpn_batch_size > 0 and self.roi_batch_size > 0, "sampling batch sizes must be positive")
        need(len(self.image_mean) == 3 and len(self.image_std) == 3 and all(s > 0 for s in self.image_std),
             "image_mean and image_std need three values, std positive")
        need(self.size_divisible >= 1, "size_divisible must be >= 1")
        need((self.min_size is None) == (self.max_size is None), "set both min_size and max_size, or neither")


def load_config(path: Optional[Union[str, Path]] = None, **overrides: Any) -> DetectorConfig:
    """The defaults, updated from a JSON file (if given), then from keyword overrides (None values skipped)."""
    values: Dict[str, Any] = {}
    if path is not None:
        values.update(DetectorConfig.from_file(path).to_dict())
    values.update({k: v for k, v in overrides.items() if v is not None})
    return DetectorConfig.from_dict(values)


__all__ = ["DetectorConfig", "load_config"]
