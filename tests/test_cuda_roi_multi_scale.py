"""CUDA tests of MultiScaleRoIAlign, of the RoI ops' deterministic backward and of autocast. What the
comparisons mean: cuda_helpers.py.
"""

import pytest
import torch
import torchvision.ops as tvo

import pydet_ops as ops
from cuda_helpers import (
    DEVICE,
    FLOAT_DTYPES,
    FORMATS,
    MSRA_NAMES,
    NAN,
    NONDET_TOL,
    RAW,
    _SKIP_REASON,
    _gen,
    _msra_grad,
    _randn,
    assert_bitwise,
    assert_close_ulps,
    assert_format,
    assert_forward_parity,
    assert_grad_parity,
    deterministic_algorithms,
    dev,
    leaf,
    needs,
)
from roi_reference import awkward_rois, clustered_rois
from test_multi_scale_roi_align import IMAGE_SHAPES as MSRA_IMAGE_SHAPES
from test_multi_scale_roi_align import _boxes as msra_boxes
from test_multi_scale_roi_align import _features as msra_features
from test_multi_scale_roi_align import _leaves as msra_leaves
from test_multi_scale_roi_align import _raw_case as msra_raw_case
from test_roi_align import C as ALIGN_C
from test_roi_align import H as ALIGN_H
from test_roi_align import N as ALIGN_N
from test_roi_align import W as ALIGN_W
from test_roi_align import _map as align_map
from test_roi_align import _torchvision_safe

pytestmark = pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or "")


# ---------------------------------------------------------------------------------------------------------
# MultiScaleRoIAlign
# ---------------------------------------------------------------------------------------------------------


def _run_msra(device, names, output_size, sampling_ratio, x, boxes, fmt, grad, module=None, **kwargs):
    pooler = (module or ops.MultiScaleRoIAlign)(names, output_size, sampling_ratio, **kwargs)
    leaves = msra_leaves({k: v.to(device) for k, v in x.items()}, fmt)
    out = pooler(leaves, [b.to(device) for b in boxes], MSRA_IMAGE_SHAPES)
    out.backward(grad.to(device))
    return out, {k: leaves[k].grad for k in names}


@needs("multi_scale_roi_align", "_multi_scale_roi_align_backward", "roi_align", "_roi_align_backward")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("output_size", [7, (3, 5)], ids=["7", "3x5"])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_multi_scale_roi_align_matches_cpu(fmt, sampling_ratio, output_size, dtype):
    x, boxes = msra_features(seed=91 + sampling_ratio, dtype=dtype), msra_boxes(seed=92 + sampling_ratio)
    channels = x["0"].shape[1]
    grad = _msra_grad(boxes, channels, output_size, seed=93, dtype=dtype)
    out, grads = _run_msra(DEVICE, MSRA_NAMES, output_size, sampling_ratio, x, boxes, fmt, grad)
    expected, expected_grads = _run_msra(torch.device("cpu"), MSRA_NAMES, output_size, sampling_ratio, x, boxes, fmt,
                                         grad)
    assert out.dtype == dtype
    assert_format(out, fmt)
    assert_forward_parity(out, expected)
    for name in MSRA_NAMES:
        assert_format(grads[name], fmt)
        assert_grad_parity(grads[name], expected_grads[name])


@needs("multi_scale_roi_align", "_multi_scale_roi_align_backward", "roi_align", "_roi_align_backward")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_multi_scale_roi_align_matches_torchvision(fmt, sampling_ratio, dtype):
    x, boxes = msra_features(seed=94 + sampling_ratio, dtype=dtype), msra_boxes(seed=95 + sampling_ratio, dtype=dtype)
    grad = _msra_grad(boxes, x["0"].shape[1], 7, seed=96, dtype=dtype)
    out, grads = _run_msra(DEVICE, MSRA_NAMES, 7, sampling_ratio, x, boxes, fmt, grad)
    theirs, their_grads = _run_msra(DEVICE, MSRA_NAMES, 7, sampling_ratio, x, boxes, torch.contiguous_format, grad,
                                    module=tvo.MultiScaleRoIAlign)
    assert_close_ulps(out, theirs, ulps=16)
    for name in MSRA_NAMES:
        assert_close_ulps(grads[name], their_grads[name], ulps=64)


@needs("multi_scale_roi_align", "_multi_scale_roi_align_backward", "roi_align", "_roi_align_backward")
def test_multi_scale_roi_align_level_subsets_formats_and_canonical_level_match_cpu():
    cl, nchw = torch.channels_last, torch.contiguous_format
    mixed = {"0": cl, "1": nchw, "2": cl, "3": nchw, "pool": nchw}
    cases = [
        (["1", "2"], {}, cl),
        (["1", "3"], {}, cl),  # a level without a map pools its boxes to zero
        (["3", "0"], {}, nchw),
        (["2"], {}, cl),  # one map: every box goes to roi_align
        (MSRA_NAMES, {}, mixed),
        (MSRA_NAMES, {"canonical_scale": 112, "canonical_level": 3}, nchw),
    ]
    x, boxes = msra_features(seed=97), msra_boxes(seed=98)
    for names, kwargs, fmt in cases:
        grad = _msra_grad(boxes, x["0"].shape[1], (4, 3), seed=99, dtype=torch.float32)
        out, grads = _run_msra(DEVICE, names, (4, 3), 2, x, boxes, fmt, grad, **kwargs)
        expected, expected_grads = _run_msra(torch.device("cpu"), names, (4, 3), 2, x, boxes, fmt, grad, **kwargs)
        assert_bitwise(out, expected)
        for name in names:
            assert_grad_parity(grads[name], expected_grads[name])


@needs("multi_scale_roi_align", "_multi_scale_roi_align_backward")
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_multi_scale_roi_align_boxes_without_area_and_no_boxes(fmt):
    good = torch.tensor([[10.0, 12.0, 60.0, 70.0], [3.0, 4.0, 9.0, 8.0]])
    bad = torch.tensor([[60.0, 12.0, 10.0, 70.0], [10.0, 70.0, 60.0, 12.0], [NAN, 1.0, 5.0, 5.0], [1.0, 1.0, 5.0, NAN]])
    boxes = [torch.cat([good[:1], bad, good[1:]]), bad.flip(0)]
    x = msra_features(seed=100)
    grad = _msra_grad(boxes, x["0"].shape[1], 3, seed=101, dtype=torch.float32)
    out, grads = _run_msra(DEVICE, MSRA_NAMES, 3, 2, x, boxes, fmt, grad)
    expected, expected_grads = _run_msra(torch.device("cpu"), MSRA_NAMES, 3, 2, x, boxes, fmt, grad)
    assert int(torch.count_nonzero(out[1:5])) == 0 and int(torch.count_nonzero(out[6:])) == 0
    assert_bitwise(out, expected)
    for name in MSRA_NAMES:
        assert_grad_parity(grads[name], expected_grads[name])
    leaves = msra_leaves(dev(x), fmt)
    empty = ops.MultiScaleRoIAlign(MSRA_NAMES, (2, 3), 2)(leaves, [torch.zeros(0, 4, device=DEVICE)] * 2,
                                                          MSRA_IMAGE_SHAPES)
    assert empty.shape == (0, x["0"].shape[1], 2, 3)
    empty.sum().backward()
    assert all(int(torch.count_nonzero(leaves[name].grad)) == 0 for name in MSRA_NAMES)


@needs("multi_scale_roi_align", "_multi_scale_roi_align_backward")
def test_multi_scale_roi_align_raw_op_gradcheck_and_opcheck_on_cuda():
    feats, rois, scales, cs, cl = msra_raw_case()
    feats, rois = dev(feats), dev(rois)
    leaves = [t.clone().requires_grad_() for t in feats]

    def fn(a, b):
        return RAW.multi_scale_roi_align([a, b], rois, scales, 2, 3, 2, cs, cl)

    assert torch.autograd.gradcheck(fn, tuple(leaves), nondet_tol=NONDET_TOL)
    assert torch.autograd.gradgradcheck(fn, tuple(leaves), nondet_tol=NONDET_TOL)
    for dtype in (torch.float32, torch.float64):
        for fmt in FORMATS.values():
            for requires_grad in (False, True):
                f = [t.to(dtype).contiguous(memory_format=fmt).clone().requires_grad_(requires_grad) for t in feats]
                torch.library.opcheck(RAW.multi_scale_roi_align.default, (f, rois.to(dtype), scales, 2, 3, 2, cs, cl))
    grad = dev(_randn(rois.shape[0], 3, 2, 3, seed=102, dtype=torch.float64))
    sizes = [s for t in feats for s in t.shape]
    torch.library.opcheck(RAW._multi_scale_roi_align_backward.default, (grad, rois, scales, 2, 3, 2, cs, cl, sizes))


# ---------------------------------------------------------------------------------------------------------
# Deterministic backward (torch.use_deterministic_algorithms)
# ---------------------------------------------------------------------------------------------------------


def _deterministic_case(op, fmt, dtype):
    """``run(device=DEVICE)``: the input gradients of ``op`` (a list of tensors) for RoIs that overlap heavily,
    so that many atomic additions go to the same cells."""
    if op in ("roi_align", "roi_pool"):
        x = _randn(2, 32, 24, 32, seed=111, dtype=dtype)
        rois = clustered_rois(300, 2, 24, 32, seed=112)
        grad = _randn(300, 32, 7, 7, seed=113, dtype=dtype)

        def run(device=DEVICE):
            xin = leaf(x, fmt, device)
            if op == "roi_align":
                out = ops.roi_align(xin, rois.to(device), 7, 1.0, 2, False)
            else:
                out = ops.roi_pool(xin, rois.to(device), 7, 1.0)
            out.backward(grad.to(device))
            return [xin.grad]

        return run
    x = msra_features(seed=114, dtype=dtype)
    g = _gen(115)
    base = torch.tensor([[10.0, 12.0, 18.0, 22.0], [30.0, 20.0, 90.0, 100.0], [5.0, 8.0, 140.0, 120.0]])
    boxes = [torch.cat([base.repeat(60, 1) + torch.randn(180, 4, generator=g),
                        torch.tensor([[0.0, 0.0, 1000.0, 1200.0]]).repeat(20, 1)]) for _ in range(2)]
    grad = _msra_grad(boxes, x["0"].shape[1], 7, seed=116, dtype=dtype)

    def run(device=DEVICE):
        _, grads = _run_msra(device, MSRA_NAMES, 7, 2, x, boxes, fmt, grad)
        return [grads[name] for name in MSRA_NAMES]

    return run


@needs("roi_align", "_roi_align_backward", "roi_pool", "_roi_pool_backward", "multi_scale_roi_align",
       "_multi_scale_roi_align_backward")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("op", ["roi_align", "roi_pool", "multi_scale_roi_align"])
def test_deterministic_backward_is_reproducible(op, fmt, dtype):
    run = _deterministic_case(op, fmt, dtype)
    default = run()
    with deterministic_algorithms():
        first = run()
        for _ in range(2):
            for again, expected in zip(run(), first):
                assert torch.equal(again, expected)
    for det, nondet, cpu in zip(first, default, run(torch.device("cpu"))):
        assert_format(det, fmt)
        assert_grad_parity(det, nondet)
        assert_grad_parity(det, cpu)


# ---------------------------------------------------------------------------------------------------------
# Autocast
# ---------------------------------------------------------------------------------------------------------


@needs("roi_align", "_roi_align_backward")
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("aligned", [False, True])
def test_autocast_roi_align_reads_bfloat16_channels_last_directly(aligned, sampling_ratio):
    x = align_map(seed=211, dtype=torch.bfloat16)
    rois = dev(_torchvision_safe(awkward_rois(ALIGN_N, ALIGN_H, ALIGN_W, 0.5, seed=212), sampling_ratio, aligned))
    grad = dev(_randn(rois.shape[0], ALIGN_C, 3, 4, seed=213, dtype=torch.bfloat16))
    xin, plain_in, their_in = leaf(x, torch.channels_last), leaf(x, torch.channels_last), leaf(x)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        out = ops.roi_align(xin, rois, (3, 4), 0.5, sampling_ratio, aligned)
        theirs = tvo.roi_align(their_in, rois, (3, 4), 0.5, sampling_ratio, aligned)
    plain = ops.roi_align(plain_in, rois, (3, 4), 0.5, sampling_ratio, aligned)
    # Computed from the bfloat16 values as they are: the result of the call outside autocast, same dtype and
    # layout (no float32 copy of the map is made and nothing is rounded twice).
    assert out.dtype == torch.bfloat16
    assert_format(out, torch.channels_last)
    assert_bitwise(out, plain)
    # torchvision's autocast path casts to float32 and rounds the result back: within an ulp or two.
    assert theirs.dtype == torch.bfloat16
    assert_close_ulps(out, theirs, ulps=2)
    out.backward(grad)
    plain.backward(grad)
    assert xin.grad.dtype == torch.bfloat16
    assert_format(xin.grad, torch.channels_last)
    assert_grad_parity(xin.grad, plain_in.grad)


@needs("multi_scale_roi_align", "_multi_scale_roi_align_backward")
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_autocast_multi_scale_roi_align_reads_bfloat16_channels_last_directly(sampling_ratio):
    x = dev(msra_features(seed=214, dtype=torch.bfloat16))
    boxes = dev(msra_boxes(seed=215))
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        out = ops.MultiScaleRoIAlign(MSRA_NAMES, 7, sampling_ratio)(msra_leaves(x, torch.channels_last), boxes,
                                                                    MSRA_IMAGE_SHAPES)
        theirs = tvo.MultiScaleRoIAlign(MSRA_NAMES, 7, sampling_ratio)(x, boxes, MSRA_IMAGE_SHAPES)
    plain = ops.MultiScaleRoIAlign(MSRA_NAMES, 7, sampling_ratio)(msra_leaves(x, torch.channels_last), boxes,
                                                                  MSRA_IMAGE_SHAPES)
    assert out.dtype == torch.bfloat16
    assert_format(out, torch.channels_last)
    assert_bitwise(out, plain)
    assert theirs.dtype == torch.bfloat16
    assert_close_ulps(out, theirs, ulps=2)


@needs("roi_align", "multi_scale_roi_align")
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_autocast_float32_input_behaves_as_torchvision(fmt):
    # torchvision's autocast rule for roi_align: compute in float32, return the input's dtype. A float32 map
    # therefore stays float32 under a bfloat16 autocast, with the float32 results.
    x = dev(align_map(seed=216)).contiguous(memory_format=fmt)
    rois = dev(awkward_rois(ALIGN_N, ALIGN_H, ALIGN_W, 0.5, seed=217))
    features, boxes = dev(msra_features(seed=218)), dev(msra_boxes(seed=219))
    features = {k: v.contiguous(memory_format=fmt) for k, v in features.items()}
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        out = ops.roi_align(x, rois, 3, 0.5, 2, False)
        theirs = tvo.roi_align(x, rois, 3, 0.5, 2, False)
        pooled = ops.MultiScaleRoIAlign(MSRA_NAMES, 5, 2)(features, boxes, MSRA_IMAGE_SHAPES)
        their_pooled = tvo.MultiScaleRoIAlign(MSRA_NAMES, 5, 2)(features, boxes, MSRA_IMAGE_SHAPES)
    assert out.dtype == theirs.dtype == pooled.dtype == their_pooled.dtype == torch.float32
    assert_bitwise(out, ops.roi_align(x, rois, 3, 0.5, 2, False))
    assert_close_ulps(out, theirs, ulps=16)
    assert_bitwise(pooled, ops.MultiScaleRoIAlign(MSRA_NAMES, 5, 2)(features, boxes, MSRA_IMAGE_SHAPES))
    assert_close_ulps(pooled, their_pooled, ulps=16)
