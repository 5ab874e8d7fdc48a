"""CUDA tests of roi_align and roi_pool, and of a map of more than 2^31 elements (marked ``huge``). What the
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
    HALF_DTYPES,
    INF,
    NAN,
    NONDET_TOL,
    RAW,
    TV,
    _SKIP_REASON,
    _gen,
    _randn,
    assert_bitwise,
    assert_close_ulps,
    assert_format,
    assert_forward_parity,
    assert_grad_parity,
    assert_on_device,
    dev,
    host,
    leaf,
    needs,
)
from roi_reference import (
    awkward_rois,
    clustered_rois,
    roi_align_reference,
    roi_align_reference_backward,
    roi_pool_reference,
    roi_pool_reference_backward,
)
from test_huge_inputs import POOLED as HUGE_POOLED
from test_huge_inputs import TWO_31, _crops, _disjoint, _feature_rois, _lowest_offset_read
from test_roi_align import C as ALIGN_C
from test_roi_align import H as ALIGN_H
from test_roi_align import N as ALIGN_N
from test_roi_align import W as ALIGN_W
from test_roi_align import _gradcheck_case as align_gradcheck_case
from test_roi_align import _map as align_map
from test_roi_align import _torchvision_safe
from test_roi_pool import _gradcheck_case as pool_gradcheck_case

pytestmark = pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or "")


# ---------------------------------------------------------------------------------------------------------
# roi_align
# ---------------------------------------------------------------------------------------------------------


def _cpu_parity_rois(scale, seed, dtype=torch.float32):
    """awkward_rois plus RoIs whose outcome the CPU kernel defines and torchvision does not: fractional batch
    indices (truncated toward zero), NaN and infinite corners (pool to zero)."""
    rois = awkward_rois(ALIGN_N, ALIGN_H, ALIGN_W, scale, seed=seed)
    s = 1.0 / scale
    extra = torch.tensor(
        [
            [-0.5, 1 * s, 1 * s, 6 * s, 6 * s],
            [1.7, 2 * s, 2 * s, 9 * s, 7 * s],
            [2.0, NAN, 1 * s, 5 * s, 5 * s],
            [0.0, 1 * s, 1 * s, INF, 5 * s],
            [1.0, -INF, -INF, INF, INF],
        ]
    )
    return torch.cat([rois, extra]).to(dtype)


def _run_roi_align(device, x, rois, output_size, scale, sampling_ratio, aligned, fmt, grad):
    xin = leaf(x, fmt, device)
    out = ops.roi_align(xin, rois.to(device), output_size, scale, sampling_ratio, aligned)
    out.backward(grad.to(device))
    return out, xin.grad


@needs("roi_align", "_roi_align_backward")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_roi_align_matches_cpu(fmt, aligned, sampling_ratio, dtype):
    x = align_map(seed=31 + sampling_ratio, dtype=dtype)
    for scale in (1.0, 0.5):
        rois = _cpu_parity_rois(scale, seed=int(scale * 8) + sampling_ratio)
        for output_size in ((3, 3), (2, 5)):
            grad = _randn(rois.shape[0], ALIGN_C, *output_size, seed=32, dtype=dtype)
            args = (rois, output_size, scale, sampling_ratio, aligned, fmt, grad)
            out, grad_in = _run_roi_align(DEVICE, x, *args)
            expected, expected_grad = _run_roi_align(torch.device("cpu"), x, *args)
            assert out.dtype == grad_in.dtype == dtype
            assert_format(out, fmt)
            assert_format(grad_in, fmt)
            assert_forward_parity(out, expected)
            assert_grad_parity(grad_in, expected_grad)


@needs("roi_align", "_roi_align_backward")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_roi_align_matches_torchvision(fmt, aligned, sampling_ratio, dtype):
    # torchvision computes half types in the half type itself; the drop-in contract for them is
    # torchvision's float32 result on the same (upcast) values, rounded, as under autocast.
    x = align_map(seed=41 + sampling_ratio, dtype=dtype)
    wide = torch.float32 if dtype in HALF_DTYPES else dtype
    for scale in (1.0, 0.5):
        rois = awkward_rois(ALIGN_N, ALIGN_H, ALIGN_W, scale, seed=int(scale * 4) + 40)
        rois = _torchvision_safe(rois, sampling_ratio, aligned)
        output_size = (3, 4)
        grad = _randn(rois.shape[0], ALIGN_C, *output_size, seed=42, dtype=dtype)
        ours, ours_grad = _run_roi_align(DEVICE, x, rois, output_size, scale, sampling_ratio, aligned, fmt, grad)
        theirs_in = leaf(x.to(wide))
        theirs = tvo.roi_align(theirs_in, dev(rois.to(wide)), output_size, scale, sampling_ratio, aligned)
        theirs.backward(dev(grad.to(wide)))
        assert_close_ulps(ours, theirs.to(dtype), ulps=2 if dtype in HALF_DTYPES else 16)
        assert_close_ulps(ours_grad, theirs_in.grad.to(dtype), ulps=16 if dtype in HALF_DTYPES else 64)


@needs("roi_align", "_roi_align_backward")
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2])
@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_float64_matches_reference(aligned, sampling_ratio):
    x = align_map(seed=51, dtype=torch.float64, shape=(2, 3, 9, 11))
    rois = awkward_rois(2, 9, 11, 0.5, seed=52, dtype=torch.float64)
    rois = torch.cat([rois, torch.tensor([[1.0, NAN, 2.0, 8.0, 9.0]], dtype=torch.float64)])
    expected = roi_align_reference(x, rois, (3, 2), 0.5, sampling_ratio, aligned)
    grad = _randn(rois.shape[0], 3, 3, 2, seed=53, dtype=torch.float64)
    expected_grad = roi_align_reference_backward(grad, rois, x.shape, (3, 2), 0.5, sampling_ratio, aligned)
    for fmt in FORMATS.values():
        out = ops.roi_align(dev(x).contiguous(memory_format=fmt), dev(rois), (3, 2), 0.5, sampling_ratio, aligned)
        torch.testing.assert_close(host(out), expected, rtol=1e-11, atol=1e-11)
        g = dev(grad).contiguous(memory_format=fmt)
        grad_input = RAW._roi_align_backward(g, dev(rois), 0.5, 3, 2, 2, 3, 9, 11, sampling_ratio, aligned)
        assert_format(grad_input, fmt)
        torch.testing.assert_close(host(grad_input), expected_grad, rtol=1e-11, atol=1e-11)


@needs("roi_align", "_roi_align_backward")
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_roi_align_detector_sized_matches_cpu(fmt, sampling_ratio):
    # Two images, 256 channels, 512 heavily overlapping RoIs at stride 8: the sizes a detector runs.
    x = _randn(2, 256, 50, 68, seed=54)
    rois = clustered_rois(512, 2, 50, 68, seed=55)
    rois[:, 1:] *= 8.0
    grad = _randn(512, 256, 7, 7, seed=56)
    args = (rois, 7, 0.125, sampling_ratio, False, fmt, grad)
    out, grad_in = _run_roi_align(DEVICE, x, *args)
    expected, expected_grad = _run_roi_align(torch.device("cpu"), x, *args)
    assert_format(out, fmt)
    assert_format(grad_in, fmt)
    assert_bitwise(out, expected)
    assert_grad_parity(grad_in, expected_grad)


@needs("roi_align", "_roi_align_backward")
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_roi_align_list_boxes_and_non_contiguous_match_cpu(fmt):
    base = _randn(ALIGN_N, 2 * ALIGN_C, ALIGN_W, ALIGN_H, seed=57).contiguous(memory_format=fmt)
    rois = awkward_rois(ALIGN_N, ALIGN_H, ALIGN_W, 0.5, seed=58)
    boxes = [rois[rois[:, 0] == 0, 1:], torch.zeros(0, 4), rois[rois[:, 0] == 2, 1:]]
    results = []
    for device in (DEVICE, torch.device("cpu")):
        base_leaf = leaf(base, fmt, device)
        view = base_leaf[:, ::2].transpose(2, 3)  # channel-strided, transposed
        assert not view.is_contiguous()
        out = ops.roi_align(view, [b.to(device) for b in boxes], (2, 3), 0.5, 2, True)
        # A non-contiguous upstream gradient.
        out.backward(_randn(out.shape[0], ALIGN_C, 3, 2, seed=59).transpose(2, 3).to(device))
        results.append((out, base_leaf.grad))
    assert_bitwise(results[0][0], results[1][0])
    assert_grad_parity(results[0][1], results[1][1])


@needs("roi_align", "_roi_align_backward")
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_roi_align_empty_inputs(fmt):
    x = leaf(align_map(seed=61), fmt)
    for boxes in (torch.zeros(0, 5, device=DEVICE), [torch.zeros(0, 4, device=DEVICE)] * ALIGN_N):
        out = ops.roi_align(x, boxes, (2, 3), 0.5, 2)
        assert out.shape == (0, ALIGN_C, 2, 3)
        assert_on_device(out)
        assert_format(out, fmt)
        out.sum().backward()
        assert x.grad.shape == x.shape and int(torch.count_nonzero(x.grad)) == 0
        x.grad = None
    rois = _cpu_parity_rois(1.0, seed=62)
    # No channels, and a map without rows or columns: correctly shaped, and (no rows) all zero.
    for shape in ((ALIGN_N, 0, ALIGN_H, ALIGN_W), (ALIGN_N, 4, 0, ALIGN_W), (ALIGN_N, 4, ALIGN_H, 0)):
        empty_map = torch.zeros(shape).contiguous(memory_format=fmt)
        out = ops.roi_align(dev(empty_map), dev(rois), 3, 1.0, 2)
        expected = ops.roi_align(empty_map, rois, 3, 1.0, 2)
        assert_bitwise(out, expected)


@needs("roi_align", "_roi_align_backward")
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_roi_align_gradcheck_on_cuda(fmt):
    x, rois = dev(align_gradcheck_case(0))
    xin = x.contiguous(memory_format=fmt).requires_grad_()
    for sampling_ratio, aligned in [(2, False), (-1, True)]:
        def fn(t, sr=sampling_ratio, al=aligned):
            return ops.roi_align(t, rois, (2, 3), 0.75, sr, al)

        assert torch.autograd.gradcheck(fn, (xin,), nondet_tol=NONDET_TOL)
    # (the slow part: once is enough, the double backward is the forward op again)
    assert torch.autograd.gradgradcheck(fn, (xin,), nondet_tol=NONDET_TOL)


@needs("roi_align", "_roi_align_backward")
def test_roi_align_opcheck_on_cuda():
    x, rois = dev(align_gradcheck_case(3))
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        for fmt in FORMATS.values():
            for requires_grad in (False, True):
                xin = x.detach().to(dtype).contiguous(memory_format=fmt).clone().requires_grad_(requires_grad)
                torch.library.opcheck(RAW.roi_align.default, (xin, rois.to(dtype), 0.5, 2, 3, 2, False))
    grad = dev(_randn(rois.shape[0], 3, 2, 3, seed=63, dtype=torch.float64))
    for g in (grad, grad.contiguous(memory_format=torch.channels_last)):
        torch.library.opcheck(RAW._roi_align_backward.default, (g, rois, 0.5, 2, 3, 2, 3, 6, 7, 2, False))
        torch.library.opcheck(RAW._roi_align_backward.default, (g, rois, 1.0, 2, 3, 2, 3, 6, 7, 0, True))


# ---------------------------------------------------------------------------------------------------------
# roi_pool
# ---------------------------------------------------------------------------------------------------------


def _run_roi_pool(device, x, rois, output_size, scale, fmt, grad):
    xin = leaf(x, fmt, device)
    out = ops.roi_pool(xin, rois.to(device), output_size, scale)
    out.backward(grad.to(device))
    return out, xin.grad


@needs("roi_pool", "_roi_pool_backward")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_roi_pool_matches_cpu(fmt, dtype):
    x = align_map(seed=71, dtype=dtype)
    for scale in (1.0, 0.5, 0.25):
        rois = _cpu_parity_rois(scale, seed=int(scale * 8) + 70)
        for output_size in ((3, 3), (2, 5), (1, 1)):
            grad = _randn(rois.shape[0], ALIGN_C, *output_size, seed=72, dtype=dtype)
            out, grad_in = _run_roi_pool(DEVICE, x, rois, output_size, scale, fmt, grad)
            expected, expected_grad = _run_roi_pool(torch.device("cpu"), x, rois, output_size, scale, fmt, grad)
            assert_format(out, fmt)
            assert_format(grad_in, fmt)
            # A maximum is one of the inputs: bit for bit in every dtype, argmax included.
            assert_bitwise(out, expected)
            assert_grad_parity(grad_in, expected_grad)
            values, argmax = RAW.roi_pool(dev(x).contiguous(memory_format=fmt), dev(rois), scale, *output_size)
            cpu_values, cpu_argmax = RAW.roi_pool(x.contiguous(memory_format=fmt), rois, scale, *output_size)
            assert argmax.dtype == torch.int32
            assert_format(argmax, fmt)
            assert_bitwise(values, cpu_values)
            assert_bitwise(argmax, cpu_argmax)


@needs("roi_pool", "_roi_pool_backward")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_roi_pool_matches_torchvision(fmt, dtype):
    x = align_map(seed=73, dtype=dtype)
    wide = torch.float32 if dtype in HALF_DTYPES else dtype
    for scale in (1.0, 0.5):
        rois = awkward_rois(ALIGN_N, ALIGN_H, ALIGN_W, scale, seed=int(scale * 8) + 74)
        grad = _randn(rois.shape[0], ALIGN_C, 3, 4, seed=75, dtype=dtype)
        ours, ours_grad = _run_roi_pool(DEVICE, x, rois, (3, 4), scale, fmt, grad)
        theirs_in = leaf(x.to(wide))
        theirs = tvo.roi_pool(theirs_in, dev(rois.to(wide)), (3, 4), scale)
        theirs.backward(dev(grad.to(wide)))
        assert_bitwise(ours, theirs.to(dtype))
        assert_close_ulps(ours_grad, theirs_in.grad.to(dtype), ulps=16 if dtype in HALF_DTYPES else 64)
        _, argmax = RAW.roi_pool(dev(x).contiguous(memory_format=fmt), dev(rois), scale, 3, 4)
        _, their_argmax = TV.roi_pool(dev(x.to(wide)), dev(rois.to(wide)), scale, 3, 4)
        assert_bitwise(argmax, their_argmax)


@needs("roi_pool", "_roi_pool_backward")
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_roi_pool_ties_pick_the_first_maximum(fmt):
    # Three distinct values: most bins hold several maxima, the argmax is the first in row-major order.
    x = torch.randint(0, 3, (ALIGN_N, ALIGN_C, ALIGN_H, ALIGN_W), generator=_gen(76)).to(torch.float32)
    rois = awkward_rois(ALIGN_N, ALIGN_H, ALIGN_W, 1.0, seed=77)
    values, argmax = RAW.roi_pool(dev(x).contiguous(memory_format=fmt), dev(rois), 1.0, 3, 4)
    their_values, their_argmax = TV.roi_pool(dev(x), dev(rois), 1.0, 3, 4)
    assert_bitwise(values, their_values)
    assert_bitwise(argmax, their_argmax)
    ref_values, ref_argmax = roi_pool_reference(x, rois, (3, 4), 1.0)
    assert_bitwise(values.double(), ref_values)
    assert_bitwise(argmax.long(), ref_argmax)


@needs("roi_pool", "_roi_pool_backward")
def test_roi_pool_float64_matches_reference():
    x = align_map(seed=78, dtype=torch.float64, shape=(2, 3, 9, 11))
    rois = awkward_rois(2, 9, 11, 0.5, seed=79, dtype=torch.float64)
    rois = torch.cat([rois, torch.tensor([[1.0, NAN, 2.0, 8.0, 9.0]], dtype=torch.float64)])
    expected, expected_argmax = roi_pool_reference(x, rois, (3, 2), 0.5)
    grad = _randn(rois.shape[0], 3, 3, 2, seed=80, dtype=torch.float64)
    expected_grad = roi_pool_reference_backward(grad, rois, expected_argmax, x.shape)
    for fmt in FORMATS.values():
        out, argmax = RAW.roi_pool(dev(x).contiguous(memory_format=fmt), dev(rois), 0.5, 3, 2)
        assert_bitwise(out, expected)
        assert_bitwise(argmax.long(), expected_argmax)
        g = dev(grad).contiguous(memory_format=fmt)
        grad_input = RAW._roi_pool_backward(g, dev(rois), argmax.contiguous(memory_format=fmt), 0.5, 3, 2, 2, 3, 9, 11)
        torch.testing.assert_close(host(grad_input), expected_grad, rtol=1e-12, atol=1e-12)


@needs("roi_pool", "_roi_pool_backward")
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_roi_pool_detector_sized_and_list_boxes_match_cpu(fmt):
    x = _randn(2, 256, 50, 68, seed=81)
    rois = clustered_rois(512, 2, 50, 68, seed=82)
    rois[:, 1:] *= 16.0
    grad = _randn(512, 256, 7, 7, seed=83)
    out, grad_in = _run_roi_pool(DEVICE, x, rois, 7, 0.0625, fmt, grad)
    expected, expected_grad = _run_roi_pool(torch.device("cpu"), x, rois, 7, 0.0625, fmt, grad)
    assert_bitwise(out, expected)
    assert_grad_parity(grad_in, expected_grad)
    boxes = [rois[rois[:, 0] == 0, 1:], rois[rois[:, 0] == 1, 1:]]
    from_list = ops.roi_pool(dev(x).contiguous(memory_format=fmt), dev(boxes), 7, 0.0625)
    assert_bitwise(from_list, ops.roi_pool(x, boxes, 7, 0.0625))


@needs("roi_pool", "_roi_pool_backward")
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_roi_pool_empty_inputs(fmt):
    x = leaf(align_map(seed=84), fmt)
    out = ops.roi_pool(x, torch.zeros(0, 5, device=DEVICE), (2, 3), 0.5)
    assert out.shape == (0, ALIGN_C, 2, 3)
    assert_format(out, fmt)
    out.sum().backward()
    assert int(torch.count_nonzero(x.grad)) == 0
    rois = _cpu_parity_rois(1.0, seed=85)
    for shape in ((ALIGN_N, 0, ALIGN_H, ALIGN_W), (ALIGN_N, 4, 0, ALIGN_W)):
        empty_map = torch.zeros(shape).contiguous(memory_format=fmt)
        assert_bitwise(ops.roi_pool(dev(empty_map), dev(rois), 3, 1.0), ops.roi_pool(empty_map, rois, 3, 1.0))


@needs("roi_pool", "_roi_pool_backward")
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_roi_pool_gradcheck_on_cuda(fmt):
    x, rois = dev(pool_gradcheck_case(1))
    xin = x.contiguous(memory_format=fmt).requires_grad_()

    def fn(t):
        return ops.roi_pool(t, rois, (2, 3), 0.75)

    assert torch.autograd.gradcheck(fn, (xin,), nondet_tol=NONDET_TOL)
    assert torch.autograd.gradgradcheck(fn, (xin,), nondet_tol=NONDET_TOL)


@needs("roi_pool", "_roi_pool_backward")
def test_roi_pool_opcheck_on_cuda():
    x, rois = dev(pool_gradcheck_case(3))
    for dtype in (torch.float32, torch.float64, torch.float16):
        for fmt in FORMATS.values():
            for requires_grad in (False, True):
                xin = x.detach().to(dtype).contiguous(memory_format=fmt).clone().requires_grad_(requires_grad)
                torch.library.opcheck(RAW.roi_pool.default, (xin, rois.to(dtype), 0.5, 2, 3))
    grad = dev(_randn(rois.shape[0], 3, 2, 3, seed=86, dtype=torch.float64))
    _, argmax = RAW.roi_pool(x, rois, 0.5, 2, 3)
    torch.library.opcheck(RAW._roi_pool_backward.default, (grad, rois, argmax, 0.5, 2, 3, 2, 3, 6, 7))
    cl = torch.channels_last
    torch.library.opcheck(
        RAW._roi_pool_backward.default,
        (grad.contiguous(memory_format=cl), rois, argmax.contiguous(memory_format=cl), 0.5, 2, 3, 2, 3, 6, 7),
    )


# ---------------------------------------------------------------------------------------------------------
# A map of more than 2^31 elements
# ---------------------------------------------------------------------------------------------------------

# bfloat16 [1, 512, 2100, 2100]: 2.26e9 elements, 4.5 GB. NCHW: every channel from 487 on lies beyond
# element 2^31, so every RoI reads there. channels_last: rows from 1998 on lie beyond it.
HUGE_SHAPE = (1, 512, 2100, 2100)
HUGE_SCALE = 0.25


def _require_free_device_memory(gib):
    free, _ = torch.cuda.mem_get_info()
    if free < gib * 2**30:
        pytest.skip(f"needs {gib} GiB of free device memory, {free / 2**30:.1f} GiB free")


@pytest.mark.huge
@needs("roi_align", "_roi_align_backward")
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_roi_align_bfloat16_map_beyond_2_31_elements(fmt):
    """RoI corners, bins and grids as in test_huge_inputs.py: every sampling coordinate and bilinear weight
    is exact in float32 both on the whole map and on a crop around the RoI, so the expected result is
    torchvision's on the (small, float32) crop, with the RoI shifted by the crop's origin."""
    _require_free_device_memory(24)
    channels_last = fmt == torch.channels_last
    n, c, h, w = HUGE_SHAPE
    assert n * c * h * w > TWO_31
    # Geometry of a channels_last map of this shape: its "far" RoIs lie in the rows beyond element 2^31 (in
    # NCHW, the upper channels of every RoI are beyond it anyway).
    feature_rois = _feature_rois(HUGE_SHAPE, True, seed=2100)
    crops = _crops(HUGE_SHAPE, feature_rois, HUGE_SCALE)
    if channels_last:
        for tag, roi in feature_rois:
            if tag == "far":
                assert _lowest_offset_read(HUGE_SHAPE, True, roi) > TWO_31
    else:
        assert (c - 1) * h * w > TWO_31
    x = torch.empty(HUGE_SHAPE, dtype=torch.bfloat16, device=DEVICE, memory_format=fmt)
    x.normal_(generator=torch.Generator(device=DEVICE).manual_seed(2101))
    rois = torch.tensor([full for _, full, _ in crops], dtype=torch.float32, device=DEVICE)
    try:
        for sampling_ratio, aligned in [(-1, True), (2, False)]:
            out = ops.roi_align(x, rois, HUGE_POOLED, HUGE_SCALE, sampling_ratio, aligned)
            assert out.dtype == torch.bfloat16
            assert_format(out, fmt)
            expected = torch.cat([
                tvo.roi_align(x[:, :, y0:y1, x0:x1].float(), torch.tensor([local], device=DEVICE), HUGE_POOLED,
                              HUGE_SCALE, sampling_ratio, aligned)
                for (y0, y1, x0, x1), _, local in crops
            ])
            assert int(torch.count_nonzero(expected)) > 0.75 * expected.numel()
            assert_close_ulps(out, expected.to(torch.bfloat16), ulps=1)
        # Backward into a gradient map of the same size, for RoIs with disjoint crops (far corner, across the
        # far edges, across the near edges): each crop of the gradient equals torchvision's gradient on the
        # crop, and nothing is written anywhere else.
        picked = [0, 6, 9]
        sub = [crops[k] for k in picked]
        assert _disjoint(sub)
        grad = _randn(len(picked), c, HUGE_POOLED, HUGE_POOLED, seed=2102, dtype=torch.bfloat16)
        grad = dev(grad).contiguous(memory_format=fmt)
        del x
        grad_map = RAW._roi_align_backward(grad, rois[picked], HUGE_SCALE, HUGE_POOLED, HUGE_POOLED, *HUGE_SHAPE, -1,
                                           True)
        assert grad_map.shape == HUGE_SHAPE and grad_map.dtype == torch.bfloat16
        assert_format(grad_map, fmt)
        for k, ((y0, y1, x0, x1), _, local) in enumerate(sub):
            crop_leaf = torch.zeros(1, c, y1 - y0, x1 - x0, device=DEVICE, requires_grad=True)
            tvo.roi_align(crop_leaf, torch.tensor([local], device=DEVICE), HUGE_POOLED, HUGE_SCALE, -1,
                          True).backward(grad[k : k + 1].float())
            assert_close_ulps(grad_map[:, :, y0:y1, x0:x1], crop_leaf.grad.to(torch.bfloat16), ulps=4)
            grad_map[:, :, y0:y1, x0:x1] = 0
        assert int(torch.count_nonzero(grad_map)) == 0
    finally:
        x = grad_map = None
        torch.cuda.empty_cache()
