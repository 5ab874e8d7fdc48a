"""Autograd formulas of the RoI ops: each backward is an op of its own (traceable, exportable).

The RoI ops are linear in their feature maps, so their backward ops are linear in the output gradient and
differentiating a backward is the forward again: double backward (e.g. gradient penalties) is exact.
"""

import torch

from . import _fake  # noqa: F401  (ops and fake kernels registered first)


# roi_align ------------------------------------------------------------------------------------------------


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    return torch._prims_common.suggest_memory_format(t)


def _roi_align_setup(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.input_shape = tuple(input.shape)
    ctx.input_format = _memory_format(input)
    ctx.args = (spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)


def _roi_align_backward(ctx, grad):
    (rois,) = ctx.saved_tensors
    spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = ctx.args
    batch, channels, height, width = ctx.input_shape
    # The backward op returns grad's layout; the input's is the one worth producing (and converting the
    # pooled gradient is cheaper than converting the feature-map gradient).
    grad = grad.contiguous(memory_format=ctx.input_format)
    grad_input = torch.ops.pydet_ops._roi_align_backward(
        grad, rois, spatial_scale, pooled_height, pooled_width, batch, channels, height, width, sampling_ratio, aligned
    )
    return grad_input, None, None, None, None, None, None


torch.library.register_autograd("pydet_ops::roi_align", _roi_align_backward, setup_context=_roi_align_setup)
def _roi_align_backward_setup(ctx, inputs, output):
    grad, rois, spatial_scale, pooled_height, pooled_width, _, _, _, _, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.args = (spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)


def _roi_align_double_backward(ctx, grad_grad_input):
    (rois,) = ctx.saved_tensors
    grad_grad = torch.ops.pydet_ops.roi_align(grad_grad_input, rois, *ctx.args)
    return (grad_grad,) + (None,) * 10


torch.library.register_autograd(
    "pydet_ops::_roi_align_backward", _roi_align_double_backward, setup_context=_roi_align_backward_setup
)


# roi_pool -------------------------------------------------------------------------------------------------


def _roi_pool_setup(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width = inputs
    ctx.save_for_backward(rois, output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.input_shape = tuple(input.shape)
    ctx.input_format = _memory_format(input)
    ctx.args = (spatial_scale, pooled_height, pooled_width)


def _roi_pool_backward(ctx, grad, grad_argmax):
    rois, argmax = ctx.saved_tensors
    spatial_scale, pooled_height, pooled_width = ctx.args
    batch, channels, height, width = ctx.input_shape
    grad = grad.contiguous(memory_format=ctx.input_format)
    grad_input = torch.ops.pydet_ops._roi_pool_backward(
        grad, rois, argmax, spatial_scale, pooled_height, pooled_width, batch, channels, height, width
    )
    return grad_input, None, None, None, None


torch.library.register_autograd("pydet_ops::roi_pool", _roi_pool_backward, setup_context=_roi_pool_setup)
def _roi_pool_backward_setup(ctx, inputs, output):
    grad, rois, argmax = inputs[:3]
    ctx.save_for_backward(rois, argmax)


def _roi_pool_double_backward(ctx, grad_grad_input):
    # d(grad_input)/d(grad) routes each output cell to its argmax cell: the transpose is a gather.
    rois, argmax = ctx.saved_tensors
    k, c = argmax.shape[:2]
    planes = grad_grad_input.flatten(2)[rois[:, 0].long()]  # [K, C, H * W]
    index = argmax.flatten(2).long()
    picked = planes.gather(2, index.clamp(min=0)) * (index >= 0)
    return (picked.view_as(argmax).to(grad_grad_input.dtype),) + (None,) * 9


torch.library.register_autograd(
    "pydet_ops::_roi_pool_backward", _roi_pool_double_backward, setup_context=_roi_pool_backward_setup
)


# multi_scale_roi_align ------------------------------------------------------------------------------------


def _multi_scale_setup(ctx, inputs, output):
    features, rois, spatial_scales, pooled_height, pooled_width, sampling_ratio, canonical_scale, canonical_level = inputs
    ctx.save_for_backward(rois)
    ctx.feature_sizes = [s for f in features for s in f.shape]
    ctx.input_format = _memory_format(features[0])
    ctx.args = (spatial_scales, pooled_height, pooled_width, sampling_ratio, canonical_scale, canonical_level)


def _multi_scale_backward(ctx, grad):
    (rois,) = ctx.saved_tensors
    grad = grad.contiguous(memory_format=ctx.input_format)
    grads = torch.ops.pydet_ops._multi_scale_roi_align_backward(grad, rois, *ctx.args, ctx.feature_sizes)
    return list(grads), None, None, None, None, None, None, None


torch.library.register_autograd(
    "pydet_ops::multi_scale_roi_align", _multi_scale_backward, setup_context=_multi_scale_setup
)
def _multi_scale_backward_setup(ctx, inputs, output):
    grad, rois = inputs[:2]
    ctx.save_for_backward(rois)
    ctx.args = tuple(inputs[2:8])


def _multi_scale_double_backward(ctx, grad_grads):
    (rois,) = ctx.saved_tensors
    grad_grad = torch.ops.pydet_ops.multi_scale_roi_align(list(grad_grads), rois, *ctx.args)
    return (grad_grad,) + (None,) * 8


torch.library.register_autograd(
    "pydet_ops::_multi_scale_roi_align_backward",
    _multi_scale_double_backward,
    setup_context=_multi_scale_backward_setup,
)


# Box coding -----------------------------------------------------------------------------------------------
#
# The coders are smooth almost everywhere and cheap next to what surrounds them in a detector, so their
# gradients are those of the same formula written as tensor ops (torchvision's), recomputed in backward.
# Differentiating through the recomputation keeps higher-order gradients exact as well.


def _frame(boxes):
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return w, h, boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h


def _encode_formula(reference_boxes, proposals, weights):
    dtype = torch.promote_types(reference_boxes.dtype, proposals.dtype)
    gw, gh, gcx, gcy = _frame(reference_boxes.to(dtype))
    pw, ph, pcx, pcy = _frame(proposals.to(dtype))
    wx, wy, ww, wh = weights
    return torch.stack(
        (wx * (gcx - pcx) / pw, wy * (gcy - pcy) / ph, ww * torch.log(gw / pw), wh * torch.log(gh / ph)), dim=1
    )


def _decode_formula(rel_codes, boxes, weights, clip):
    w, h, cx, cy = _frame(boxes.to(rel_codes.dtype))
    codes = rel_codes.reshape(rel_codes.shape[0], -1, 4)
    wx, wy, ww, wh = weights
    dw = torch.clamp(codes[..., 2] / ww, max=clip)
    dh = torch.clamp(codes[..., 3] / wh, max=clip)
    pcx = codes[..., 0] / wx * w[:, None] + cx[:, None]
    pcy = codes[..., 1] / wy * h[:, None] + cy[:, None]
    half_w = 0.5 * (torch.exp(dw) * w[:, None])
    half_h = 0.5 * (torch.exp(dh) * h[:, None])
    return torch.stack((pcx - half_w, pcy - half_h, pcx + half_w, pcy + half_h), dim=2).flatten(1)


def _regrad(formula, tensors, grad, *args):
    wanted = [t for t in tensors if t.requires_grad]
    grads = iter(())
    if wanted:
        # Grad mode is on in backward exactly when a graph of the gradient is asked for (create_graph=True).
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            out = formula(*tensors, *args)
            grads = iter(torch.autograd.grad(out, wanted, grad, create_graph=create_graph))
    return [next(grads) if t.requires_grad else None for t in tensors]


def _encode_setup(ctx, inputs, output):
    reference_boxes, proposals, weights = inputs
    ctx.save_for_backward(reference_boxes, proposals)
    ctx.weights = weights


def _encode_backward(ctx, grad):
    reference_boxes, proposals = ctx.saved_tensors
    g_ref, g_prop = _regrad(_encode_formula, (reference_boxes, proposals), grad, ctx.weights)
    return g_ref, g_prop, None


torch.library.register_autograd("pydet_ops::encode_boxes", _encode_backward, setup_context=_encode_setup)


def _decode_setup(ctx, inputs, output):
    rel_codes, boxes, weights, clip = inputs
    ctx.save_for_backward(rel_codes, boxes)
    ctx.args = (weights, clip)


def _decode_backward(ctx, grad):
    rel_codes, boxes = ctx.saved_tensors
    g_codes, g_boxes = _regrad(_decode_formula, (rel_codes, boxes), grad, *ctx.args)
    return g_codes, g_boxes, None, None


torch.library.register_autograd("pydet_ops::decode_boxes", _decode_backward, setup_context=_decode_setup)
