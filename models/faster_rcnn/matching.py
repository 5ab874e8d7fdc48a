"""Training targets: which anchors and proposals are foreground or background, and balanced sampling.

Labels are 1 (foreground), 0 (background) and -1 (ignored). Every function works on one image.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

import pydet_ops

IGNORE = -1


def inside_image(boxes: Tensor, image_size: Tuple[int, int], allowed_border: float = 0.0) -> Tensor:
    """Boxes lying within the image (height, width), extended by `allowed_border` pixels on every side."""
    h, w = image_size
    b = allowed_border
    return (boxes[:, 0] >= -b) & (boxes[:, 1] >= -b) & (boxes[:, 2] <= w + b) & (boxes[:, 3] <= h + b)


def label_anchors(
    anchors: Tensor,
    gt_boxes: Tensor,
    image_size: Tuple[int, int],
    fg_iou: float = 0.7,
    bg_iou: float = 0.3,
    allowed_border: Optional[float] = 0.0,
) -> Tuple[Tensor, Tensor]:
    """RPN labels of `anchors` [A, 4] against the ground truth [G, 4].

    Foreground: IoU > fg_iou with some box, or the anchor (ties included) with the highest IoU of a box.
    Background: the highest IoU below bg_iou. Anchors crossing the image border by more than
    `allowed_border` pixels are ignored (None keeps them all), and never count as a box's best anchor.

    Returns (labels [A] int64, matched [A] int64: the index of the box each anchor is compared with; 0 when
    there is no box).
    """
    num = anchors.shape[0]
    labels = torch.full((num,), IGNORE, dtype=torch.int64, device=anchors.device)
    matched = torch.zeros(num, dtype=torch.int64, device=anchors.device)
    usable = (
        inside_image(anchors, image_size, allowed_border)
        if allowed_border is not None
        else torch.ones(num, dtype=torch.bool, device=anchors.device)
    )
    if gt_boxes.numel() == 0:
        labels[usable] = 0
        return labels, matched
    iou = pydet_ops.box_iou(gt_boxes, anchors)  # [G, A]
    iou[:, ~usable] = -1.0
    best, matched = iou.max(dim=0)
    labels[(best >= 0) & (best < bg_iou)] = 0
    labels[best > fg_iou] = 1
    # The best anchors of each box (all of them when tied); a box no usable anchor overlaps has none.
    best_per_gt = iou.max(dim=1, keepdim=True).values
    gt_idx, anchor_idx = torch.nonzero((iou == best_per_gt) & (best_per_gt > 0), as_tuple=True)
    labels[anchor_idx] = 1
    matched[anchor_idx] = gt_idx
    labels[~usable] = IGNORE
    return labels, matched


def label_proposals(
    proposals: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    fg_iou: float = 0.5,
    bg_iou_low: float = 0.1,
) -> Tuple[Tensor, Tensor, Tensor]:
    """RoI-head labels of `proposals` [P, 4].

    Returns (labels [P] int64: the class of the matched box for IoU >= fg_iou, 0 for IoU in
    [bg_iou_low, fg_iou), -1 otherwise; matched [P] int64; iou [P] the highest IoU). Without ground truth
    every proposal is background.
    """
    num = proposals.shape[0]
    if gt_boxes.numel() == 0:
        zeros = torch.zeros(num, dtype=torch.int64, device=proposals.device)
        return zeros, zeros.clone(), torch.zeros(num, dtype=proposals.dtype, device=proposals.device)
    iou, matched = pydet_ops.box_iou(gt_boxes, proposals).max(dim=0)
    labels = torch.full((num,), IGNORE, dtype=torch.int64, device=proposals.device)
    labels[(iou >= bg_iou_low) & (iou < fg_iou)] = 0
    fg = iou >= fg_iou
    labels[fg] = gt_labels[matched[fg]]
    return labels, matched, iou


def sample_labels(
    labels: Tensor,
    batch_size: int,
    positive_fraction: float,
    generator: Optional[torch.Generator] = None,
    extra_negatives: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Random indices of at most `batch_size` labelled elements: positives (label > 0) up to
    `positive_fraction` of the batch, negatives (label 0) for the rest. When negatives run short and
    `extra_negatives` (a bool mask) is given, the batch is topped up from those.

    Returns (positive indices, negative indices).
    """
    positive = torch.nonzero(labels > 0).flatten()
    negative = torch.nonzero(labels == 0).flatten()
    num_pos = min(int(batch_size * positive_fraction), positive.numel())
    num_neg = min(batch_size - num_pos, negative.numel())
    pos = positive[_random_subset(positive.numel(), num_pos, generator, labels.device)]
    neg = negative[_random_subset(negative.numel(), num_neg, generator, labels.device)]
    missing = batch_size - num_pos - num_neg
    if missing > 0 and extra_negatives is not None:
        extra = torch.nonzero(extra_negatives & (labels < 0)).flatten()
        take = min(missing, extra.numel())
        neg = torch.cat([neg, extra[_random_subset(extra.numel(), take, generator, labels.device)]])
    return pos, neg


def _random_subset(total: int, count: int, generator: Optional[torch.Generator], device) -> Tensor:
    return torch.randperm(total, generator=generator, device="cpu")[:count].to(device)


__all__ = ["IGNORE", "inside_image", "label_anchors", "label_proposals", "sample_labels"]
