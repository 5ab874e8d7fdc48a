"""Fake (meta) kernels: output shapes and dtypes for torch.compile, torch.export and FakeTensor tracing."""

import torch

from ._extension import load

load()


def _overlap_dtype(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.dtype:
    common = torch.promote_types(boxes1.dtype, boxes2.dtype)
    return torch.float64 if common == torch.float64 else torch.float32


def _check_box_shapes(boxes1: torch.Tensor, boxes2: torch.Tensor) -> None:
    torch._check(boxes1.dim() >= 2 and boxes1.shape[-1] == 4, lambda: "boxes1 must have shape [..., N, 4]")
    torch._check(boxes2.dim() >= 2 and boxes2.shape[-1] == 4, lambda: "boxes2 must have shape [..., M, 4]")


def _overlap_fake(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    _check_box_shapes(boxes1, boxes2)
    batch = torch.broadcast_shapes(boxes1.shape[:-2], boxes2.shape[:-2])
    shape = (*batch, boxes1.shape[-2], boxes2.shape[-2])
    return boxes1.new_empty(shape, dtype=_overlap_dtype(boxes1, boxes2))


torch.library.register_fake("pydet_ops::box_iou")(lambda boxes1, boxes2: _overlap_fake(boxes1, boxes2))
torch.library.register_fake("pydet_ops::generalized_box_iou")(lambda boxes1, boxes2: _overlap_fake(boxes1, boxes2))
torch.library.register_fake("pydet_ops::distance_box_iou")(_overlap_fake)
torch.library.register_fake("pydet_ops::complete_box_iou")(_overlap_fake)


def _kept_indices_fake(boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    torch._check(boxes.dim() == 2 and boxes.shape[1] == 4, lambda: "boxes must have shape [N, 4]")
    torch._check(scores.dim() == 1 and scores.shape[0] == boxes.shape[0], lambda: "scores must have shape [N]")
    # How many boxes survive depends on the data.
    count = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((count,), dtype=torch.int64)


@torch.library.register_fake("pydet_ops::nms")
def _nms_fake(boxes, scores, iou_threshold):
    return _kept_indices_fake(boxes, scores)


@torch.library.register_fake("pydet_ops::batched_nms")
def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
    torch._check(idxs.dim() == 1 and idxs.shape[0] == boxes.shape[0], lambda: "idxs must have shape [N]")
    return _kept_indices_fake(boxes, scores)
