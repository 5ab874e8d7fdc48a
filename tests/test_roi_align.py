"""roi_align and RoIAlign: bitwise parity with torchvision (forward and backward), a float64 reference,
gradcheck / gradgradcheck, opcheck, every dtype and memory format, empty RoIs, determinism, bad input.

Kernel tests take the ``isa`` fixture and so run at every CPU instruction-set level the machine supports.
"""

import math

import pytest
import torch
import torchvision.ops as tvo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pydet_ops as ops
from roi_reference import (
    as_rois,
    awkward_rois,
    clustered_rois,
    roi_align_reference,
    roi_align_reference_backward,
)

RAW = torch.ops.pydet_ops

HYPOTHESIS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
SAMPLING_RATIOS = [-1, 0, 1, 2, 3]
OUTPUT_SIZES = [3, (2, 5)]
SCALES = [1.0, 0.5, 0.25]

# Three images, 21 channels (one full 16-wide vector, an 8-wide one and a tail), a 12 x 16 map.
N, C, H, W = 3, 21, 12, 16


def _map(seed=0, dtype=torch.float32, shape=(N, C, H, W)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def _leaf(x, fmt=torch.contiguous_format):
    return x.detach().clone().contiguous(memory_format=fmt).requires_grad_()


def _pair(size):
    return (size, size) if isinstance(size, int) else size


def _is_inverted(rois):
    return (rois[:, 3] < rois[:, 1]) | (rois[:, 4] < rois[:, 2])


def _torchvision_safe(rois, sampling_ratio, aligned):
    """torchvision's CPU kernel sizes a buffer with grid_h * grid_w, which is negative for an inverted RoI
    with aligned=True and an adaptive grid (it raises): such RoIs are compared with the reference instead."""
    if aligned and sampling_ratio <= 0:
        return rois[~_is_inverted(as_rois(rois))]
    return rois


def _both(x, rois, output_size, spatial_scale, sampling_ratio, aligned, fmt, grad_seed=1):
    """(ours, torchvision's) outputs and input gradients for the same upstream gradient."""
    ours_in, theirs_in = _leaf(x, fmt), _leaf(x)
    ours = ops.roi_align(ours_in, rois, output_size, spatial_scale, sampling_ratio, aligned)
    theirs = tvo.roi_align(theirs_in, rois, output_size, spatial_scale, sampling_ratio, aligned)
    grad = torch.randn(theirs.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=theirs.dtype)
    ours.backward(grad)
    theirs.backward(grad)
    return ours, theirs, ours_in.grad, theirs_in.grad


def _assert_format(t, fmt):
    assert t.is_contiguous(memory_format=fmt), (t.shape, t.stride())


# ---------------------------------------------------------------------------------------------------------
# Parity with torchvision
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", SAMPLING_RATIOS)
def test_matches_torchvision_bitwise(isa, sampling_ratio, aligned, fmt):
    x = _map(seed=sampling_ratio + 10)
    for scale in SCALES:
        rois = awkward_rois(N, H, W, scale, seed=int(scale * 8) + sampling_ratio)
        rois = _torchvision_safe(rois, sampling_ratio, aligned)
        for output_size in OUTPUT_SIZES:
            ours, theirs, ours_grad, theirs_grad = _both(x, rois, output_size, scale, sampling_ratio, aligned, fmt)
            assert ours.shape == (rois.shape[0], C, *_pair(output_size))
            assert ours.dtype == torch.float32
            _assert_format(ours, fmt)
            assert torch.equal(ours, theirs), (scale, output_size, (ours - theirs).abs().max())
            _assert_format(ours_grad, fmt)
            assert torch.equal(ours_grad, theirs_grad), (scale, output_size, (ours_grad - theirs_grad).abs().max())


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("aligned", [False, True])
def test_float64_matches_torchvision_bitwise(isa, aligned, fmt):
    x = _map(seed=3, dtype=torch.float64)
    rois = awkward_rois(N, H, W, 0.5, seed=4, dtype=torch.float64)
    for sampling_ratio in (0, 2):
        safe = _torchvision_safe(rois, sampling_ratio, aligned)
        ours, theirs, ours_grad, theirs_grad = _both(x, safe, (4, 3), 0.5, sampling_ratio, aligned, fmt)
        assert ours.dtype == ours_grad.dtype == torch.float64
        assert torch.equal(ours, theirs)
        assert torch.equal(ours_grad, theirs_grad)


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_list_of_boxes_matches_torchvision(isa, fmt):
    x = _map(seed=5)
    rois = awkward_rois(N, H, W, 0.5, seed=6)
    # One Tensor[L, 4] per image; the middle image has no boxes.
    boxes = [rois[rois[:, 0] == 0, 1:], torch.zeros(0, 4), rois[rois[:, 0] == 2, 1:]]
    ours, theirs, ours_grad, theirs_grad = _both(x, boxes, (2, 3), 0.5, 2, False, fmt)
    assert ours.shape == (sum(b.shape[0] for b in boxes), C, 2, 3)
    _assert_format(ours, fmt)
    assert torch.equal(ours, theirs)
    assert torch.equal(ours_grad, theirs_grad)
    # The same RoIs as a Tensor[K, 5] give the same result.
    assert torch.equal(ops.roi_align(x, as_rois(boxes), (2, 3), 0.5, 2), ours)


def test_inverted_rois_with_aligned_adaptive_grid_match_reference(isa):
    """The RoIs torchvision cannot take (see _torchvision_safe): an adaptive grid of a negative size is
    empty, so they pool to 0, as the reference says."""
    x = _map(seed=7, dtype=torch.float64)
    rois = awkward_rois(N, H, W, 1.0, seed=8, dtype=torch.float64)
    inverted = rois[_is_inverted(rois)]
    assert inverted.shape[0] > 0
    for fmt in FORMATS.values():
        for sampling_ratio in (-1, 0, 2):
            xin = _leaf(x, fmt)
            out = ops.roi_align(xin, inverted, 3, 1.0, sampling_ratio, True)
            expected = roi_align_reference(x, inverted, 3, 1.0, sampling_ratio, True)
            torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
            grad = torch.randn(out.shape, dtype=torch.float64)
            out.backward(grad)
            expected_grad = roi_align_reference_backward(grad, inverted, x.shape, 3, 1.0, sampling_ratio, True)
            torch.testing.assert_close(xin.grad, expected_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_non_contiguous_input_rois_and_grad_match_torchvision(isa, fmt):
    g = torch.Generator().manual_seed(9)
    base = torch.randn(N, 2 * C, W, H, generator=g).contiguous(memory_format=fmt)
    rois = awkward_rois(N, H, W, 1.0, seed=10)
    # RoIs as a column slice of a wider tensor, and as the transpose of a [5, K] tensor.
    wide = torch.cat([torch.randn(rois.shape[0], 2, generator=g), rois, torch.randn(rois.shape[0], 1)], dim=1)
    sliced_rois = wide[:, 2:7]
    transposed_rois = rois.t().contiguous().t()
    assert not sliced_rois.is_contiguous() and not transposed_rois.is_contiguous()
    views = {
        "channel-slice": lambda t: t[:, ::2].transpose(2, 3),
        "transposed": lambda t: t[:, :C].transpose(2, 3),
        "narrowed": lambda t: t[:, 1 : C + 1, 1:, 2:].transpose(2, 3),
    }
    for name, view in views.items():
        for r in (sliced_rois, transposed_rois):
            ours_base, theirs_base = _leaf(base, fmt), _leaf(base.contiguous())
            ours_in, theirs_in = view(ours_base), view(theirs_base)
            assert not ours_in.is_contiguous()
            ours = ops.roi_align(ours_in, r, (3, 2), 1.0, 2, False)
            theirs = tvo.roi_align(theirs_in, rois, (3, 2), 1.0, 2, False)
            assert torch.equal(ours, theirs), name
            # A non-contiguous upstream gradient, and the stride-0 gradient of a sum.
            grad = torch.randn(ours.shape[0], ours.shape[1], 2, 3, generator=g).transpose(2, 3)
            ours.backward(grad, retain_graph=True)
            theirs.backward(grad, retain_graph=True)
            assert torch.equal(ours_base.grad, theirs_base.grad), name
            ours_base.grad = theirs_base.grad = None
            ours.sum().backward()
            theirs.sum().backward()
            assert torch.equal(ours_base.grad, theirs_base.grad), name


def test_module_matches_functional_and_torchvision_repr(isa):
    x = _map(seed=11)
    rois = awkward_rois(N, H, W, 0.5, seed=12)
    for output_size, scale, sr, aligned in [(3, 0.5, 2, False), ((2, 5), 0.25, -1, True), ([4, 4], 1.0, 0, False)]:
        ours = ops.RoIAlign(output_size, scale, sr, aligned)
        theirs = tvo.RoIAlign(output_size, scale, sr, aligned)
        assert repr(ours) == repr(theirs)
        assert torch.equal(ours(x, rois), ops.roi_align(x, rois, output_size, scale, sr, aligned))
        assert torch.equal(ours(x, rois), theirs(x, rois))
    assert repr(ops.RoIAlign(7, 0.0625, 2)) == repr(tvo.RoIAlign(7, 0.0625, 2))


# ---------------------------------------------------------------------------------------------------------
# float64 reference
# ---------------------------------------------------------------------------------------------------------


def test_reference_agrees_with_torchvision():
    """The reference itself, checked once against an independent implementation."""
    x = _map(seed=13, dtype=torch.float64, shape=(2, 3, 9, 11))
    for scale in (1.0, 0.5):
        rois = awkward_rois(2, 9, 11, scale, seed=14, dtype=torch.float64)
        for sr in (0, 1, 3):
            for aligned in (False, True):
                safe = _torchvision_safe(rois, sr, aligned)
                expected = tvo.roi_align(x, safe, (3, 2), scale, sr, aligned)
                torch.testing.assert_close(roi_align_reference(x, safe, (3, 2), scale, sr, aligned), expected)


_coordinate = st.one_of(
    st.floats(-3.0, 12.0, allow_nan=False, allow_infinity=False, allow_subnormal=False),
    st.integers(-6, 24).map(lambda v: v / 2.0),  # pixel corners and centres, the edges -1, H and W
)


@st.composite
def _align_cases(draw):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    scale = draw(st.sampled_from([1.0, 0.5, 0.25, 2.0]))
    k = draw(st.integers(0, 5))
    rows = []
    for _ in range(k):
        b = draw(st.integers(0, n - 1))
        # Coordinates are drawn on the map and divided by the scale (a power of two: exact).
        rows.append([float(b)] + [draw(_coordinate) / scale for _ in range(4)])
    rois = torch.tensor(rows, dtype=torch.float64).reshape(-1, 5)
    return dict(
        shape=(n, c, h, w),
        rois=rois,
        output_size=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        scale=scale,
        sampling_ratio=draw(st.integers(-1, 3)),
        aligned=draw(st.booleans()),
        fmt=draw(st.sampled_from(list(FORMATS.values()))),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@HYPOTHESIS
@given(case=_align_cases())
def test_float64_matches_reference(isa, case):
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(*case["shape"], generator=g, dtype=torch.float64)
    args = (case["output_size"], case["scale"], case["sampling_ratio"], case["aligned"])
    rois = case["rois"]
    out = ops.roi_align(x.contiguous(memory_format=case["fmt"]), rois, *args)
    torch.testing.assert_close(out, roi_align_reference(x, rois, *args), rtol=1e-11, atol=1e-11)

    ph, pw = case["output_size"]
    grad = torch.randn(rois.shape[0], x.shape[1], ph, pw, generator=g, dtype=torch.float64)
    grad = grad.contiguous(memory_format=case["fmt"])
    n, c, h, w = x.shape
    grad_input = RAW._roi_align_backward(
        grad, rois, case["scale"], ph, pw, n, c, h, w, case["sampling_ratio"], case["aligned"]
    )
    expected = roi_align_reference_backward(grad, rois, x.shape, *args)
    torch.testing.assert_close(grad_input, expected, rtol=1e-11, atol=1e-11)


# ---------------------------------------------------------------------------------------------------------
# gradcheck, gradgradcheck, opcheck
# ---------------------------------------------------------------------------------------------------------


def _gradcheck_case(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64)
    xy = torch.rand(4, 2, generator=g, dtype=torch.float64) * 6 - 1.3
    wh = 0.7 + torch.rand(4, 2, generator=g, dtype=torch.float64) * 5
    rois = torch.cat([torch.tensor([[0.0], [1.0], [1.0], [0.0]], dtype=torch.float64), xy, xy + wh], dim=1)
    return x, rois


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck(isa, seed):
    x, rois = _gradcheck_case(seed)
    for fmt in FORMATS.values():
        for sr, aligned in [(2, False), (-1, True)]:
            xin = x.contiguous(memory_format=fmt).requires_grad_()
            fn = lambda t: ops.roi_align(t, rois, (2, 3), 0.5 + seed * 0.25, sr, aligned)  # noqa: E731
            assert torch.autograd.gradcheck(fn, (xin,))
            assert torch.autograd.gradgradcheck(fn, (xin,))


def test_opcheck(isa):
    x, rois = _gradcheck_case(3)
    for dtype in (torch.float32, torch.float64):
        for fmt in FORMATS.values():
            for requires_grad in (False, True):
                xin = x.detach().to(dtype).contiguous(memory_format=fmt).clone().requires_grad_(requires_grad)
                torch.library.opcheck(RAW.roi_align.default, (xin, rois.to(dtype), 0.5, 2, 3, 2, False))
    xin = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(RAW.roi_align.default, (xin, rois, 1.0, 3, 3, -1, True))
    grad = torch.randn(rois.shape[0], 3, 2, 3, dtype=torch.float64)
    for g in (grad, grad.contiguous(memory_format=torch.channels_last)):
        torch.library.opcheck(RAW._roi_align_backward.default, (g, rois, 0.5, 2, 3, 2, 3, 6, 7, 2, False))
        torch.library.opcheck(RAW._roi_align_backward.default, (g, rois, 1.0, 2, 3, 2, 3, 6, 7, 0, True))


# ---------------------------------------------------------------------------------------------------------
# dtypes and memory formats
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [8, 64, 100, 257])
def test_channel_blocks_match_torchvision(isa, channels, dtype, fmt):
    # Float maps with unit channel stride are summed a block of channels at a time in registers (8 to 64
    # channels, by ISA level and dtype) and the channels left over in memory: both parts, bitwise.
    x = _map(seed=18, dtype=dtype, shape=(N, channels, H, W))
    rois = awkward_rois(N, H, W, 0.5, seed=19).to(dtype)
    for sampling_ratio, aligned in ((2, True), (0, False)):
        out = ops.roi_align(x.contiguous(memory_format=fmt), rois, (3, 4), 0.5, sampling_ratio, aligned)
        assert torch.equal(out, tvo.roi_align(x, rois, (3, 4), 0.5, sampling_ratio, aligned))



@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_every_dtype_and_format(isa, dtype, fmt):
    x = _map(seed=15, dtype=dtype)
    rois = awkward_rois(N, H, W, 0.5, seed=16)
    grad = torch.randn(rois.shape[0], C, 3, 4, generator=torch.Generator().manual_seed(17)).to(dtype)
    xin = _leaf(x, fmt)
    out = ops.roi_align(xin, rois, (3, 4), 0.5, 2, True)
    out.backward(grad)
    assert out.dtype == dtype and xin.grad.dtype == dtype
    _assert_format(out, fmt)
    _assert_format(xin.grad, fmt)
    if dtype in (torch.float32, torch.float64):
        theirs_in = _leaf(x)
        theirs = tvo.roi_align(theirs_in, rois.to(dtype), (3, 4), 0.5, 2, True)
        theirs.backward(grad)
        assert torch.equal(out, theirs) and torch.equal(xin.grad, theirs_in.grad)
    else:
        # Half types are computed in float32 from the half values: the float32 result, rounded.
        wide = _leaf(x.float(), fmt)
        expected = ops.roi_align(wide, rois, (3, 4), 0.5, 2, True)
        expected.backward(grad.float())
        torch.testing.assert_close(out, expected.to(dtype))
        torch.testing.assert_close(xin.grad, wide.grad.to(dtype))


# ---------------------------------------------------------------------------------------------------------
# Empty RoIs, determinism
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("form", ["tensor", "list"])
def test_no_rois(isa, form, fmt):
    x = _leaf(_map(seed=18), fmt)
    boxes = torch.zeros(0, 5) if form == "tensor" else [torch.zeros(0, 4) for _ in range(N)]
    out = ops.roi_align(x, boxes, (2, 3), 0.5, 2)
    assert out.shape == (0, C, 2, 3)
    _assert_format(out, fmt)
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.count_nonzero(x.grad) == 0


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_backward_is_deterministic(isa, fmt):
    x = _map(seed=19, shape=(2, 32, 24, 32))
    rois = clustered_rois(300, 2, 24, 32, seed=20)
    grad = torch.randn(300, 32, 7, 7, generator=torch.Generator().manual_seed(21))

    def run():
        xin = _leaf(x, fmt)
        ops.roi_align(xin, rois, 7, 1.0, 2, False).backward(grad)
        return xin.grad

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first = run()
        for _ in range(2):
            assert torch.equal(run(), first)
        torch.set_num_threads(1)
        assert torch.equal(run(), first)
    finally:
        torch.set_num_threads(threads)
    _, _, _, theirs = _both(x, rois, 7, 1.0, 2, False, fmt, grad_seed=21)
    assert torch.equal(first, theirs)


# ---------------------------------------------------------------------------------------------------------
# Unusual and bad input
# ---------------------------------------------------------------------------------------------------------


def _with_finite_neighbours(bad_rows):
    """RoIs: a finite one on image 1, the given rows on images 0, 1, 2, ..., another finite one on image 2."""
    good = [1.5, 2.0, 9.0, 7.5]
    rows = [[1.0] + good] + [[float(i % N)] + list(b) for i, b in enumerate(bad_rows)] + [[2.0] + good]
    return torch.tensor(rows)


def _check_pools_to_zero(rois, sampling_ratio, aligned):
    x = _map(seed=22)
    for fmt in FORMATS.values():
        xin = _leaf(x, fmt)
        out = ops.roi_align(xin, rois, 3, 1.0, sampling_ratio, aligned)
        assert torch.count_nonzero(out[1:-1]) == 0
        assert torch.equal(out[[0, -1]], ops.roi_align(x, rois[[0, -1]], 3, 1.0, sampling_ratio, aligned))
        out.sum().backward()
        assert torch.isfinite(xin.grad).all()
        expected_grad = _leaf(x)
        ops.roi_align(expected_grad, rois[[0, -1]], 3, 1.0, sampling_ratio, aligned).sum().backward()
        assert torch.equal(xin.grad, expected_grad.grad)


NAN = math.nan
NAN_CASES = [
    pytest.param((NAN, 1, 5, 5), False, id="x1-legacy"),
    pytest.param((1, NAN, 5, 5), False, id="y1-legacy"),
    pytest.param((1, 1, NAN, 5), False, id="x2-legacy"),
    pytest.param((1, 1, 5, NAN), False, id="y2-legacy"),
    pytest.param((NAN, NAN, NAN, NAN), False, id="all-legacy"),
    pytest.param((NAN, 1, 5, 5), True, id="x1-aligned"),
    pytest.param((1, NAN, 5, 5), True, id="y1-aligned"),
    pytest.param((1, 1, NAN, 5), True, id="x2-aligned"),
    pytest.param((1, 1, 5, NAN), True, id="y2-aligned"),
    pytest.param((NAN, NAN, NAN, NAN), True, id="all-aligned"),
]


@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("box, aligned", NAN_CASES)
def test_nan_roi_pools_to_zero(isa, box, aligned, sampling_ratio):
    _check_pools_to_zero(_with_finite_neighbours([box]), sampling_ratio, aligned)


@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("aligned", [False, True])
def test_infinite_roi_pools_to_zero(isa, aligned, sampling_ratio):
    inf = math.inf
    boxes = [(0, 0, inf, inf), (-inf, -inf, inf, inf), (inf, inf, inf, inf), (-inf, 1, 5, 5), (1, -inf, 5, 5),
             (-inf, -inf, -inf, -inf), (2, 3, inf, 6), (1, 1, -inf, 5), (1, 1, 5, -inf)]
    _check_pools_to_zero(_with_finite_neighbours(boxes), sampling_ratio, aligned)


def test_float64_rois_with_float32_input_are_converted(isa):
    x = _leaf(_map(seed=23))
    rois = awkward_rois(N, H, W, 0.5, seed=24)
    expected = ops.roi_align(x, rois, 3, 0.5, 2, True)
    out = ops.roi_align(x, rois.double(), 3, 0.5, 2, True)
    assert out.dtype == torch.float32
    assert torch.equal(out, expected)
    out.sum().backward()
    grad64 = x.grad.clone()
    x.grad = None
    expected.sum().backward()
    assert torch.equal(grad64, x.grad)


def test_fractional_batch_index_is_truncated(isa):
    x = _map(seed=25)
    rois = torch.tensor([[1.7, 1.0, 2.0, 9.0, 8.0], [0.0, 1.0, 2.0, 9.0, 8.0], [2.9, 1.0, 2.0, 9.0, 8.0]])
    truncated = rois.clone()
    truncated[:, 0] = rois[:, 0].trunc()
    assert torch.equal(ops.roi_align(x, rois, 3), ops.roi_align(x, truncated, 3))
    assert torch.equal(ops.roi_align(x, rois, 3), tvo.roi_align(x, rois, 3))


X = _map(seed=26)
ROIS = torch.tensor([[0.0, 1.0, 1.0, 6.0, 6.0], [1.0, 2.0, 3.0, 8.0, 9.0]])


def _roi(batch_index):
    return torch.tensor([[batch_index, 1.0, 1.0, 4.0, 4.0]])


BAD = [
    ("rois-4-columns", lambda: ops.roi_align(X, ROIS[:, 1:], 3), RuntimeError, r"rois"),
    ("rois-1d", lambda: ops.roi_align(X, ROIS[0], 3), RuntimeError, r"rois"),
    ("list-element-5-columns", lambda: ops.roi_align(X, [ROIS, ROIS], 3), ValueError, r"boxes"),
    ("batch-index-negative", lambda: ops.roi_align(X, _roi(-1.0), 3), RuntimeError, r"batch index"),
    ("batch-index-too-large", lambda: ops.roi_align(X, _roi(float(N)), 3), RuntimeError, r"batch index"),
    ("batch-index-nan", lambda: ops.roi_align(X, _roi(math.nan), 3), RuntimeError, r"batch index"),
    ("output-size-zero", lambda: ops.roi_align(X, ROIS, 0), RuntimeError, r"output_size"),
    ("output-size-negative", lambda: ops.roi_align(X, ROIS, (3, -2)), RuntimeError, r"output_size"),
    ("spatial-scale-zero", lambda: ops.roi_align(X, ROIS, 3, 0.0), RuntimeError, r"spatial_scale"),
    ("spatial-scale-negative", lambda: ops.roi_align(X, ROIS, 3, -0.5), RuntimeError, r"spatial_scale"),
    ("spatial-scale-nan", lambda: ops.roi_align(X, ROIS, 3, math.nan), RuntimeError, r"spatial_scale"),
    ("input-3d", lambda: ops.roi_align(X[0], ROIS, 3), RuntimeError, r"input"),
    ("input-5d", lambda: ops.roi_align(X[None], ROIS, 3), RuntimeError, r"input"),
    ("input-int", lambda: ops.roi_align(X.long(), ROIS, 3), RuntimeError, r"input"),
    ("input-bool", lambda: ops.roi_align(X > 0, ROIS, 3), RuntimeError, r"input"),
    ("rois-int", lambda: ops.roi_align(X, ROIS.long(), 3), RuntimeError, r"rois"),
    ("list-boxes-int", lambda: ops.roi_align(X, [ROIS[:, 1:].long()], 3), RuntimeError, r"rois"),
    ("rois-on-meta", lambda: ops.roi_align(X, ROIS.to("meta"), 3), ValueError, r"same device"),
    ("raw-rois-4-columns", lambda: RAW.roi_align(X, ROIS[:, 1:], 1.0, 3, 3, 2, False), RuntimeError, r"rois"),
    ("raw-output-size-zero", lambda: RAW.roi_align(X, ROIS, 1.0, 3, 0, 2, False), RuntimeError, r"output_size"),
    ("raw-batch-index", lambda: RAW.roi_align(X[:1], ROIS, 1.0, 3, 3, 2, False), RuntimeError, r"batch index"),
    (
        "raw-backward-batch-index",
        lambda: RAW._roi_align_backward(torch.zeros(2, C, 3, 3), ROIS, 1.0, 3, 3, 1, C, H, W, 2, False),
        RuntimeError,
        r"batch index",
    ),
    (
        "raw-backward-grad-shape",
        lambda: RAW._roi_align_backward(torch.zeros(2, C, 3, 2), ROIS, 1.0, 3, 3, N, C, H, W, 2, False),
        RuntimeError,
        r"grad",
    ),
]


@pytest.mark.parametrize("call, error, match", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
