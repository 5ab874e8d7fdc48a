"""Unit tests of the reference Faster R-CNN in models/: anchor and proposal labelling, balanced sampling, the RPN's
output flattening and proposal selection, the RoI head's post-processing, the detector's input handling, its
configuration and the COCO metrics.

The labelling cases are built from boxes whose IoUs can be worked out on paper; the values are written next to
each box. Two squares of side s shifted by d along one axis overlap in (s - d) * s, so their IoU is
(s - d) / (s + d).
"""

import json
import math

import pytest
import torch
from torch.utils.data import Dataset

import pydet_ops
from models.evaluation import coco_ground_truth, coco_metrics
from models.faster_rcnn import DetectorConfig, FasterRCNN, load_config
from models.faster_rcnn.matching import IGNORE, label_anchors, label_proposals, sample_labels
from models.faster_rcnn.roi_head import RoIHead
from models.faster_rcnn.rpn import flatten_head_outputs, select_proposals

# pycocotools uses a NumPy API that NumPy 2 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def boxes(*rows):
    return torch.tensor(rows, dtype=torch.float32)


# ------------------------------------------------------------------------------------------- label_anchors

GT = boxes([20, 20, 30, 30])  # a 10 x 10 square, area 100


def test_label_anchors_thresholds():
    anchors = boxes(
        [20, 20, 30, 30],  # 0: the box itself, IoU 1 -> 1
        [21, 20, 31, 30],  # 1: d = 1, IoU 9 / 11 = 0.818 > 0.7 -> 1
        [22, 20, 32, 30],  # 2: d = 2, IoU 8 / 12 = 0.667, between -> -1
        [25, 20, 35, 30],  # 3: d = 5, IoU 5 / 15 = 0.333, between -> -1
        [26, 20, 36, 30],  # 4: d = 6, IoU 4 / 16 = 0.25 < 0.3 -> 0
        [60, 60, 70, 70],  # 5: disjoint, IoU 0 -> 0
        [20, 20, 30, 27],  # 6: inside the box, IoU 70 / 100 = 0.7 exactly: not > 0.7 and not the best -> -1
        [20, 20, 30, 23],  # 7: inside the box, IoU 30 / 100 = 0.3 exactly: not < 0.3 -> -1
    )
    labels, matched = label_anchors(anchors, GT, (100, 100))
    assert labels.dtype == torch.int64 and matched.dtype == torch.int64
    assert labels.tolist() == [1, 1, -1, -1, 0, 0, -1, -1]
    assert matched.tolist() == [0] * 8


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_label_anchors_iou_equal_to_fg_threshold_is_not_positive(dtype):
    gt = boxes([0, 0, 10, 10]).to(dtype)
    anchors = boxes(
        [0, 0, 10, 10],  # IoU 1: the best anchor of the box
        [0, 0, 10, 5],  # IoU 50 / 100 = 0.5, exactly the threshold (exact in binary)
        [0, 0, 10, 6],  # IoU 0.6 > 0.5
        [0, 0, 10, 2],  # IoU 0.2, exactly bg_iou -> not background
        [0, 0, 10, 1],  # IoU 0.1 < 0.2 -> background
    ).to(dtype)
    labels, _ = label_anchors(anchors, gt, (20, 20), fg_iou=0.5, bg_iou=0.2)
    assert labels.tolist() == [1, -1, 1, -1, 0]


def test_label_anchors_iou_equal_to_fg_threshold_positive_when_best():
    anchors = boxes(
        [20, 20, 30, 27],  # IoU 0.7 exactly, the best this box has -> 1
        [25, 20, 35, 30],  # IoU 0.333 -> -1
        [80, 80, 90, 90],  # IoU 0 -> 0
    )
    labels, matched = label_anchors(anchors, GT, (100, 100))
    assert labels.tolist() == [1, -1, 0]
    assert matched[0] == 0


def test_label_anchors_best_anchor_of_each_box_and_ties():
    gt = boxes(
        [20, 20, 30, 30],  # box 0: 10 x 10, area 100
        [60, 60, 80, 80],  # box 1: 20 x 20, area 400
    )
    anchors = boxes(
        [22, 20, 32, 30],  # 0: IoU 0.667 with box 0 (its best; below 0.7) -> 1, matched 0
        [25, 20, 35, 30],  # 1: IoU 0.333 with box 0 -> -1
        [60, 60, 70, 70],  # 2: IoU 100 / 400 = 0.25 with box 1, tied best -> 1 (would be 0 by IoU), matched 1
        [70, 70, 80, 80],  # 3: IoU 0.25 with box 1, tied best -> 1, matched 1
        [0, 0, 10, 10],  # 4: disjoint from both -> 0
        [65, 60, 75, 70],  # 5: IoU 100 / 400 = 0.25 with box 1 as well: a third tie -> 1, matched 1
    )
    labels, matched = label_anchors(anchors, gt, (100, 100))
    assert labels.tolist() == [1, -1, 1, 1, 0, 1]
    assert matched[0] == 0
    assert matched[[2, 3, 5]].tolist() == [1, 1, 1]


def test_label_anchors_matched_points_to_the_most_overlapping_box():
    gt = boxes(
        [20, 20, 30, 30],  # box 0
        [40, 20, 50, 30],  # box 1, 20 pixels right of box 0
    )
    anchors = boxes(
        [20, 20, 30, 30],  # box 0 itself -> 1, matched 0
        [41, 20, 51, 30],  # IoU 0.818 with box 1, 0 with box 0 -> 1, matched 1
        [40, 20, 50, 30],  # box 1 itself -> 1, matched 1
        [35, 20, 45, 30],  # IoU 5 / 15 = 0.333 with box 1, 0 with box 0 -> -1, matched 1
        [27, 20, 37, 30],  # IoU 3 / 17 = 0.176 with box 0, 0 with box 1 -> 0, matched 0
    )
    labels, matched = label_anchors(anchors, gt, (100, 100))
    assert labels.tolist() == [1, 1, 1, -1, 0]
    assert matched.tolist() == [0, 1, 1, 1, 0]


def test_label_anchors_best_anchor_matched_to_its_box_not_the_argmax():
    # An anchor that is positive only because it is box 0's best anchor is matched to box 0, even though it
    # overlaps box 1 more (box 1 has a better anchor of its own, and 0.6 < 0.7 does not make it positive).
    # (torchvision's Matcher and py-faster-rcnn would keep the argmax, box 1, here; this module's rule is
    # documented as "the best anchor of a box".)
    gt = boxes(
        [0, 0, 10, 10],  # box 0, area 100
        [0, 0, 30, 10],  # box 1, area 300
    )
    anchors = boxes(
        [0, 0, 18, 10],  # IoU 100 / 180 = 0.556 with box 0 (its best), 180 / 300 = 0.6 with box 1
        [0, 0, 30, 10],  # box 1 itself; IoU 100 / 300 = 0.333 with box 0
        [60, 60, 70, 70],  # disjoint -> 0
    )
    labels, matched = label_anchors(anchors, gt, (100, 100))
    assert labels.tolist() == [1, 1, 0]
    assert matched[:2].tolist() == [0, 1]


def test_label_anchors_border():
    gt = boxes([0, 0, 10, 10])  # in the image's top-left corner
    anchors = boxes(
        [-2, 0, 8, 10],  # 0: crosses the left border by 2; IoU 8 / 12 = 0.667, the highest
        [3, 0, 13, 10],  # 1: inside; IoU 7 / 13 = 0.538
        [-1, 0, 9, 10],  # 2: crosses by 1; IoU 9 / 11 = 0.818 > 0.7
        [30, 30, 40, 40],  # 3: inside, disjoint -> 0
        [45, 45, 55, 55],  # 4: crosses the bottom-right border, disjoint
    )
    size = (50, 50)

    # allowed_border=0: crossing anchors are ignored, even the one that overlaps most and the one above 0.7;
    # the box's best usable anchor is anchor 1.
    labels, matched = label_anchors(anchors, gt, size, allowed_border=0.0)
    assert labels.tolist() == [-1, 1, -1, 0, -1]
    assert matched[1] == 0

    # None: every anchor counts; anchor 2 is both above 0.7 and the box's best, anchor 1 is in between.
    labels, _ = label_anchors(anchors, gt, size, allowed_border=None)
    assert labels.tolist() == [-1, -1, 1, 0, 0]

    # Allowing 2 pixels keeps anchors 0 and 2 (x1 >= -2) but not anchor 4 (x2 = 55 > 52).
    labels, _ = label_anchors(anchors, gt, size, allowed_border=2.0)
    assert labels.tolist() == [-1, -1, 1, 0, -1]


def test_label_anchors_border_best_anchor_excluded():
    # The only anchor overlapping the box crosses the border: the box gets no best anchor.
    gt = boxes([0, 0, 10, 10])
    anchors = boxes(
        [-2, 0, 8, 10],  # crosses the border, IoU 0.667 -> -1
        [30, 30, 40, 40],  # inside, disjoint -> 0
    )
    labels, _ = label_anchors(anchors, gt, (50, 50), allowed_border=0.0)
    assert labels.tolist() == [-1, 0]
    labels, _ = label_anchors(anchors, gt, (50, 50), allowed_border=None)
    assert labels.tolist() == [1, 0]  # kept: it is the box's best anchor


def test_label_anchors_without_ground_truth():
    anchors = boxes(
        [0, 0, 10, 10],  # inside -> 0
        [-5, 0, 5, 10],  # crosses the left border -> -1
        [30, 30, 40, 40],  # inside -> 0
        [45, 10, 55, 20],  # crosses the right border -> -1
    )
    labels, matched = label_anchors(anchors, torch.zeros(0, 4), (50, 50))
    assert labels.tolist() == [0, -1, 0, -1]
    assert matched.tolist() == [0, 0, 0, 0]
    labels, _ = label_anchors(anchors, torch.zeros(0, 4), (50, 50), allowed_border=None)
    assert labels.tolist() == [0, 0, 0, 0]


# ------------------------------------------------------------------------------------------- label_proposals

def test_label_proposals():
    gt = boxes(
        [20, 20, 30, 30],  # 10 x 10, class 2
        [60, 60, 80, 80],  # 20 x 20, class 3
    )
    gt_labels = torch.tensor([2, 3])
    proposals = boxes(
        [20, 20, 30, 30],  # IoU 1 with box 0 -> class 2
        [60, 60, 80, 70],  # IoU 200 / 400 = 0.5 with box 1, exactly fg_iou -> class 3
        [25, 20, 35, 30],  # IoU 5 / 15 = 0.333 with box 0 -> background 0
        [20, 20, 30, 21],  # IoU 10 / 100 = 0.1 with box 0, exactly bg_iou_low -> background 0
        [20, 20, 30, 20.5],  # IoU 5 / 100 = 0.05 -> ignored -1
        [0, 0, 5, 5],  # IoU 0 -> -1
        [60, 60, 80, 69],  # IoU 180 / 400 = 0.45 with box 1 -> 0
        [61, 60, 81, 80],  # IoU 19 / 21 = 0.905 with box 1 -> class 3
    )
    labels, matched, iou = label_proposals(proposals, gt, gt_labels)
    assert labels.tolist() == [2, 3, 0, 0, -1, -1, 0, 3]
    assert matched[[0, 2, 3, 4]].tolist() == [0, 0, 0, 0]
    assert matched[[1, 6, 7]].tolist() == [1, 1, 1]
    expected_iou = torch.tensor([1.0, 0.5, 1 / 3, 0.1, 0.05, 0.0, 0.45, 19 / 21])
    torch.testing.assert_close(iou, expected_iou)


def test_label_proposals_thresholds_are_parameters():
    gt = boxes([20, 20, 30, 30])
    proposals = boxes([22, 20, 32, 30], [25, 20, 35, 30], [28, 20, 38, 30])  # IoU 0.667, 0.333, 0.111
    labels, _, _ = label_proposals(proposals, gt, torch.tensor([1]), fg_iou=0.6, bg_iou_low=0.2)
    assert labels.tolist() == [1, 0, -1]


def test_label_proposals_without_ground_truth():
    proposals = boxes([0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2])
    labels, matched, iou = label_proposals(proposals, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert labels.tolist() == [0, 0, 0]
    assert labels.dtype == torch.int64
    assert matched.tolist() == [0, 0, 0]
    assert iou.tolist() == [0.0, 0.0, 0.0]


# ------------------------------------------------------------------------------------------- sample_labels

def make_labels(num_pos, num_neg, num_ignored, seed=0, pos_value=1):
    values = [pos_value] * num_pos + [0] * num_neg + [IGNORE] * num_ignored
    perm = torch.randperm(len(values), generator=torch.Generator().manual_seed(seed))
    return torch.tensor(values, dtype=torch.int64)[perm]


def check_sample(labels, pos, neg):
    both = torch.cat([pos, neg])
    assert both.unique().numel() == both.numel(), "indices repeat"
    assert (labels[pos] > 0).all()
    return both


def test_sample_labels_caps_positives():
    labels = make_labels(40, 100, 20)
    pos, neg = sample_labels(labels, 32, 0.25)
    check_sample(labels, pos, neg)
    assert pos.numel() == 8  # int(32 * 0.25)
    assert neg.numel() == 24
    assert (labels[neg] == 0).all()


def test_sample_labels_fraction_rounds_down():
    labels = make_labels(10, 10, 0)
    pos, neg = sample_labels(labels, 10, 0.25)  # int(2.5) = 2 positives
    check_sample(labels, pos, neg)
    assert (pos.numel(), neg.numel()) == (2, 8)


def test_sample_labels_class_labels_are_positive():
    labels = make_labels(5, 20, 5, pos_value=3)
    labels[torch.nonzero(labels == 3).flatten()[:2]] = 2  # RoI labels are classes: 2 and 3 both count
    pos, neg = sample_labels(labels, 16, 0.5)
    check_sample(labels, pos, neg)
    assert pos.numel() == 5


def test_sample_labels_few_positives_filled_with_negatives():
    labels = make_labels(3, 100, 10)
    pos, neg = sample_labels(labels, 32, 0.5)
    check_sample(labels, pos, neg)
    assert pos.numel() == 3
    assert neg.numel() == 29
    assert sorted(pos.tolist()) == torch.nonzero(labels > 0).flatten().tolist()
    assert (labels[neg] == 0).all()


def test_sample_labels_short_of_everything():
    labels = make_labels(10, 5, 50)
    pos, neg = sample_labels(labels, 32, 0.5)
    both = check_sample(labels, pos, neg)
    assert (pos.numel(), neg.numel()) == (10, 5)  # no top-up without extra_negatives
    assert (labels[both] >= 0).all()


def test_sample_labels_extra_negatives_top_up():
    labels = make_labels(10, 5, 50, seed=1)
    mask = torch.zeros_like(labels, dtype=torch.bool)
    ignored = torch.nonzero(labels == IGNORE).flatten()
    mask[ignored[:8]] = True  # eight ignored elements may serve as negatives
    mask[torch.nonzero(labels == 0).flatten()[:2]] = True  # label 0 and 1 elements in the mask must not repeat
    mask[torch.nonzero(labels == 1).flatten()[:2]] = True
    pos, neg = sample_labels(labels, 32, 0.5, extra_negatives=mask)
    check_sample(labels, pos, neg)
    assert pos.numel() == 10
    assert neg.numel() == 5 + 8  # all negatives, then all eight eligible extra ones (17 missing)
    assert set(neg.tolist()) == set(torch.nonzero(labels == 0).flatten().tolist()) | set(ignored[:8].tolist())
    # A -1 element outside the mask is never taken.
    assert not set(neg.tolist()) & set(ignored[8:].tolist())


def test_sample_labels_extra_negatives_only_as_many_as_missing():
    labels = make_labels(10, 5, 50, seed=2)
    mask = labels == IGNORE
    pos, neg = sample_labels(labels, 32, 0.5, extra_negatives=mask)
    check_sample(labels, pos, neg)
    assert pos.numel() + neg.numel() == 32
    assert (labels[neg] == 0).sum() == 5  # every real negative first
    assert (labels[neg] == IGNORE).sum() == 17
    assert mask[neg[labels[neg] == IGNORE]].all()


def test_sample_labels_extra_negatives_unused_when_enough():
    labels = make_labels(10, 100, 50, seed=3)
    pos, neg = sample_labels(labels, 32, 0.5, extra_negatives=labels == IGNORE)
    check_sample(labels, pos, neg)
    assert (labels[neg] == 0).all() and neg.numel() == 22


def test_sample_labels_reproducible_with_generator():
    labels = make_labels(50, 200, 50, seed=4)

    def draw(seed):
        return sample_labels(labels, 64, 0.25, generator=torch.Generator().manual_seed(seed))

    a, b, c = draw(7), draw(7), draw(8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


# ------------------------------------------------------------------------------------------- RPN helpers

def test_flatten_head_outputs_matches_anchor_order():
    n, a, h, w, stride = 2, 3, 2, 4, 8  # a non-square map, so that swapping y and x shows
    objectness = torch.zeros(n, a, h, w)
    deltas = torch.zeros(n, 4 * a, h, w)
    for i in range(n):
        for k in range(a):
            for y in range(h):
                for x in range(w):
                    objectness[i, k, y, x] = i * 1000 + k * 100 + y * 10 + x
                    for c in range(4):
                        deltas[i, 4 * k + c, y, x] = i * 10000 + k * 1000 + y * 100 + x * 10 + c
    flat_obj, flat_deltas = flatten_head_outputs(objectness, deltas)
    assert flat_obj.shape == (n, h * w * a)
    assert flat_deltas.shape == (n, h * w * a, 4)

    generator = pydet_ops.AnchorGenerator(sizes=((16.0,),), aspect_ratios=((0.5, 1.0, 2.0),))
    assert generator.num_anchors_per_location() == [a]

    class Batch:
        tensors = torch.zeros(n, 3, h * stride, w * stride)
        image_sizes = [(h * stride, w * stride)] * n

    anchors = generator(Batch, [objectness])[0]
    cells = generator.cell_anchors[0]
    assert anchors.shape == (h * w * a, 4)
    for i in range(n):
        for k in range(a):
            for y in range(h):
                for x in range(w):
                    p = (y * w + x) * a + k
                    assert flat_obj[i, p] == i * 1000 + k * 100 + y * 10 + x
                    expected = [i * 10000 + k * 1000 + y * 100 + x * 10 + c for c in range(4)]
                    assert flat_deltas[i, p].tolist() == expected
                    # The anchor at that position is cell anchor k moved to location (y, x).
                    shift = torch.tensor([x * stride, y * stride] * 2, dtype=torch.float32)
                    assert torch.equal(anchors[p], cells[k] + shift)


def test_select_proposals_pre_nms_top_n_keeps_highest():
    # Five disjoint boxes; scores out of order.
    b = boxes([0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10], [80, 0, 90, 10])
    s = torch.tensor([0.3, 0.9, 0.1, 0.7, 0.5])
    kept, scores = select_proposals(b, s, (100, 100), 3, 100, 0.7, 1.0)
    assert scores.tolist() == pytest.approx([0.9, 0.7, 0.5])
    assert torch.equal(kept, b[[1, 3, 4]])


def test_select_proposals_pre_nms_top_n_before_size_filter():
    # The top-2 cut comes first: the tiny best box takes a slot, then is dropped.
    b = boxes([0, 0, 0.5, 0.5], [20, 0, 30, 10], [40, 0, 50, 10])
    s = torch.tensor([0.9, 0.8, 0.7])
    kept, scores = select_proposals(b, s, (100, 100), 2, 100, 0.7, 1.0)
    assert torch.equal(kept, b[[1]])
    assert scores.tolist() == pytest.approx([0.8])


def test_select_proposals_clips_and_drops_small():
    size = (50, 40)  # height 50, width 40
    b = boxes(
        [-5, -5, 20, 20],  # -> [0, 0, 20, 20]
        [30, 30, 60, 70],  # -> [30, 30, 40, 50]
        [-10, 0, 0.5, 10],  # -> [0, 0, 0.5, 10]: width 0.5 < 1, dropped
        [50, 50, 60, 60],  # entirely outside -> [40, 50, 40, 50]: empty, dropped
        [10, 30, 11, 31],  # 1 x 1: exactly min_size, kept
    )
    s = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    kept, scores = select_proposals(b, s, size, 100, 100, 0.7, 1.0)
    assert torch.equal(kept, boxes([0, 0, 20, 20], [30, 30, 40, 50], [10, 30, 11, 31]))
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.5])
    # A larger min_size drops the 1 x 1 box too.
    kept, _ = select_proposals(b, s, size, 100, 100, 0.7, 2.0)
    assert kept.shape == (2, 4)


def test_select_proposals_nms_and_post_nms_top_n():
    b = boxes(
        [0, 0, 10, 10],  # 0.9: kept
        [0, 0, 10, 12],  # 0.8: IoU 100 / 120 = 0.833 > 0.7 with the first -> removed
        [0, 0, 10, 15],  # 0.7: IoU 100 / 150 = 0.667 with the first, 120 / 150 = 0.8 with the second (removed)
        [50, 50, 60, 60],  # 0.6
        [70, 70, 80, 80],  # 0.5
    )
    s = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    kept, scores = select_proposals(b, s, (100, 100), 100, 100, 0.7, 1.0)
    assert torch.equal(kept, b[[0, 2, 3, 4]])
    assert scores.tolist() == pytest.approx([0.9, 0.7, 0.6, 0.5])
    # The lower-scored duplicate goes even when listed first.
    order = torch.tensor([1, 0, 4, 3, 2])
    kept, _ = select_proposals(b[order], s[order], (100, 100), 100, 100, 0.7, 1.0)
    assert torch.equal(kept, b[[0, 2, 3, 4]])
    # post_nms_top_n cuts after NMS: the best two survivors.
    kept, scores = select_proposals(b, s, (100, 100), 100, 2, 0.7, 1.0)
    assert torch.equal(kept, b[[0, 2]])
    assert scores.tolist() == pytest.approx([0.9, 0.7])


# ------------------------------------------------------------------------------------------- RoIHead.postprocess

def make_head(**overrides):
    config = DetectorConfig(num_classes=2, class_names=("a", "b"), representation_size=8, **overrides)
    return RoIHead(channels=4, stride=8, config=config)


def logits(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_postprocess_zero_deltas_give_clipped_proposals():
    head = make_head(score_threshold=0.0)
    proposals = boxes(
        [10, 10, 30, 40],
        [-5, 10, 30, 70],  # crosses the left and bottom borders of the 60 x 60 image -> [0, 10, 30, 60]
    )
    scores = logits([0.0, 2.0, 0.0], [0.0, 0.0, 2.0])
    deltas = torch.zeros(2, 4 * 3)
    out = head.postprocess(scores, deltas, [proposals], [(60, 60)])
    assert len(out) == 1
    det = out[0]
    # Every (RoI, foreground class) pair survives: NMS is per class and each class has one box per RoI
    # location; the two RoIs overlap with IoU 600 / 1500 = 0.4 < 0.5.
    assert det["boxes"].shape == (4, 4)
    expected = {(1, 0), (2, 0), (1, 1), (2, 1)}  # (label, roi)
    found = set()
    clipped = boxes([10, 10, 30, 40], [0, 10, 30, 60])
    for box, label in zip(det["boxes"], det["labels"].tolist()):
        roi = 0 if torch.allclose(box, clipped[0]) else 1
        torch.testing.assert_close(box, clipped[roi])
        found.add((label, roi))
    assert found == expected


def test_postprocess_never_returns_background():
    head = make_head(score_threshold=0.0)
    proposals = boxes([0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50])
    scores = logits([10.0, 0.0, 0.0], [10.0, -5.0, 0.0], [0.0, 0.0, 0.0])  # background dominates the first two
    out = head.postprocess(scores, torch.zeros(3, 12), [proposals], [(64, 64)])[0]
    assert out["labels"].dtype == torch.int64
    assert set(out["labels"].tolist()) <= {1, 2}
    assert out["labels"].numel() == 3 * 2  # background scores would make it 9


def test_postprocess_score_threshold():
    head = make_head(score_threshold=0.3)
    proposals = boxes([0, 0, 10, 10], [20, 20, 30, 30])
    # softmax([0, log 3, 0]) = [0.2, 0.6, 0.2]; softmax([0, 0, log 4]) = [1/6, 1/6, 2/3]
    scores = logits([0.0, math.log(3.0), 0.0], [0.0, 0.0, math.log(4.0)])
    out = head.postprocess(scores, torch.zeros(2, 12), [proposals], [(64, 64)])[0]
    assert sorted(zip(out["labels"].tolist(), [round(v, 4) for v in out["scores"].tolist()])) == [
        (1, 0.6), (2, round(2 / 3, 4))]
    assert (out["scores"] > 0.3).all()


def test_postprocess_per_class_nms():
    head = make_head()  # nms_threshold 0.5
    proposals = boxes(
        [0, 0, 20, 20],  # class 1, strong
        [1, 0, 21, 20],  # IoU 19 / 21 = 0.905 with the first; class 1, weaker -> suppressed
        [0, 1, 20, 21],  # IoU 0.905 with the first; class 2 -> kept (other class)
        [40, 40, 60, 60],  # class 1, far away -> kept
    )
    scores = logits([0, 10, 0], [0, 8, 0], [0, 0, 9], [0, 7, 0])
    out = head.postprocess(scores, torch.zeros(4, 12), [proposals], [(64, 64)])[0]
    got = sorted((label, tuple(box)) for label, box in zip(out["labels"].tolist(), out["boxes"].tolist()))
    assert got == [(1, (0.0, 0.0, 20.0, 20.0)), (1, (40.0, 40.0, 60.0, 60.0)), (2, (0.0, 1.0, 20.0, 21.0))]
    assert torch.all(out["scores"][:-1] >= out["scores"][1:])  # best first


def test_postprocess_detections_per_image_and_two_images():
    head = make_head(detections_per_image=3)
    first = boxes(*[[20 * i, 0, 20 * i + 10, 10] for i in range(5)])  # five disjoint RoIs
    second = boxes([0, 0, 50, 50], [0, 60, 50, 110])  # the second partly below a 100-high image
    strength = [5.0, 9.0, 7.0, 6.0, 8.0]
    scores = logits(*[[0.0, v, 0.0] for v in strength], [0, 0, 6], [0, 6, 0])
    out = head.postprocess(scores, torch.zeros(7, 12), [first, second], [(64, 128), (100, 100)])
    assert len(out) == 2
    a, b = out
    assert a["boxes"].shape == (3, 4)
    assert a["labels"].tolist() == [1, 1, 1]
    assert torch.equal(a["boxes"], first[[1, 4, 2]])  # the three strongest, best first
    assert b["boxes"].shape == (2, 4)
    assert sorted(b["labels"].tolist()) == [1, 2]
    assert b["boxes"][:, 3].max() == 100  # clipped to its own image, not the first one's


@pytest.mark.parametrize("top_up", [True, False])
def test_roi_sample_tops_up_background(top_up):
    head = make_head(roi_batch_size=16, roi_positive_fraction=0.25, roi_bg_top_up=top_up)
    gt = target([0, 0, 10, 10], labels=[2])
    proposals = torch.cat([
        boxes([1, 0, 11, 10]),  # IoU 0.818 -> foreground, class 2
        boxes([3, 0, 13, 10], [5, 0, 15, 10]),  # IoU 0.538 (fg) and 0.333 (background range)
        boxes([6, 0, 16, 10]),  # IoU 0.25 -> background range
        boxes(*[[20 + 5 * i, 20, 30 + 5 * i, 30] for i in range(20)]),  # disjoint: IoU 0 -> below the range
    ])
    rois, labels, goals = head.sample([proposals], [gt])
    assert len(rois) == len(labels) == len(goals) == 1
    rois, labels, goals = rois[0], labels[0], goals[0]
    # Foreground: two proposals and the ground-truth box itself (appended to the proposals), at most 4.
    assert labels.tolist()[:3] == [2, 2, 2]
    assert (labels[3:] == 0).all()
    assert labels.numel() == (16 if top_up else 3 + 2)
    iou = pydet_ops.box_iou(rois, gt["boxes"]).flatten()
    assert (iou[:3] >= 0.5).all() and (iou[3:] < 0.5).all()
    if not top_up:
        assert (iou[3:] >= 0.1).all()
    # The regression targets take each foreground RoI onto the box: zero for the box itself.
    assert goals.shape == rois.shape
    decoded = head.box_coder.decode_single(goals[:3], rois[:3])
    torch.testing.assert_close(decoded, gt["boxes"].expand(3, 4), atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------- FasterRCNN

TINY = dict(backbone_width=8, representation_size=32, rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=50,
            rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100, roi_batch_size=32, rpn_batch_size=64)
LOSS_KEYS = {"loss_objectness", "loss_rpn_box", "loss_classifier", "loss_box_reg"}


def tiny_model(**overrides):
    torch.manual_seed(0)
    return FasterRCNN(DetectorConfig(**{**TINY, **overrides}))


def image(h, w, seed=0):
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def target(*rows, labels=None):
    b = boxes(*rows) if rows else torch.zeros(0, 4)
    lab = torch.tensor(labels if labels is not None else [1] * len(rows), dtype=torch.int64)
    return {"boxes": b, "labels": lab}


def check_losses(losses):
    assert set(losses) == LOSS_KEYS
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), (name, value)
        assert value >= 0, name


def check_detections(det, size, config):
    h, w = size
    assert set(det) == {"boxes", "scores", "labels"}
    assert det["boxes"].dtype == torch.float32 and det["scores"].dtype == torch.float32
    assert det["labels"].dtype == torch.int64
    n = det["scores"].shape[0]
    assert det["boxes"].shape == (n, 4) and det["labels"].shape == (n,)
    assert n <= config.detections_per_image
    if n:
        assert (det["labels"] >= 1).all() and (det["labels"] <= config.num_classes).all()
        assert (det["scores"] > config.score_threshold).all() and (det["scores"] <= 1).all()
        bx = det["boxes"]
        assert (bx[:, 0] >= 0).all() and (bx[:, 1] >= 0).all()
        assert (bx[:, 2] <= w + 1e-3).all() and (bx[:, 3] <= h + 1e-3).all()
        assert (bx[:, 2] >= bx[:, 0]).all() and (bx[:, 3] >= bx[:, 1]).all()


def test_training_without_targets_raises():
    model = tiny_model().train()
    with pytest.raises(ValueError, match="targets"):
        model([image(32, 32)])


@pytest.mark.parametrize("bad", [torch.rand(1, 32, 32), torch.rand(32, 32), torch.rand(1, 3, 32, 32)])
def test_wrong_image_shape_raises(bad):
    model = tiny_model().eval()
    with pytest.raises(ValueError, match=r"images\[1\]"):
        model([image(32, 32), bad])


def test_images_must_be_a_list():
    model = tiny_model().eval()
    with pytest.raises(TypeError):
        model(image(32, 32))
    with pytest.raises(TypeError):
        model([])


def test_eval_outputs():
    model = tiny_model().eval()
    with torch.no_grad():
        out = model([image(64, 64)])
    assert isinstance(out, list) and len(out) == 1
    check_detections(out[0], (64, 64), model.config)
    assert out[0]["scores"].numel() > 0  # random weights: every class scores about 1/4, above 0.05
    assert torch.all(out[0]["scores"][:-1] >= out[0]["scores"][1:])


def test_resize_boxes_returned_in_original_coordinates():
    model = tiny_model(min_size=96, max_size=128).eval()
    with torch.no_grad():
        out = model([image(48, 64)])  # scaled by 2 to 96 x 128 inside the model
    check_detections(out[0], (48, 64), model.config)
    assert out[0]["scores"].numel() > 0


def test_resize_maps_back_exactly(monkeypatch):
    model = tiny_model(min_size=100, max_size=120).eval()
    images = [image(48, 64), image(50, 70, seed=1)]  # scales min(100/48, 120/64) = 1.875 and min(2, 120/70)
    batch, _ = model.prepare(images)
    seen = []

    def fake_roi_heads(feature, proposals, image_sizes, targets=None):
        seen.extend(image_sizes)
        # One box covering each (resized) image and one covering its top-left quarter.
        dets = [{"boxes": torch.tensor([[0.0, 0.0, w, h], [0.0, 0.0, w / 2, h / 2]]),
                 "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 2])} for h, w in image_sizes]
        return dets, {}

    monkeypatch.setattr(model.roi_heads, "forward", fake_roi_heads)
    with torch.no_grad():
        out = model(images)
    assert seen == batch.image_sizes
    for (h, w), (rh, rw), det in zip([(48, 64), (50, 70)], batch.image_sizes, out):
        assert max(rh, rw) <= 120 and min(rh, rw) <= 100
        assert (rh, rw) != (h, w)
        torch.testing.assert_close(det["boxes"], torch.tensor([[0.0, 0.0, w, h], [0.0, 0.0, w / 2, h / 2]]))
        assert det["labels"].tolist() == [1, 2]


def test_resize_scales_targets_without_touching_the_caller_s():
    model = tiny_model(min_size=96, max_size=128)
    t = target([0, 0, 64, 48], [16, 12, 32, 24])
    original = t["boxes"].clone()
    batch, new_targets = model.prepare([image(48, 64)], [t])
    assert batch.image_sizes == [(96, 128)]  # scale min(96 / 48, 128 / 64) = 2
    assert batch.original_sizes == [(48, 64)]
    assert batch.tensors.shape == (1, 3, 96, 128)
    torch.testing.assert_close(new_targets[0]["boxes"], boxes([0, 0, 128, 96], [32, 24, 64, 48]))
    assert torch.equal(t["boxes"], original)


def test_resize_scales_target_axes_separately():
    # 33 x 50 with min_size 64 / max_size 100: scale min(64 / 33, 100 / 50) = 1.94; rounding the output size
    # to whole pixels makes the two axes' ratios differ, and each axis of the boxes follows its own ratio.
    model = tiny_model(min_size=64, max_size=100)
    batch, new_targets = model.prepare([image(33, 50)], [target([0, 0, 50, 33], [10, 3, 20, 30])])
    rh, rw = batch.image_sizes[0]
    assert rh <= 64 and rw <= 100 and rh / 33 != rw / 50
    sx, sy = rw / 50, rh / 33
    expected = boxes([0, 0, rw, rh], [10 * sx, 3 * sy, 20 * sx, 30 * sy])
    torch.testing.assert_close(new_targets[0]["boxes"], expected)


def test_prepare_pads_and_normalises():
    model = tiny_model()  # size_divisible 32, mean 0.5, std 0.25
    a, b = torch.full((3, 40, 56), 0.75), torch.full((3, 70, 48), 0.25)
    batch, _ = model.prepare([a, b])
    assert batch.tensors.shape == (2, 3, 96, 64)
    assert batch.image_sizes == [(40, 56), (70, 48)]
    assert torch.all(batch.tensors[0, :, :40, :56] == 1.0)  # (0.75 - 0.5) / 0.25
    assert torch.all(batch.tensors[1, :, :70, :48] == -1.0)
    assert torch.all(batch.tensors[0, :, 40:] == 0) and torch.all(batch.tensors[0, :, :, 56:] == 0)


def test_batch_of_two_sizes():
    model = tiny_model().eval()
    sizes = [(40, 56), (70, 48)]
    with torch.no_grad():
        out = model([image(*sizes[0]), image(*sizes[1], seed=1)])
    assert len(out) == 2
    for det, size in zip(out, sizes):
        check_detections(det, size, model.config)
        assert det["scores"].numel() > 0
    model.train()
    losses = model([image(*sizes[0]), image(*sizes[1], seed=1)],
                   [target([5, 5, 30, 30], labels=[2]), target([10, 20, 40, 60], [0, 0, 16, 16], labels=[1, 3])])
    check_losses(losses)


def test_losses_and_backward():
    model = tiny_model().train()
    losses = model([image(64, 64)], [target([8, 8, 40, 40], [30, 20, 60, 50], labels=[1, 3])])
    check_losses(losses)
    assert losses["loss_objectness"] > 0 and losses["loss_classifier"] > 0
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_image_without_boxes_trains():
    model = tiny_model().train()
    losses = model([image(64, 64)], [target()])
    check_losses(losses)
    assert losses["loss_rpn_box"] == 0 and losses["loss_box_reg"] == 0  # nothing to regress to
    assert losses["loss_objectness"] > 0 and losses["loss_classifier"] > 0
    sum(losses.values()).backward()


def test_roi_pool():
    model = tiny_model(roi_op="pool")
    assert isinstance(model.roi_heads.pooler, pydet_ops.RoIPool)
    model.eval()
    with torch.no_grad():
        out = model([image(64, 64)])
    check_detections(out[0], (64, 64), model.config)
    model.train()
    check_losses(model([image(64, 64)], [target([8, 8, 40, 40])]))


def test_resnet18_backbone():
    model = tiny_model(backbone="resnet18").eval()
    assert model.backbone.stride == 16 and model.backbone.out_channels == 256
    with torch.no_grad():
        out = model([image(64, 64)])
    check_detections(out[0], (64, 64), model.config)


def test_invalid_config_rejected_by_model():
    with pytest.raises(ValueError, match="backbone"):
        FasterRCNN(DetectorConfig(backbone="vgg16"))


# ------------------------------------------------------------------------------------------- DetectorConfig

def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="bogus_option"):
        DetectorConfig.from_dict({"num_classes": 2, "bogus_option": 1})


@pytest.mark.parametrize("values, words", [
    ({"backbone": "vgg16"}, "backbone"),
    ({"roi_op": "max"}, "roi_op"),
    ({"rpn_bg_iou": 0.8, "rpn_fg_iou": 0.7}, "rpn_bg_iou"),
    ({"roi_bg_iou_low": 0.6, "roi_fg_iou": 0.5}, "roi_bg_iou_low"),
    ({"rpn_fg_iou": 1.5}, "rpn_fg_iou"),
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": 2, "class_names": ["a"]}, "class_names"),
    ({"min_size": 64}, "min_size"),
    ({"rpn_positive_fraction": 0.0}, "fraction"),
])
def test_config_validate_rejects(values, words):
    with pytest.raises(ValueError, match=words):
        DetectorConfig.from_dict(values)
    config = DetectorConfig(**values)  # the constructor does not check; validate() does
    with pytest.raises(ValueError, match=words):
        config.validate()


def test_config_round_trip_through_json():
    config = DetectorConfig(num_classes=2, class_names=("cat", "dog"), backbone="resnet18", roi_op="pool",
                            min_size=64, max_size=96, anchor_sizes=(8.0, 16.0), aspect_ratios=(1.0,),
                            box_coder_weights=(1.0, 1.0, 2.0, 2.0), roi_bg_top_up=False)
    assert DetectorConfig.from_dict(config.to_dict()) == config
    values = json.loads(json.dumps(config.to_dict()))
    assert isinstance(values["anchor_sizes"], list)
    back = DetectorConfig.from_dict(values)
    assert back == config
    for name in ("class_names", "anchor_sizes", "aspect_ratios", "box_coder_weights", "image_mean", "image_std"):
        assert isinstance(getattr(back, name), tuple), name


def test_config_lists_become_tuples():
    config = DetectorConfig.from_dict({"anchor_sizes": [8, 16], "class_names": ["x", "y", "z"]})
    assert config.anchor_sizes == (8, 16) and config.class_names == ("x", "y", "z")


def test_load_config(tmp_path):
    assert load_config() == DetectorConfig()
    path = tmp_path / "detector.json"
    path.write_text(json.dumps({"num_classes": 5, "roi_op": "pool", "anchor_sizes": [32, 64]}))
    config = load_config(path)
    assert (config.num_classes, config.roi_op, config.anchor_sizes) == (5, "pool", (32, 64))
    assert config.backbone == "small"  # the default for what the file leaves out
    config = load_config(path, roi_op="align", backbone="resnet18", num_classes=None)  # None: keep the file's
    assert (config.num_classes, config.roi_op, config.backbone) == (5, "align", "resnet18")
    with pytest.raises(ValueError, match="nonsense"):
        load_config(path, nonsense=1)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"backbone": "alexnet"}))
    with pytest.raises(ValueError, match="backbone"):
        load_config(bad)


# ------------------------------------------------------------------------------------------- coco_metrics

class TinySet(Dataset):
    classes = ("square", "wide")

    def __init__(self):
        self.items = [
            (torch.zeros(3, 64, 64), {"boxes": boxes([10, 10, 30, 30], [30, 35, 55, 55]),
                                      "labels": torch.tensor([1, 2]), "image_id": 1}),
            (torch.zeros(3, 64, 80), {"boxes": boxes([5, 5, 25, 25]), "labels": torch.tensor([1]),
                                      "image_id": 2}),
        ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def detections(dataset, shift=None, label_map=None):
    results = []
    for _, t in dataset:
        for box, label in zip(t["boxes"].tolist(), t["labels"].tolist()):
            x1, y1, x2, y2 = box
            dx = shift(x2 - x1) if shift else 0.0
            results.append({"image_id": t["image_id"], "category_id": (label_map or {}).get(label, label),
                            "bbox": [x1 + dx, y1, x2 - x1, y2 - y1], "score": 1.0})
    return results


def test_coco_metrics_perfect():
    data = TinySet()
    metrics = coco_metrics(coco_ground_truth(data), detections(data))
    assert metrics["mAP"] == pytest.approx(1.0)
    assert metrics["mAP50"] == pytest.approx(1.0)
    assert metrics["mAP75"] == pytest.approx(1.0)
    assert set(metrics["per_class"]) == {"square", "wide"}
    for ap in metrics["per_class"].values():
        assert ap["AP"] == pytest.approx(1.0) and ap["AP50"] == pytest.approx(1.0)
    assert "Average Precision" in metrics["summary"]


def test_coco_metrics_no_detections():
    metrics = coco_metrics(coco_ground_truth(TinySet()), [])
    assert metrics["mAP"] == 0.0 and metrics["mAP50"] == 0.0 and metrics["mAP75"] == 0.0
    assert metrics["per_class"] == {"square": {"AP": 0.0, "AP50": 0.0}, "wide": {"AP": 0.0, "AP50": 0.0}}


def test_coco_metrics_wrong_class_scores_zero():
    data = TinySet()
    metrics = coco_metrics(coco_ground_truth(data), detections(data, label_map={1: 2, 2: 1}))
    assert metrics["mAP"] == pytest.approx(0.0) and metrics["mAP50"] == pytest.approx(0.0)


def test_coco_metrics_shifted_boxes():
    # Shifting a box of width w by d along x leaves an overlap of (w - d) * h out of a union of (w + d) * h:
    # IoU = (w - d) / (w + d). d = 0.225 w gives 0.775 / 1.225 = 0.633 for every box, between the 0.60 and
    # 0.65 thresholds of COCO's 0.50:0.05:0.95: matched at 0.50, 0.55 and 0.60 (AP 1 each: one detection per
    # box, all with the same score), missed at the seven higher ones.
    data = TinySet()
    results = detections(data, shift=lambda w: 0.225 * w)
    for r in results:  # check the IoU claim with the library's own box_iou
        x, y, w, h = r["bbox"]
        gt = [t for _, t in data if t["image_id"] == r["image_id"]][0]["boxes"]
        iou = pydet_ops.box_iou(torch.tensor([[x, y, x + w, y + h]]), gt).max()
        assert iou.item() == pytest.approx(0.775 / 1.225, abs=1e-4)
    metrics = coco_metrics(coco_ground_truth(data), results)
    assert metrics["mAP50"] == pytest.approx(1.0)
    assert metrics["mAP75"] == pytest.approx(0.0)
    assert metrics["mAP"] == pytest.approx(0.3)
    for ap in metrics["per_class"].values():
        assert ap["AP50"] == pytest.approx(1.0) and ap["AP"] == pytest.approx(0.3)


def test_size_divisible_must_be_a_multiple_of_the_stride():
    # A 70 px padded image over a stride-8 backbone would give a 9-cell map and anchors 7 px apart.
    with pytest.raises(ValueError, match="size_divisible"):
        FasterRCNN(DetectorConfig(size_divisible=12))
    FasterRCNN(DetectorConfig(size_divisible=8))  # the stride itself is fine
