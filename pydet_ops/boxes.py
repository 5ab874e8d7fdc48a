"""Box ops with torchvision.ops' names, signatures, defaults and results.

``nms``, ``batched_nms`` and the pairwise overlap family run compiled kernels (``torch.ops.pydet_ops.*``).
``box_area``, ``box_convert``, ``clip_boxes_to_image`` and ``remove_small_boxes`` are one or two elementwise
tensor ops each, already bandwidth-bound in PyTorch, so they stay in PyTorch (benchmarks/NOTES.md has the
measurements).

Conventions shared by every function here:

* Boxes are ``(x1, y1, x2, y2)`` unless a ``fmt`` argument says otherwise.
* Wrong shapes, dtypes or devices raise ``RuntimeError`` (from the kernels) or ``ValueError`` (from the
  Python side) naming the argument; the elementwise helpers check their boxes (a real tensor of shape
  [..., 4]) in Python. Scalar arguments are checked by ``_args`` (``TypeError`` / ``ValueError``).
* Inverted boxes (``x2 < x1`` or ``y2 < y1``) are not rejected; they have a negative area and follow the
  same formulas as torchvision, on every code path.
* NaN / Inf coordinates give the same values as torchvision's formulas (a NaN coordinate makes every
  overlap of that box NaN; NaN never suppresses in NMS); NaN scores rank above every number, as in
  ``torch.sort``.
"""

from typing import Tuple

import torch
from torch import Tensor

from . import _fake  # noqa: F401  (loads the extension and registers the fake kernels)
from ._args import as_float, as_int, as_number, as_pair, check_same_device, check_tensor

_AXIS_ALIGNED_FMTS = ("xyxy", "xywh", "cxcywh")
_ROTATED_FMTS = ("xywhr", "cxcywhr", "xyxyxyxy")

__all__ = [
    "nms",
    "batched_nms",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "complete_box_iou",
    "box_area",
    "box_convert",
    "clip_boxes_to_image",
    "remove_small_boxes",
]


def _check_real(op: str, name: str, t: Tensor) -> None:
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{op}: {name} must be a real floating-point or integer tensor, got {t.dtype}")


def _check_boxes(op: str, boxes, name: str = "boxes", exact_dim: int = 0) -> None:
    """The checks of the PyTorch helpers: a real tensor of shape [..., 4] (of exactly ``exact_dim`` dims if given)."""
    check_tensor(op, name, boxes)
    if boxes.dim() == 0 or boxes.shape[-1] != 4 or (exact_dim and boxes.dim() != exact_dim):
        expected = "[N, 4]" if exact_dim == 2 else "[..., 4]"
        raise ValueError(f"{op}: {name} must have shape {expected} (x1, y1, x2, y2), got shape {tuple(boxes.shape)}")
    _check_real(op, name, boxes)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Non-maximum suppression: drops every box whose IoU with a higher-scoring kept box is > ``iou_threshold``.

    Args:
        boxes (Tensor[N, 4]): boxes in ``(x1, y1, x2, y2)`` format, float16, bfloat16, float32 or float64
            (half types are computed in float32).
        scores (Tensor[N]): scores, same dtype as ``boxes``.
        iou_threshold (float): boxes with IoU > ``iou_threshold`` against a kept box are discarded.

    Returns:
        Tensor: int64 indices of the kept boxes, sorted by decreasing score.

    Exactly torchvision's rule and arithmetic: the kept set is bit-for-bit the same. Ties in score are broken
    by ascending index. NaN scores rank first; a box with a NaN coordinate never suppresses and is never
    suppressed; inverted boxes overlap nothing. A negative threshold suppresses every box after the first
    except those whose IoU is NaN. Empty input gives an empty int64 tensor. Raises ``RuntimeError`` for
    boxes not of shape [N, 4], scores not of shape [N], mismatched dtypes, or integer dtypes.
    """
    check_tensor("nms", "boxes", boxes)
    check_tensor("nms", "scores", scores)
    check_same_device("nms", boxes=boxes, scores=scores)
    return torch.ops.pydet_ops.nms(boxes, scores, as_float("nms", "iou_threshold", iou_threshold))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Per-category NMS: boxes only suppress boxes with the same ``idxs`` value.

    Args:
        boxes (Tensor[N, 4]): boxes in ``(x1, y1, x2, y2)`` format.
        scores (Tensor[N]): scores, same dtype as ``boxes``.
        idxs (Tensor[N]): integer category of each box (any values, negative included).
        iou_threshold (float): boxes with IoU > ``iou_threshold`` against a kept box of the same category
            are discarded.

    Returns:
        Tensor: int64 indices of the kept boxes, sorted by decreasing score (ties by ascending index).

    Each category is suppressed on its own, in parallel, in one call: no coordinate-offset trick (which
    loses precision with large or negative coordinates) and no Python loop. Same input rules as :func:`nms`;
    ``idxs`` must be an integer tensor of shape [N].
    """
    check_tensor("batched_nms", "boxes", boxes)
    check_tensor("batched_nms", "scores", scores)
    check_tensor("batched_nms", "idxs", idxs)
    check_same_device("batched_nms", boxes=boxes, scores=scores, idxs=idxs)
    threshold = as_float("batched_nms", "iou_threshold", iou_threshold)
    return torch.ops.pydet_ops.batched_nms(boxes, scores, idxs, threshold)


def _check_max_output(op: str, max_output) -> int:
    value = as_int(op, "max_output", max_output)
    if not isinstance(value, torch.SymInt) and not 0 <= value <= 2**31 - 1:
        raise ValueError(f"{op}: max_output must be in [0, 2^31 - 1], got {value}")
    return value


def nms_fixed(boxes: Tensor, scores: Tensor, iou_threshold: float, max_output: int) -> Tuple[Tensor, Tensor]:
    """:func:`nms` with an output of fixed size: ``(keep, count)``.

    Args:
        boxes (Tensor[N, 4]), scores (Tensor[N]), iou_threshold (float): as in :func:`nms`.
        max_output (int): length of ``keep``, in ``[0, 2^31 - 1]``.

    Returns:
        (Tensor, Tensor): ``keep``, int64 ``[max_output]``: the first ``count`` entries are
        ``nms(boxes, scores, iou_threshold)[:max_output]``, the rest -1; ``count``, an int64 0-d tensor on the
        boxes' device: ``min(number of kept boxes, max_output)``.

    The shapes depend only on ``max_output``, never on the data: on CUDA the call makes no host
    synchronisation, so it can be captured in a CUDA graph and compiled with
    ``torch.compile(mode="reduce-overhead")``. Typical use: proposal selection with a fixed post-NMS top-k.
    Same input rules as :func:`nms`.
    """
    check_tensor("nms_fixed", "boxes", boxes)
    check_tensor("nms_fixed", "scores", scores)
    check_same_device("nms_fixed", boxes=boxes, scores=scores)
    threshold = as_float("nms_fixed", "iou_threshold", iou_threshold)
    size = _check_max_output("nms_fixed", max_output)
    return torch.ops.pydet_ops.nms_fixed(boxes, scores, threshold, size)


def batched_nms_fixed(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, max_output: int
) -> Tuple[Tensor, Tensor]:
    """:func:`batched_nms` with an output of fixed size: ``(keep, count)`` as in :func:`nms_fixed`.

    ``keep[:count]`` is ``batched_nms(boxes, scores, idxs, iou_threshold)[:max_output]``, padded with -1 to
    ``max_output`` entries. No host synchronisation on CUDA. Same input rules as :func:`batched_nms`.
    """
    check_tensor("batched_nms_fixed", "boxes", boxes)
    check_tensor("batched_nms_fixed", "scores", scores)
    check_tensor("batched_nms_fixed", "idxs", idxs)
    check_same_device("batched_nms_fixed", boxes=boxes, scores=scores, idxs=idxs)
    threshold = as_float("batched_nms_fixed", "iou_threshold", iou_threshold)
    size = _check_max_output("batched_nms_fixed", max_output)
    return torch.ops.pydet_ops.batched_nms_fixed(boxes, scores, idxs, threshold, size)


# ---------------------------------------------------------------------------------------------------------
# Pairwise overlap family
# ---------------------------------------------------------------------------------------------------------


def _upcast(t: Tensor) -> Tensor:
    # The dtype torchvision's formulas compute in: float32/float64 stay, half types become float32,
    # small integers become int32.
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def _overlap_composite(kind: str, boxes1: Tensor, boxes2: Tensor, eps: float) -> Tensor:
    """The overlap measures as differentiable tensor expressions (the formulas of common/box_math.h)."""
    a = _upcast(boxes1)[..., :, None, :]
    b = _upcast(boxes2)[..., None, :, :]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a + area_b - inter
    iou = inter / union
    if kind == "iou":
        return iou
    whi = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).clamp(min=0)
    if kind == "giou":
        area_i = whi[..., 0] * whi[..., 1]
        return iou - (area_i - union) / area_i
    diag_sq = whi[..., 0] * whi[..., 0] + whi[..., 1] * whi[..., 1] + eps
    ca = (a[..., :2] + a[..., 2:]) / 2
    cb = (b[..., :2] + b[..., 2:]) / 2
    d = ca - cb
    diou = iou - (d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]) / diag_sq
    if kind == "diou":
        return diou
    atan_a = torch.atan((a[..., 2] - a[..., 0]) / (a[..., 3] - a[..., 1]))
    atan_b = torch.atan((b[..., 2] - b[..., 0]) / (b[..., 3] - b[..., 1]))
    v = (4 / (torch.pi**2)) * (atan_a - atan_b) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return diou - alpha * v


_OVERLAP_OPS = {
    "iou": lambda b1, b2, eps: torch.ops.pydet_ops.box_iou(b1, b2),
    "giou": lambda b1, b2, eps: torch.ops.pydet_ops.generalized_box_iou(b1, b2),
    "diou": lambda b1, b2, eps: torch.ops.pydet_ops.distance_box_iou(b1, b2, eps),
    "ciou": lambda b1, b2, eps: torch.ops.pydet_ops.complete_box_iou(b1, b2, eps),
}


def _pairwise(kind: str, op: str, boxes1: Tensor, boxes2: Tensor, eps: float) -> Tensor:
    check_tensor(op, "boxes1", boxes1)
    check_tensor(op, "boxes2", boxes2)
    check_same_device(op, boxes1=boxes1, boxes2=boxes2)
    _check_real(op, "boxes1", boxes1)
    _check_real(op, "boxes2", boxes2)
    if torch.is_grad_enabled() and (boxes1.requires_grad or boxes2.requires_grad):
        # Gradients flow through the same formulas written as tensor ops.
        return _overlap_composite(kind, boxes1, boxes2, eps)
    if not (boxes1.is_floating_point() and boxes2.is_floating_point()):
        # Integer boxes: the result is float64 if the other set is float64, else float32 (as torchvision);
        # compute exactly in float64, then round once.
        wide = torch.float64 in (boxes1.dtype, boxes2.dtype)
        b1, b2 = boxes1.to(torch.float64), boxes2.to(torch.float64)
        result = _OVERLAP_OPS[kind](b1, b2, eps)
        return result if wide else result.to(torch.float32)
    return _OVERLAP_OPS[kind](boxes1, boxes2, eps)


def _to_xyxy(boxes: Tensor, fmt: str, op: str, name: str) -> Tensor:
    if fmt == "xyxy":
        return boxes
    if fmt in _AXIS_ALIGNED_FMTS:
        _check_boxes(op, boxes, name)
        return _convert(boxes, fmt, "xyxy")
    if fmt in _ROTATED_FMTS:
        raise NotImplementedError(f"{op}: rotated box format '{fmt}' is not supported by pydet_ops")
    raise ValueError(
        f"{op}: unsupported format '{fmt}'. Supported axis-aligned formats: {_AXIS_ALIGNED_FMTS}."
    )


def box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """Pairwise intersection over union.

    Args:
        boxes1 (Tensor[..., N, 4]): first set of boxes.
        boxes2 (Tensor[..., M, 4]): second set; leading dimensions broadcast with those of ``boxes1``.
        fmt (str): ``'xyxy'`` (default), ``'xywh'`` or ``'cxcywh'``. Rotated formats raise
            ``NotImplementedError``.

    Returns:
        Tensor[..., N, M]: float64 for float64 input, float32 otherwise (as torchvision).

    Differentiable with respect to both inputs. Integer boxes are accepted (result float32, or float64 when
    the other set is float64). For float32 input the values equal torchvision's bit for bit; float16 and
    bfloat16 input is computed in float32 from the exact input values (torchvision rounds the intersection
    sides to half first).
    """
    boxes1 = _to_xyxy(boxes1, fmt, "box_iou", "boxes1")
    return _pairwise("iou", "box_iou", boxes1, _to_xyxy(boxes2, fmt, "box_iou", "boxes2"), 0.0)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU: ``iou - (enclosing_area - union) / enclosing_area``.

    Args:
        boxes1 (Tensor[..., N, 4]): boxes in ``(x1, y1, x2, y2)`` format.
        boxes2 (Tensor[..., M, 4]): boxes in ``(x1, y1, x2, y2)`` format.

    Returns:
        Tensor[..., N, M]: float64 for float64 input, float32 otherwise. Same rules as :func:`box_iou`.
    """
    return _pairwise("giou", "generalized_box_iou", boxes1, boxes2, 0.0)


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise distance IoU: ``iou - centre_distance**2 / (enclosing_diagonal**2 + eps)``.

    Args:
        boxes1 (Tensor[..., N, 4]): boxes in ``(x1, y1, x2, y2)`` format.
        boxes2 (Tensor[..., M, 4]): boxes in ``(x1, y1, x2, y2)`` format.
        eps (float): added to the squared diagonal to avoid division by zero. Default: 1e-7.

    Returns:
        Tensor[..., N, M]: float64 for float64 input, float32 otherwise. Same rules as :func:`box_iou`.
    """
    return _pairwise("diou", "distance_box_iou", boxes1, boxes2, as_float("distance_box_iou", "eps", eps))


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise complete IoU: distance IoU minus the aspect-ratio consistency term ``alpha * v``.

    Args:
        boxes1 (Tensor[..., N, 4]): boxes in ``(x1, y1, x2, y2)`` format.
        boxes2 (Tensor[..., M, 4]): boxes in ``(x1, y1, x2, y2)`` format.
        eps (float): small number to prevent division by zero. Default: 1e-7.

    Returns:
        Tensor[..., N, M]: float64 for float64 input, float32 otherwise. Same rules as :func:`box_iou`;
        ``alpha`` is treated as a constant for gradients, as in torchvision.
    """
    return _pairwise("ciou", "complete_box_iou", boxes1, boxes2, as_float("complete_box_iou", "eps", eps))


# ---------------------------------------------------------------------------------------------------------
# Elementwise box helpers (PyTorch)
# ---------------------------------------------------------------------------------------------------------


def box_area(boxes: Tensor, fmt: str = "xyxy") -> Tensor:
    """Area of each box.

    Args:
        boxes (Tensor[..., 4]): boxes in ``fmt`` format.
        fmt (str): ``'xyxy'`` (default), ``'xywh'`` or ``'cxcywh'``.

    Returns:
        Tensor[...]: areas; half types and small integers are upcast as in torchvision. Inverted boxes have a
        negative area. Boxes that are not a real tensor of shape [..., 4] raise ``ValueError``.
    """
    if fmt not in _AXIS_ALIGNED_FMTS:
        raise ValueError(f"box_area: unsupported format '{fmt}', expected one of {_AXIS_ALIGNED_FMTS}")
    _check_boxes("box_area", boxes)
    boxes = _upcast(boxes)
    if fmt == "xyxy":
        return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return boxes[..., 2] * boxes[..., 3]


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Converts boxes between ``'xyxy'``, ``'xywh'`` and ``'cxcywh'``.

    Args:
        boxes (Tensor[..., 4]): boxes in ``in_fmt``.
        in_fmt (str): format of ``boxes``.
        out_fmt (str): wanted format.

    Returns:
        Tensor[..., 4]: converted boxes (a copy, also when ``in_fmt == out_fmt``). Rotated formats raise
        ``NotImplementedError``; unknown names, and boxes that are not a real tensor of shape [..., 4], raise
        ``ValueError``.
    """
    for fmt in (in_fmt, out_fmt):
        if fmt in _ROTATED_FMTS:
            raise NotImplementedError(f"box_convert: rotated box format '{fmt}' is not supported by pydet_ops")
        if fmt not in _AXIS_ALIGNED_FMTS:
            raise ValueError(
                f"Unsupported Bounding Box Conversions for given in_fmt {in_fmt} and out_fmt {out_fmt}"
            )
    _check_boxes("box_convert", boxes)
    return _convert(boxes, in_fmt, out_fmt)


def _convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """box_convert for checked arguments."""
    if in_fmt == out_fmt:
        return boxes.clone()
    # One elementwise op per output coordinate on [...] views, then one stack: fewer passes over strided
    # [..., 2] slices than slicing pairs of columns.
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        half_w, half_h = 0.5 * c, 0.5 * d
        a, b, c, d = a - half_w, b - half_h, a + half_w, b + half_h
    # (a, b, c, d) is xyxy now
    if out_fmt == "xywh":
        return torch.stack((a, b, c - a, d - b), dim=-1)
    if out_fmt == "cxcywh":
        return torch.stack(((a + c) / 2, (b + d) / 2, c - a, d - b), dim=-1)
    return torch.stack((a, b, c, d), dim=-1)


def clip_boxes_to_image(boxes: Tensor, size: Tuple[int, int]) -> Tensor:
    """Clamps ``(x1, y1, x2, y2)`` boxes to an image of ``size = (height, width)``.

    Args:
        boxes (Tensor[..., 4]): boxes in ``(x1, y1, x2, y2)`` format.
        size (Tuple[height, width]): image size, two non-negative numbers (``ValueError`` otherwise).

    Returns:
        Tensor[..., 4]: clipped boxes, same dtype. NaN coordinates stay NaN.
    """
    _check_boxes("clip_boxes_to_image", boxes)
    height, width = as_pair("clip_boxes_to_image", "size", size, as_number)
    if not (height >= 0 and width >= 0):
        raise ValueError(f"clip_boxes_to_image: size must be two non-negative numbers (height, width), got {size!r}")
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices of the boxes whose width and height are both ``>= min_size``.

    Args:
        boxes (Tensor[N, 4]): boxes in ``(x1, y1, x2, y2)`` format.
        min_size (float): minimum side length (NaN removes every box).

    Returns:
        Tensor[K]: int64 indices of the boxes kept (boxes with NaN sides are removed).
    """
    _check_boxes("remove_small_boxes", boxes, exact_dim=2)
    min_size = as_float("remove_small_boxes", "min_size", min_size)
    ws = boxes[..., 2] - boxes[..., 0]
    hs = boxes[..., 3] - boxes[..., 1]
    return torch.where((ws >= min_size) & (hs >= min_size))[0]
