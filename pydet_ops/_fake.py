"""Fake (meta) kernels: output shapes and dtypes for torch.compile, torch.export and FakeTensor tracing.

A call that mixes devices where one is meta (CPU + meta) dispatches here rather than to a compiled kernel, so
every fake kernel makes the compiled kernels' device check first, with their message.
"""

import torch

from ._args import same_device_error
from ._extension import load

load()


def _check_same_device(op: str, **tensors: torch.Tensor) -> None:
    """The compiled kernels' error (RuntimeError) unless every tensor is on the first one's device."""
    message = same_device_error(op, tensors.items())
    if message is not None:
        raise RuntimeError(message)


def _overlap_dtype(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.dtype:
    common = torch.promote_types(boxes1.dtype, boxes2.dtype)
    return torch.float64 if common == torch.float64 else torch.float32


def _check_box_shapes(boxes1: torch.Tensor, boxes2: torch.Tensor) -> None:
    torch._check(boxes1.dim() >= 2 and boxes1.shape[-1] == 4, lambda: "boxes1 must have shape [..., N, 4]")
    torch._check(boxes2.dim() >= 2 and boxes2.shape[-1] == 4, lambda: "boxes2 must have shape [..., M, 4]")


def _overlap_fake(op: str):
    def fake(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
        _check_same_device(op, boxes1=boxes1, boxes2=boxes2)
        _check_box_shapes(boxes1, boxes2)
        batch = torch.broadcast_shapes(boxes1.shape[:-2], boxes2.shape[:-2])
        shape = (*batch, boxes1.shape[-2], boxes2.shape[-2])
        return boxes1.new_empty(shape, dtype=_overlap_dtype(boxes1, boxes2))

    return fake


for _op in ("box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou"):
    torch.library.register_fake(f"pydet_ops::{_op}")(_overlap_fake(_op))


def _kept_indices_fake(boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    # (devices checked by the caller)
    torch._check(boxes.dim() == 2 and boxes.shape[1] == 4, lambda: "boxes must have shape [N, 4]")
    torch._check(scores.dim() == 1 and scores.shape[0] == boxes.shape[0], lambda: "scores must have shape [N]")
    # How many boxes survive depends on the data.
    count = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((count,), dtype=torch.int64)


@torch.library.register_fake("pydet_ops::nms")
def _nms_fake(boxes, scores, iou_threshold):
    _check_same_device("nms", boxes=boxes, scores=scores)
    return _kept_indices_fake(boxes, scores)


@torch.library.register_fake("pydet_ops::batched_nms")
def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
    _check_same_device("batched_nms", boxes=boxes, scores=scores, idxs=idxs)
    torch._check(idxs.dim() == 1 and idxs.shape[0] == boxes.shape[0], lambda: "idxs must have shape [N]")
    return _kept_indices_fake(boxes, scores)


def _fixed_fake(boxes: torch.Tensor, max_output: int):
    torch._check(max_output >= 0, lambda: "max_output must be non-negative")
    return boxes.new_empty((max_output,), dtype=torch.int64), boxes.new_empty((), dtype=torch.int64)


@torch.library.register_fake("pydet_ops::nms_fixed")
def _nms_fixed_fake(boxes, scores, iou_threshold, max_output):
    _check_same_device("nms_fixed", boxes=boxes, scores=scores)
    torch._check(boxes.dim() == 2 and boxes.shape[1] == 4, lambda: "boxes must have shape [N, 4]")
    torch._check(scores.dim() == 1 and scores.shape[0] == boxes.shape[0], lambda: "scores must have shape [N]")
    return _fixed_fake(boxes, max_output)


@torch.library.register_fake("pydet_ops::batched_nms_fixed")
def _batched_nms_fixed_fake(boxes, scores, idxs, iou_threshold, max_output):
    _check_same_device("batched_nms_fixed", boxes=boxes, scores=scores, idxs=idxs)
    torch._check(boxes.dim() == 2 and boxes.shape[1] == 4, lambda: "boxes must have shape [N, 4]")
    torch._check(scores.dim() == 1 and scores.shape[0] == boxes.shape[0], lambda: "scores must have shape [N]")
    torch._check(idxs.dim() == 1 and idxs.shape[0] == boxes.shape[0], lambda: "idxs must have shape [N]")
    return _fixed_fake(boxes, max_output)


# ---------------------------------------------------------------------------------------------------------
# RoI ops
# ---------------------------------------------------------------------------------------------------------


def _format_of(t: torch.Tensor) -> torch.memory_format:
    return torch._prims_common.suggest_memory_format(t)


def _empty_like_format(shape, like: torch.Tensor, dtype=None) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device, memory_format=_format_of(like))


def _check_rois(rois: torch.Tensor) -> None:
    torch._check(rois.dim() == 2 and rois.shape[1] == 5, lambda: "rois must have shape [K, 5]")


@torch.library.register_fake("pydet_ops::roi_align")
def _roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    _check_same_device("roi_align", input=input, rois=rois)
    torch._check(input.dim() == 4, lambda: "input must be a 4-D tensor")
    _check_rois(rois)
    return _empty_like_format((rois.shape[0], input.shape[1], pooled_height, pooled_width), input)


@torch.library.register_fake("pydet_ops::_roi_align_backward")
def _roi_align_backward_fake(
    grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width, sampling_ratio, aligned
):
    _check_same_device("_roi_align_backward", grad=grad, rois=rois)
    return _empty_like_format((batch_size, channels, height, width), grad)


@torch.library.register_fake("pydet_ops::roi_pool")
def _roi_pool_fake(input, rois, spatial_scale, pooled_height, pooled_width):
    _check_same_device("roi_pool", input=input, rois=rois)
    torch._check(input.dim() == 4, lambda: "input must be a 4-D tensor")
    _check_rois(rois)
    shape = (rois.shape[0], input.shape[1], pooled_height, pooled_width)
    return _empty_like_format(shape, input), _empty_like_format(shape, input, dtype=torch.int32)


@torch.library.register_fake("pydet_ops::_roi_pool_backward")
def _roi_pool_backward_fake(
    grad, rois, argmax, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width
):
    _check_same_device("_roi_pool_backward", grad=grad, rois=rois, argmax=argmax)
    return _empty_like_format((batch_size, channels, height, width), grad)


@torch.library.register_fake("pydet_ops::multi_scale_roi_align")
def _multi_scale_roi_align_fake(
    features, rois, spatial_scales, pooled_height, pooled_width, sampling_ratio, canonical_scale, canonical_level
):
    torch._check(len(features) > 0, lambda: "features must hold at least one feature map")
    _check_same_device(
        "multi_scale_roi_align", **{f"features[{i}]": f for i, f in enumerate(features)}, rois=rois
    )
    _check_rois(rois)
    first = features[0]
    return _empty_like_format((rois.shape[0], first.shape[1], pooled_height, pooled_width), first)


@torch.library.register_fake("pydet_ops::_multi_scale_roi_align_backward")
def _multi_scale_roi_align_backward_fake(
    grad, rois, spatial_scales, pooled_height, pooled_width, sampling_ratio, canonical_scale, canonical_level,
    feature_sizes,
):
    _check_same_device("_multi_scale_roi_align_backward", grad=grad, rois=rois)
    return [_empty_like_format(tuple(feature_sizes[i : i + 4]), grad) for i in range(0, len(feature_sizes), 4)]


# ---------------------------------------------------------------------------------------------------------
# Anchors and box coding
# ---------------------------------------------------------------------------------------------------------


@torch.library.register_fake("pydet_ops::grid_anchors")
def _grid_anchors_fake(cell_anchors, anchors_per_level, grid_sizes, strides, offset=0.0):
    torch._check(cell_anchors.dim() == 2 and cell_anchors.shape[1] == 4, lambda: "cell_anchors must be [A, 4]")
    total = sum(
        grid_sizes[2 * i] * grid_sizes[2 * i + 1] * count for i, count in enumerate(anchors_per_level)
    )
    return cell_anchors.new_empty((total, 4))


@torch.library.register_fake("pydet_ops::encode_boxes")
def _encode_boxes_fake(reference_boxes, proposals, weights):
    _check_same_device("encode_boxes", reference_boxes=reference_boxes, proposals=proposals)
    torch._check(reference_boxes.dim() == 2 and reference_boxes.shape[1] == 4, lambda: "reference_boxes: [N, 4]")
    torch._check(proposals.shape == reference_boxes.shape, lambda: "proposals must have reference_boxes' shape")
    dtype = torch.promote_types(reference_boxes.dtype, proposals.dtype)
    return reference_boxes.new_empty(reference_boxes.shape, dtype=dtype)


@torch.library.register_fake("pydet_ops::decode_boxes")
def _decode_boxes_fake(rel_codes, boxes, weights, bbox_xform_clip):
    _check_same_device("decode_boxes", rel_codes=rel_codes, boxes=boxes)
    torch._check(rel_codes.dim() == 2 and rel_codes.shape[1] % 4 == 0, lambda: "rel_codes must be [N, 4 * K]")
    torch._check(boxes.dim() == 2 and boxes.shape[0] == rel_codes.shape[0], lambda: "boxes must be [N, 4]")
    return rel_codes.new_empty(rel_codes.shape)
