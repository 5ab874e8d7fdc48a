"""Independent float64 references for the box ops, written straight from the definitions.

* ``pairwise_reference(kind, boxes1, boxes2, eps)``: IoU / GIoU / DIoU / CIoU of every pair, as float64
  tensors, broadcasting leading dimensions.
* ``reference_nms`` / ``reference_batched_nms``: plain-Python greedy NMS over Python floats (IEEE double).
"""

import math

import torch

FOUR_OVER_PI_SQ = 4.0 / (math.pi**2)


def pairwise_reference(kind, boxes1, boxes2, eps=1e-7):
    """``kind`` in {'iou', 'giou', 'diou', 'ciou'}; boxes are xyxy, [..., N, 4] and [..., M, 4]."""
    a = boxes1.to(torch.float64).unsqueeze(-2)  # [..., N, 1, 4]
    b = boxes2.to(torch.float64).unsqueeze(-3)  # [..., 1, M, 4]
    ax1, ay1, ax2, ay2 = a.unbind(-1)
    bx1, by1, bx2, by2 = b.unbind(-1)

    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    inter_w = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0)
    inter_h = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(min=0)
    inter = inter_w * inter_h
    union = area_a + area_b - inter
    iou = inter / union
    if kind == "iou":
        return iou

    encl_w = (torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)).clamp(min=0)
    encl_h = (torch.maximum(ay2, by2) - torch.minimum(ay1, by1)).clamp(min=0)
    if kind == "giou":
        encl_area = encl_w * encl_h
        return iou - (encl_area - union) / encl_area

    centre_dx = (ax1 + ax2) / 2 - (bx1 + bx2) / 2
    centre_dy = (ay1 + ay2) / 2 - (by1 + by2) / 2
    centre_dist_sq = centre_dx**2 + centre_dy**2
    diou = iou - centre_dist_sq / (encl_w**2 + encl_h**2 + eps)
    if kind == "diou":
        return diou

    if kind == "ciou":
        v = FOUR_OVER_PI_SQ * (torch.atan((ax2 - ax1) / (ay2 - ay1)) - torch.atan((bx2 - bx1) / (by2 - by1))) ** 2
        alpha = v / (1 - iou + v + eps)
        return diou - alpha * v
    raise ValueError(kind)


def _pair_iou(bi, bj):
    """IoU of kept box ``bi`` against candidate ``bj`` (tuples of Python floats), greedy-NMS arithmetic."""
    ix1, iy1, ix2, iy2 = bi
    jx1, jy1, jx2, jy2 = bj
    xx1 = max(ix1, jx1)
    yy1 = max(iy1, jy1)
    xx2 = min(ix2, jx2)
    yy2 = min(iy2, jy2)
    w = max(0.0, xx2 - xx1)
    h = max(0.0, yy2 - yy1)
    inter = w * h
    area_i = (ix2 - ix1) * (iy2 - iy1)
    area_j = (jx2 - jx1) * (jy2 - jy1)
    denom = area_i + area_j - inter
    if denom == 0:
        # IEEE division by a zero: NaN for 0/0, otherwise an infinity with the zero's sign.
        return math.nan if inter == 0 or math.isnan(inter) else math.copysign(math.inf, denom)
    return inter / denom


def _score_order(scores):
    """Indices by descending score, ties by ascending index (Python's sort is stable)."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def reference_nms(boxes, scores, iou_threshold):
    """Greedy NMS in Python floats: returns a list of kept indices in processing order."""
    box_list = [tuple(float(v) for v in row) for row in boxes.to(torch.float64).tolist()]
    score_list = [float(s) for s in scores.to(torch.float64).tolist()]
    kept = []
    for i in _score_order(score_list):
        if all(not (_pair_iou(box_list[k], box_list[i]) > iou_threshold) for k in kept):
            kept.append(i)
    return kept


def reference_batched_nms(boxes, scores, idxs, iou_threshold):
    """Greedy NMS per category; kept indices by descending score, ties by ascending index."""
    score_list = [float(s) for s in scores.to(torch.float64).tolist()]
    ids = [int(c) for c in idxs.tolist()]
    kept = []
    for category in sorted(set(ids)):
        members = [i for i, c in enumerate(ids) if c == category]
        sub = reference_nms(boxes[members], scores[members], iou_threshold)
        kept.extend(members[k] for k in sub)
    return sorted(kept, key=lambda i: (-score_list[i], i))


def as_index_tensor(indices):
    return torch.tensor(list(indices), dtype=torch.int64)
