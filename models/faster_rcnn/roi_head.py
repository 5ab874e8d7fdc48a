"""RoI head: pools each proposal from the feature map (RoIAlign or RoIPool, 7x7), classifies it and refines
its box per class; sampling and losses for training, per-class NMS for inference."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import pydet_ops

from .config import DetectorConfig
from .matching import label_proposals, sample_labels


class BoxHead(nn.Module):
    """Two fully connected layers on the pooled features, then class scores and per-class box deltas."""

    def __init__(self, in_features: int, representation: int, num_classes: int) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation)
        self.fc7 = nn.Linear(representation, representation)
        self.cls_score = nn.Linear(representation, num_classes + 1)
        self.bbox_pred = nn.Linear(representation, 4 * (num_classes + 1))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, pooled: Tensor) -> Tuple[Tensor, Tensor]:
        x = F.relu(self.fc6(pooled.flatten(1)))
        x = F.relu(self.fc7(x))
        return self.cls_score(x), self.bbox_pred(x)


class RoIHead(nn.Module):
    def __init__(self, channels: int, stride: int, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        size = config.roi_output_size
        if config.roi_op == "align":
            self.pooler = pydet_ops.RoIAlign(size, 1.0 / stride, config.roi_sampling_ratio, aligned=False)
        else:
            self.pooler = pydet_ops.RoIPool(size, 1.0 / stride)
        self.head = BoxHead(channels * size * size, config.representation_size, config.num_classes)
        self.box_coder = pydet_ops.BoxCoder(tuple(config.box_coder_weights))

    def sample(self, proposals: List[Tensor], targets: List[Dict[str, Tensor]]):
        """Training RoIs per image: the proposals and the ground-truth boxes, sampled to roi_batch_size with
        at most roi_positive_fraction foreground. Returns (rois, class labels, regression targets)."""
        cfg = self.config
        rois, labels, goals = [], [], []
        for boxes, target in zip(proposals, targets):
            gt, gt_labels = target["boxes"], target["labels"]
            boxes = torch.cat([boxes, gt.to(boxes.dtype)])
            lab, matched, iou = label_proposals(boxes, gt, gt_labels, cfg.roi_fg_iou, cfg.roi_bg_iou_low)
            extra = (iou < cfg.roi_bg_iou_low) if cfg.roi_bg_top_up else None
            pos, neg = sample_labels(lab, cfg.roi_batch_size, cfg.roi_positive_fraction, extra_negatives=extra)
            chosen = torch.cat([pos, neg])
            chosen_labels = lab[chosen].clone()
            chosen_labels[pos.numel():] = 0
            rois.append(boxes[chosen])
            labels.append(chosen_labels)
            if gt.numel() > 0:
                goals.append(self.box_coder.encode_single(gt[matched[chosen]], boxes[chosen]))
            else:
                goals.append(torch.zeros_like(boxes[chosen]))
        return rois, labels, goals

    def forward(
        self,
        feature: Tensor,
        proposals: List[Tensor],
        image_sizes: List[Tuple[int, int]],
        targets: Optional[List[Dict[str, Tensor]]] = None,
    ) -> Tuple[List[Dict[str, Tensor]], Dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("RoIHead: targets are needed in training mode")
            rois, labels, goals = self.sample(proposals, targets)
            scores, deltas = self.head(self.pooler(feature, rois))
            return [], self.loss(scores, deltas, torch.cat(labels), torch.cat(goals))
        scores, deltas = self.head(self.pooler(feature, proposals))
        return self.postprocess(scores, deltas, proposals, image_sizes), {}

    def loss(self, scores: Tensor, deltas: Tensor, labels: Tensor, goals: Tensor) -> Dict[str, Tensor]:
        loss_cls = F.cross_entropy(scores, labels) if labels.numel() > 0 else scores.sum() * 0.0
        fg = torch.nonzero(labels > 0).flatten()
        deltas = deltas.view(deltas.shape[0], -1, 4)
        if fg.numel() > 0:
            loss_box = F.smooth_l1_loss(
                deltas[fg, labels[fg]], goals[fg], beta=self.config.smooth_l1_beta, reduction="sum"
            ) / max(labels.numel(), 1)
        else:
            loss_box = deltas.sum() * 0.0
        return {"loss_classifier": loss_cls, "loss_box_reg": loss_box}

    def postprocess(
        self, scores: Tensor, deltas: Tensor, proposals: List[Tensor], image_sizes: List[Tuple[int, int]]
    ) -> List[Dict[str, Tensor]]:
        """Per image: boxes decoded per class and clipped, scores above score_threshold, per-class NMS, the
        detections_per_image best."""
        cfg = self.config
        num_classes = scores.shape[1]
        probs = F.softmax(scores, dim=-1)
        boxes = self.box_coder.decode(deltas, proposals)  # [R, K + 1, 4]
        results = []
        for probs_i, boxes_i, size in zip(
            probs.split([len(p) for p in proposals]), boxes.split([len(p) for p in proposals]), image_sizes
        ):
            boxes_i = pydet_ops.clip_boxes_to_image(boxes_i, size)
            labels_i = torch.arange(num_classes, device=probs_i.device).expand_as(probs_i)
            # Drop the background column, then flatten (RoI, class) pairs.
            boxes_i = boxes_i[:, 1:].reshape(-1, 4)
            probs_i = probs_i[:, 1:].reshape(-1)
            labels_i = labels_i[:, 1:].reshape(-1)
            keep = torch.nonzero(probs_i > cfg.score_threshold).flatten()
            boxes_i, probs_i, labels_i = boxes_i[keep], probs_i[keep], labels_i[keep]
            keep = pydet_ops.remove_small_boxes(boxes_i, 1e-2)
            boxes_i, probs_i, labels_i = boxes_i[keep], probs_i[keep], labels_i[keep]
            keep = pydet_ops.batched_nms(boxes_i, probs_i, labels_i, cfg.nms_threshold)[: cfg.detections_per_image]
            results.append({"boxes": boxes_i[keep], "scores": probs_i[keep], "labels": labels_i[keep]})
        return results


__all__ = ["BoxHead", "RoIHead"]
