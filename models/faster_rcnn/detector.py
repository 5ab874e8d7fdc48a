"""Faster R-CNN: backbone -> region proposal network -> RoI head, trained jointly (approximate joint training:
proposals are treated as constants)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import build_backbone
from .config import DetectorConfig
from .roi_head import RoIHead
from .rpn import RegionProposalNetwork


@dataclass
class ImageBatch:
    """Images normalised and padded into one tensor, with each image's size inside it."""

    tensors: Tensor  # [N, 3, H, W]
    image_sizes: List[Tuple[int, int]]  # (height, width) of each image after resizing
    original_sizes: List[Tuple[int, int]]  # (height, width) as given


class FasterRCNN(nn.Module):
    """A Faster R-CNN detector on pydet_ops (anchors, box coding, NMS, RoIAlign / RoIPool).

    forward(images, targets=None): `images` is a list of float tensors [3, H, W] with values in [0, 1]. In
    training mode `targets` (one dict per image with `boxes` [G, 4] xyxy in pixels and `labels` [G] in
    1..num_classes) is required and the result is a dict of losses; in eval mode the result is one dict per
    image with `boxes`, `scores` and `labels`, in the image's own pixel coordinates.
    """

    def __init__(self, config: Optional[DetectorConfig] = None) -> None:
        super().__init__()
        self.config = config = config or DetectorConfig()
        config.validate()
        self.backbone = build_backbone(config.backbone, config.backbone_width)
        channels, stride = self.backbone.out_channels, self.backbone.stride
        if config.size_divisible % stride:
            # Padded sizes must be whole multiples of the stride, or anchors would be laid out at the wrong pitch.
            raise ValueError(f"DetectorConfig: size_divisible ({config.size_divisible}) must be a multiple of the "
                             f"{config.backbone} backbone's stride ({stride})")
        self.rpn = RegionProposalNetwork(channels, config)
        self.roi_heads = RoIHead(channels, stride, config)
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(3, 1, 1), persistent=False)

    def prepare(
        self, images: List[Tensor], targets: Optional[List[Dict[str, Tensor]]] = None
    ) -> Tuple[ImageBatch, Optional[List[Dict[str, Tensor]]]]:
        """Normalise, resize (if configured; boxes scaled alike) and pad the images into one batch."""
        cfg = self.config
        if not isinstance(images, (list, tuple)) or not images:
            raise TypeError("FasterRCNN: images must be a non-empty list of Tensor[3, H, W]")
        resized, sizes, originals, new_targets = [], [], [], []
        for i, image in enumerate(images):
            if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"FasterRCNN: images[{i}] must be a Tensor[3, H, W], got {getattr(image, 'shape', type(image))}")
            h, w = int(image.shape[1]), int(image.shape[2])
            originals.append((h, w))
            x = (image.to(self.image_mean.dtype) - self.image_mean) / self.image_std
            scale = 1.0
            if cfg.min_size is not None:
                scale = min(cfg.min_size / min(h, w), cfg.max_size / max(h, w))
                x = F.interpolate(x[None], scale_factor=scale, mode="bilinear", align_corners=False,
                                  recompute_scale_factor=True)[0]
            resized.append(x)
            sizes.append((int(x.shape[1]), int(x.shape[2])))
            if targets is not None:
                t = dict(targets[i])
                if scale != 1.0:
                    t["boxes"] = t["boxes"] * torch.tensor(
                        [sizes[-1][1] / w, sizes[-1][0] / h] * 2, dtype=t["boxes"].dtype, device=t["boxes"].device
                    )
                new_targets.append(t)
        d = cfg.size_divisible
        height = int(math.ceil(max(s[0] for s in sizes) / d) * d)
        width = int(math.ceil(max(s[1] for s in sizes) / d) * d)
        batch = resized[0].new_zeros((len(resized), 3, height, width))
        for b, x in zip(batch, resized):
            b[:, : x.shape[1], : x.shape[2]].copy_(x)
        return ImageBatch(batch, sizes, originals), (new_targets if targets is not None else None)

    def forward(self, images: List[Tensor], targets: Optional[List[Dict[str, Tensor]]] = None):
        if self.training and targets is None:
            raise ValueError("FasterRCNN: targets are needed in training mode")
        batch, targets = self.prepare(images, targets)
        feature = self.backbone(batch.tensors)
        proposals, rpn_losses = self.rpn(batch, feature, targets)
        detections, roi_losses = self.roi_heads(feature, proposals, batch.image_sizes, targets)
        if self.training:
            return {**rpn_losses, **roi_losses}
        return [self._to_original(d, s, o) for d, s, o in zip(detections, batch.image_sizes, batch.original_sizes)]

    @staticmethod
    def _to_original(det: Dict[str, Tensor], size: Tuple[int, int], original: Tuple[int, int]) -> Dict[str, Tensor]:
        if size == original:
            return det
        ratio = torch.tensor([original[1] / size[1], original[0] / size[0]] * 2, device=det["boxes"].device)
        return {**det, "boxes": det["boxes"] * ratio}


__all__ = ["FasterRCNN", "ImageBatch"]
