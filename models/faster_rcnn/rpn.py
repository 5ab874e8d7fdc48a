"""Region proposal network: anchors, objectness and box deltas, proposals, and its training loss."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import pydet_ops

from .config import DetectorConfig
from .matching import label_anchors, sample_labels


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then per anchor an objectness logit (1x1 conv) and four box deltas (1x1 conv)."""

    def __init__(self, channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, num_anchors, 1)
        self.deltas = nn.Conv2d(channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, feature: Tensor) -> Tuple[Tensor, Tensor]:
        t = F.relu(self.conv(feature))
        return self.objectness(t), self.deltas(t)


def flatten_head_outputs(objectness: Tensor, deltas: Tensor) -> Tuple[Tensor, Tensor]:
    """[N, A, H, W] and [N, 4A, H, W] -> [N, H*W*A] and [N, H*W*A, 4], in the anchor generator's order
    (row-major locations, then the anchors of a location)."""
    n, a, h, w = objectness.shape
    objectness = objectness.permute(0, 2, 3, 1).reshape(n, h * w * a)
    deltas = deltas.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, h * w * a, 4)
    return objectness, deltas


def select_proposals(
    boxes: Tensor,
    scores: Tensor,
    image_size: Tuple[int, int],
    pre_nms_top_n: int,
    post_nms_top_n: int,
    nms_threshold: float,
    min_size: float,
) -> Tuple[Tensor, Tensor]:
    """One image's proposals: the pre_nms_top_n highest-scoring boxes, clipped to the image, without those
    smaller than min_size, after NMS at nms_threshold, the best post_nms_top_n. Returns (boxes, scores)."""
    top = scores.topk(min(pre_nms_top_n, scores.numel())).indices
    boxes, scores = boxes[top], scores[top]
    boxes = pydet_ops.clip_boxes_to_image(boxes, image_size)
    keep = pydet_ops.remove_small_boxes(boxes, min_size)
    boxes, scores = boxes[keep], scores[keep]
    keep = pydet_ops.nms(boxes, scores, nms_threshold)[:post_nms_top_n]
    return boxes[keep], scores[keep]


class RegionProposalNetwork(nn.Module):
    def __init__(self, channels: int, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        self.anchor_generator = pydet_ops.AnchorGenerator(
            sizes=(tuple(config.anchor_sizes),), aspect_ratios=(tuple(config.aspect_ratios),)
        )
        self.head = RPNHead(channels, self.anchor_generator.num_anchors_per_location()[0])
        self.box_coder = pydet_ops.BoxCoder((1.0, 1.0, 1.0, 1.0))

    def forward(
        self, batch, feature: Tensor, targets: Optional[List[Dict[str, Tensor]]] = None
    ) -> Tuple[List[Tensor], Dict[str, Tensor]]:
        """Proposals per image (detached) and, in training, the losses `loss_objectness` and `loss_rpn_box`.

        `batch` has `tensors` (the padded images) and `image_sizes` (each image's (height, width)).
        """
        cfg = self.config
        logits, deltas = flatten_head_outputs(*self.head(feature))
        anchors = self.anchor_generator(batch, [feature])
        training = self.training
        pre_n = cfg.rpn_pre_nms_top_n_train if training else cfg.rpn_pre_nms_top_n_test
        post_n = cfg.rpn_post_nms_top_n_train if training else cfg.rpn_post_nms_top_n_test
        proposals = []
        with torch.no_grad():
            for i, size in enumerate(batch.image_sizes):
                boxes = self.box_coder.decode_single(deltas[i].detach(), anchors[i])
                kept, _ = select_proposals(
                    boxes, logits[i].detach(), size, pre_n, post_n, cfg.rpn_nms_threshold, cfg.rpn_min_size
                )
                proposals.append(kept)
        losses: Dict[str, Tensor] = {}
        if training:
            if targets is None:
                raise ValueError("RegionProposalNetwork: targets are needed in training mode")
            losses = self.loss(anchors, logits, deltas, batch.image_sizes, targets)
        return proposals, losses

    def loss(self, anchors, logits, deltas, image_sizes, targets) -> Dict[str, Tensor]:
        cfg = self.config
        obj_losses, box_losses, sampled = [], [], 0
        for i, size in enumerate(image_sizes):
            gt = targets[i]["boxes"]
            labels, matched = label_anchors(
                anchors[i], gt, size, cfg.rpn_fg_iou, cfg.rpn_bg_iou, cfg.rpn_allowed_border
            )
            pos, neg = sample_labels(labels, cfg.rpn_batch_size, cfg.rpn_positive_fraction)
            chosen = torch.cat([pos, neg])
            sampled += chosen.numel()
            target = (labels[chosen] > 0).to(logits.dtype)
            obj_losses.append(F.binary_cross_entropy_with_logits(logits[i][chosen], target, reduction="sum"))
            if pos.numel() > 0:
                goal = self.box_coder.encode_single(gt[matched[pos]], anchors[i][pos])
                box_losses.append(
                    F.smooth_l1_loss(deltas[i][pos], goal, beta=cfg.smooth_l1_beta, reduction="sum")
                )
        norm = max(sampled, 1)
        zero = logits.sum() * 0.0
        return {
            "loss_objectness": sum(obj_losses, zero) / norm,
            "loss_rpn_box": sum(box_losses, zero) / norm,
        }


__all__ = ["RPNHead", "RegionProposalNetwork", "flatten_head_outputs", "select_proposals"]
