"""Box coding with torchvision's ``BoxCoder`` interface: boxes <-> (dx, dy, dw, dh) deltas in one fused pass.

    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    deltas = coder.encode_single(gt_boxes, proposals)      # [N, 4]
    boxes = coder.decode(class_deltas, [proposals])        # [N, K, 4] from [N, 4 * K] deltas

The kernels follow torchvision's operation order step by step (float16 and bfloat16 rounded after every step,
as a chain of tensor ops would), so results equal torchvision's except where its float exp and log are off by
an ulp: ours are correctly rounded. Both functions are differentiable in every tensor argument.
"""

import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from . import _autograd  # noqa: F401  (registers the autograd formulas)
from ._args import as_float, check_same_device, check_tensor

__all__ = ["BoxCoder", "decode_boxes", "encode_boxes"]

_DEFAULT_CLIP = math.log(1000.0 / 16)


def _weights(weights: Sequence[float], op: str) -> List[float]:
    if isinstance(weights, Tensor):
        weights = weights.tolist()
    try:  # a string is not 4 numbers, even "1234"
        values = None if isinstance(weights, (str, bytes)) else [as_float(op, "weights", w) for w in weights]
    except (TypeError, ValueError):
        values = None
    if values is None:
        raise TypeError(f"{op}: weights must be 4 numbers (wx, wy, ww, wh), got {weights!r}")
    if len(values) != 4:
        raise ValueError(f"{op}: weights must be 4 numbers (wx, wy, ww, wh), got {len(values)}")
    return values


def encode_boxes(reference_boxes: Tensor, proposals: Tensor, weights: Sequence[float]) -> Tensor:
    """The deltas that take each proposal onto its reference box.

    Args:
        reference_boxes (Tensor[N, 4]): target boxes (x1, y1, x2, y2), e.g. the matched ground truth.
        proposals (Tensor[N, 4]): boxes the deltas are relative to (anchors or proposals).
        weights (4 floats): (wx, wy, ww, wh); dx = wx * (ref_cx - prop_cx) / prop_w, dw = ww * log(ref_w / prop_w).

    Returns:
        Tensor[N, 4] in the promoted dtype of the two inputs.
    """
    op = "encode_boxes"
    check_tensor(op, "reference_boxes", reference_boxes)
    check_tensor(op, "proposals", proposals)
    check_same_device(op, reference_boxes=reference_boxes, proposals=proposals)
    return torch.ops.pydet_ops.encode_boxes(reference_boxes, proposals, _weights(weights, op))


def decode_boxes(
    rel_codes: Tensor, boxes: Tensor, weights: Sequence[float], bbox_xform_clip: float = _DEFAULT_CLIP
) -> Tensor:
    """The boxes that deltas make of reference boxes: the inverse of :func:`encode_boxes`.

    Args:
        rel_codes (Tensor[N, 4 * K]): K sets of (dx, dy, dw, dh) per box (e.g. one per class).
        boxes (Tensor[N, 4]): reference boxes (x1, y1, x2, y2); converted to rel_codes' dtype.
        weights (4 floats): (wx, wy, ww, wh), the deltas are divided by them.
        bbox_xform_clip (float): dw and dh are clamped from above at this value before exp.

    Returns:
        Tensor[N, 4 * K] in rel_codes' dtype.
    """
    op = "decode_boxes"
    check_tensor(op, "rel_codes", rel_codes)
    check_tensor(op, "boxes", boxes)
    check_same_device(op, rel_codes=rel_codes, boxes=boxes)
    return torch.ops.pydet_ops.decode_boxes(
        rel_codes, boxes, _weights(weights, op), as_float(op, "bbox_xform_clip", bbox_xform_clip)
    )


class BoxCoder:
    """Encodes boxes as deltas relative to reference boxes and decodes them back.

    Same constructor, methods and results as
    ``torchvision.models.detection._utils.BoxCoder``; each method is one fused op instead of a dozen
    tensor ops.

    Args:
        weights (Tuple[float, float, float, float]): (wx, wy, ww, wh) scaling of the deltas.
        bbox_xform_clip (float): upper clamp of dw and dh before exp (default log(1000 / 16)).
    """

    def __init__(self, weights: Tuple[float, float, float, float], bbox_xform_clip: float = _DEFAULT_CLIP) -> None:
        _weights(weights, "BoxCoder")
        if math.isnan(as_float("BoxCoder", "bbox_xform_clip", bbox_xform_clip)):
            raise ValueError("BoxCoder: bbox_xform_clip must not be NaN")
        self.weights = weights
        self.bbox_xform_clip = bbox_xform_clip

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(weights={tuple(self.weights)}, bbox_xform_clip={self.bbox_xform_clip})"

    def encode(self, reference_boxes: List[Tensor], proposals: List[Tensor]) -> Tuple[Tensor, ...]:
        """Per-image deltas: ``reference_boxes[i]`` relative to ``proposals[i]``, split back per image."""
        boxes_per_image = [len(b) for b in reference_boxes]
        targets = self.encode_single(torch.cat(reference_boxes, dim=0), torch.cat(proposals, dim=0))
        return targets.split(boxes_per_image, 0)

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """Deltas [N, 4] taking ``proposals`` onto ``reference_boxes``."""
        return encode_boxes(reference_boxes, proposals, self.weights)

    def decode(self, rel_codes: Tensor, boxes: List[Tensor]) -> Tensor:
        """Boxes [sum N_i, K, 4] from deltas [sum N_i, 4 * K] (any shape with that many elements) and a list
        of per-image reference boxes."""
        if not isinstance(boxes, (list, tuple)):
            raise TypeError(f"BoxCoder.decode: boxes must be a list or tuple of Tensor[N_i, 4], got {type(boxes)}")
        if not isinstance(rel_codes, Tensor):
            raise TypeError(f"BoxCoder.decode: rel_codes must be a Tensor, got {type(rel_codes)}")
        box_sum = sum(int(b.size(0)) for b in boxes)
        if box_sum > 0:
            rel_codes = rel_codes.reshape(box_sum, -1)
        # No images: no reference boxes (torch.cat refuses an empty list).
        concat = torch.cat(boxes, dim=0) if boxes else rel_codes.new_empty((0, 4))
        pred_boxes = self.decode_single(rel_codes, concat)
        if box_sum > 0:
            pred_boxes = pred_boxes.reshape(box_sum, -1, 4)
        return pred_boxes

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        """Boxes [N, 4 * K] from deltas [N, 4 * K] relative to ``boxes`` [N, 4]."""
        return decode_boxes(rel_codes, boxes, self.weights, self.bbox_xform_clip)
