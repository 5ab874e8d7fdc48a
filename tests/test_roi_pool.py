"""roi_pool and RoIPool: bitwise parity with torchvision (forward, argmax, backward), a float64 reference,
gradcheck / gradgradcheck, opcheck, every dtype and memory format, empty RoIs, determinism, bad input.

Kernel tests take the ``isa`` fixture and so run at every CPU instruction-set level the machine supports.
"""

import math

import pytest
import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision)
import torchvision.ops as tvo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pydet_ops as ops
from roi_reference import (
    as_rois,
    awkward_rois,
    clustered_rois,
    roi_pool_reference,
    roi_pool_reference_backward,
)

RAW = torch.ops.pydet_ops
TV = torch.ops.torchvision

HYPOTHESIS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
OUTPUT_SIZES = [3, (2, 5), 1]
SCALES = [1.0, 0.5, 0.25]

N, C, H, W = 3, 21, 12, 16


def _map(seed=0, dtype=torch.float32, shape=(N, C, H, W)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def _distinct_map(seed=0, dtype=torch.float64, shape=(N, C, H, W)):
    """Every value distinct and at least 0.01 apart: the maximum of every bin is unique."""
    g = torch.Generator().manual_seed(seed)
    numel = math.prod(shape)
    return (torch.randperm(numel, generator=g).to(torch.float64) / 100).reshape(shape).to(dtype)


def _leaf(x, fmt=torch.contiguous_format):
    return x.detach().clone().contiguous(memory_format=fmt).requires_grad_()


def _pair(size):
    return (size, size) if isinstance(size, int) else tuple(size)


def _assert_format(t, fmt):
    assert t.is_contiguous(memory_format=fmt), (t.shape, t.stride())


def _both(x, rois, output_size, spatial_scale, fmt, grad=None):
    """(ours, torchvision's) outputs and input gradients for the same upstream gradient."""
    ours_in, theirs_in = _leaf(x, fmt), _leaf(x)
    ours = ops.roi_pool(ours_in, rois, output_size, spatial_scale)
    theirs = tvo.roi_pool(theirs_in, rois, output_size, spatial_scale)
    if grad is None:
        grad = torch.randn(theirs.shape, generator=torch.Generator().manual_seed(1), dtype=theirs.dtype)
    ours.backward(grad)
    theirs.backward(grad)
    return ours, theirs, ours_in.grad, theirs_in.grad


# ---------------------------------------------------------------------------------------------------------
# Parity with torchvision
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torchvision_bitwise(isa, dtype, fmt):
    x = _map(seed=2, dtype=dtype)
    for scale in SCALES:
        rois = awkward_rois(N, H, W, scale, seed=int(scale * 8), dtype=dtype)
        for output_size in OUTPUT_SIZES:
            ours, theirs, ours_grad, theirs_grad = _both(x, rois, output_size, scale, fmt)
            assert ours.shape == (rois.shape[0], C, *_pair(output_size)) and ours.dtype == dtype
            _assert_format(ours, fmt)
            _assert_format(ours_grad, fmt)
            assert torch.equal(ours, theirs), (scale, output_size)
            assert torch.equal(ours_grad, theirs_grad), (scale, output_size)
            # The raw ops: argmax as torchvision computes it (index in the H * W plane, -1 for an empty bin).
            ph, pw = _pair(output_size)
            out, argmax = RAW.roi_pool(x.contiguous(memory_format=fmt), rois, scale, ph, pw)
            their_out, their_argmax = TV.roi_pool(x, rois, scale, ph, pw)
            assert argmax.dtype == torch.int32
            _assert_format(argmax, fmt)
            assert torch.equal(out, their_out)
            assert torch.equal(argmax, their_argmax)


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_ties_pick_the_first_maximum_as_torchvision(isa, fmt):
    """Few distinct values: most bins hold several maxima; the argmax is the first in row-major order."""
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 3, (N, C, H, W), generator=g).to(torch.float32)
    rois = awkward_rois(N, H, W, 1.0, seed=4)
    out, argmax = RAW.roi_pool(x.contiguous(memory_format=fmt), rois, 1.0, 3, 4)
    their_out, their_argmax = TV.roi_pool(x, rois, 1.0, 3, 4)
    assert torch.equal(out, their_out)
    assert torch.equal(argmax, their_argmax)
    ref_out, ref_argmax = roi_pool_reference(x, rois, (3, 4), 1.0)
    assert torch.equal(out.double(), ref_out)
    assert torch.equal(argmax.long(), ref_argmax)
    _, _, ours_grad, theirs_grad = _both(x, rois, (3, 4), 1.0, fmt)
    assert torch.equal(ours_grad, theirs_grad)


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_list_of_boxes_matches_torchvision(isa, fmt):
    x = _map(seed=5)
    rois = awkward_rois(N, H, W, 0.5, seed=6)
    boxes = [rois[rois[:, 0] == 0, 1:], torch.zeros(0, 4), rois[rois[:, 0] == 2, 1:]]
    ours, theirs, ours_grad, theirs_grad = _both(x, boxes, (2, 3), 0.5, fmt)
    assert ours.shape == (sum(b.shape[0] for b in boxes), C, 2, 3)
    _assert_format(ours, fmt)
    assert torch.equal(ours, theirs)
    assert torch.equal(ours_grad, theirs_grad)
    assert torch.equal(ops.roi_pool(x, as_rois(boxes), (2, 3), 0.5), ours)


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_non_contiguous_input_rois_and_grad_match_torchvision(isa, fmt):
    g = torch.Generator().manual_seed(7)
    base = torch.randn(N, 2 * C, W, H, generator=g).contiguous(memory_format=fmt)
    rois = awkward_rois(N, H, W, 1.0, seed=8)
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
            ours = ops.roi_pool(ours_in, r, (3, 2), 1.0)
            theirs = tvo.roi_pool(theirs_in, rois, (3, 2), 1.0)
            assert torch.equal(ours, theirs), name
            grad = torch.randn(ours.shape[0], ours.shape[1], 2, 3, generator=g).transpose(2, 3)
            ours.backward(grad, retain_graph=True)
            theirs.backward(grad, retain_graph=True)
            assert torch.equal(ours_base.grad, theirs_base.grad), name
            ours_base.grad = theirs_base.grad = None
            ours.sum().backward()
            theirs.sum().backward()
            assert torch.equal(ours_base.grad, theirs_base.grad), name


def test_module_matches_functional_and_torchvision_repr(isa):
    x = _map(seed=9)
    rois = awkward_rois(N, H, W, 0.5, seed=10)
    for output_size, scale in [(3, 0.5), ((2, 5), 0.25), ([4, 4], 1.0)]:
        ours, theirs = ops.RoIPool(output_size, scale), tvo.RoIPool(output_size, scale)
        assert repr(ours) == repr(theirs)
        assert torch.equal(ours(x, rois), ops.roi_pool(x, rois, output_size, scale))
        assert torch.equal(ours(x, rois), theirs(x, rois))
    assert repr(ops.RoIPool(7, 0.0625)) == repr(tvo.RoIPool(7, 0.0625))


# ---------------------------------------------------------------------------------------------------------
# float64 reference
# ---------------------------------------------------------------------------------------------------------


def test_reference_agrees_with_torchvision():
    x = _map(seed=11, dtype=torch.float64, shape=(2, 3, 9, 11))
    for scale in (1.0, 0.5):
        rois = awkward_rois(2, 9, 11, scale, seed=12, dtype=torch.float64)
        for output_size in ((3, 2), 4):
            ref, ref_argmax = roi_pool_reference(x, rois, output_size, scale)
            out, argmax = TV.roi_pool(x, rois, scale, *_pair(output_size))
            assert torch.equal(ref, out)
            assert torch.equal(ref_argmax, argmax.long())


_coordinate = st.one_of(
    st.floats(-3.0, 12.0, allow_nan=False, allow_infinity=False, allow_subnormal=False),
    st.integers(-6, 24).map(lambda v: v / 2.0),  # exact halves: the rounding ties
)


@st.composite
def _pool_cases(draw):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    scale = draw(st.sampled_from([1.0, 0.5, 0.25, 2.0]))
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        rows.append([float(draw(st.integers(0, n - 1)))] + [draw(_coordinate) / scale for _ in range(4)])
    return dict(
        shape=(n, c, h, w),
        rois=torch.tensor(rows, dtype=torch.float64).reshape(-1, 5),
        output_size=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        scale=scale,
        fmt=draw(st.sampled_from(list(FORMATS.values()))),
        ties=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@HYPOTHESIS
@given(case=_pool_cases())
def test_float64_matches_reference(isa, case):
    g = torch.Generator().manual_seed(case["seed"])
    if case["ties"]:
        x = torch.randint(-2, 3, case["shape"], generator=g).to(torch.float64)
    else:
        x = torch.randn(*case["shape"], generator=g, dtype=torch.float64)
    rois, scale = case["rois"], case["scale"]
    ph, pw = case["output_size"]
    out, argmax = RAW.roi_pool(x.contiguous(memory_format=case["fmt"]), rois, scale, ph, pw)
    ref, ref_argmax = roi_pool_reference(x, rois, (ph, pw), scale)
    assert torch.equal(out, ref)
    assert torch.equal(argmax.long(), ref_argmax)

    grad = torch.randn(rois.shape[0], x.shape[1], ph, pw, generator=g, dtype=torch.float64)
    grad = grad.contiguous(memory_format=case["fmt"])
    grad_input = RAW._roi_pool_backward(grad, rois, argmax, scale, ph, pw, *x.shape)
    expected = roi_pool_reference_backward(grad, rois, ref_argmax, x.shape)
    torch.testing.assert_close(grad_input, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# gradcheck, gradgradcheck, opcheck
# ---------------------------------------------------------------------------------------------------------


def _gradcheck_case(seed):
    g = torch.Generator().manual_seed(seed)
    x = _distinct_map(seed, shape=(2, 3, 6, 7))
    xy = torch.rand(4, 2, generator=g, dtype=torch.float64) * 6 - 1.3
    wh = 0.7 + torch.rand(4, 2, generator=g, dtype=torch.float64) * 5
    rois = torch.cat([torch.tensor([[0.0], [1.0], [1.0], [0.0]], dtype=torch.float64), xy, xy + wh], dim=1)
    return x, rois


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck(isa, seed):
    x, rois = _gradcheck_case(seed)
    for fmt in FORMATS.values():
        xin = x.contiguous(memory_format=fmt).requires_grad_()
        fn = lambda t: ops.roi_pool(t, rois, (2, 3), 0.5 + seed * 0.25)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (xin,))
        assert torch.autograd.gradgradcheck(fn, (xin,))


def test_opcheck(isa):
    x, rois = _gradcheck_case(3)
    for dtype in (torch.float32, torch.float64):
        for fmt in FORMATS.values():
            for requires_grad in (False, True):
                xin = x.detach().to(dtype).contiguous(memory_format=fmt).clone().requires_grad_(requires_grad)
                torch.library.opcheck(RAW.roi_pool.default, (xin, rois.to(dtype), 0.5, 2, 3))
    grad = torch.randn(rois.shape[0], 3, 2, 3, dtype=torch.float64)
    _, argmax = RAW.roi_pool(x, rois, 0.5, 2, 3)
    for g in (grad, grad.contiguous(memory_format=torch.channels_last)):
        a = argmax.contiguous(memory_format=torch.channels_last) if g is not grad else argmax
        torch.library.opcheck(RAW._roi_pool_backward.default, (g, rois, a, 0.5, 2, 3, 2, 3, 6, 7))


# ---------------------------------------------------------------------------------------------------------
# dtypes and memory formats
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [8, 64, 100, 257])
def test_channel_blocks_match_torchvision(isa, channels, dtype, fmt):
    # Float maps with unit channel stride keep a block of channels' maxima in registers (8 to 64 channels, by
    # ISA level and dtype) and the channels left over in memory: both parts, output and argmax, bitwise.
    x = _map(seed=20, dtype=dtype, shape=(N, channels, H, W))
    x[:, :, 2:5, 3:6] = x[:, :, 2:3, 3:4]  # ties: the first maximum wins
    x[0, ::3, 1, 1] = float("nan")  # NaN never wins
    rois = awkward_rois(N, H, W, 0.5, seed=21, dtype=dtype)
    out, argmax = RAW.roi_pool(x.contiguous(memory_format=fmt), rois, 0.5, 3, 4)
    expected, expected_argmax = TV.roi_pool(x, rois, 0.5, 3, 4)
    assert torch.equal(out, expected) and torch.equal(argmax, expected_argmax)


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_every_dtype_and_format(isa, dtype, fmt):
    x = _map(seed=13, dtype=dtype)
    rois = awkward_rois(N, H, W, 0.5, seed=14)
    grad = torch.randn(rois.shape[0], C, 3, 4, generator=torch.Generator().manual_seed(15)).to(dtype)
    xin = _leaf(x, fmt)
    out = ops.roi_pool(xin, rois, (3, 4), 0.5)
    out.backward(grad)
    assert out.dtype == dtype and xin.grad.dtype == dtype
    _assert_format(out, fmt)
    _assert_format(xin.grad, fmt)
    if dtype in (torch.float32, torch.float64):
        _, theirs, _, theirs_grad = _both(x, rois.to(dtype), (3, 4), 0.5, fmt, grad=grad)
        assert torch.equal(out, theirs) and torch.equal(xin.grad, theirs_grad)
    else:
        # torchvision has no half roi_pool on CPU: the float32 result on the upcast map, rounded.
        wide = _leaf(x.float(), fmt)
        expected = ops.roi_pool(wide, rois, (3, 4), 0.5)
        expected.backward(grad.float())
        torch.testing.assert_close(out, expected.to(dtype))
        torch.testing.assert_close(xin.grad, wide.grad.to(dtype))


# ---------------------------------------------------------------------------------------------------------
# Empty RoIs, determinism
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("form", ["tensor", "list"])
def test_no_rois(isa, form, fmt):
    x = _leaf(_map(seed=16), fmt)
    boxes = torch.zeros(0, 5) if form == "tensor" else [torch.zeros(0, 4) for _ in range(N)]
    out = ops.roi_pool(x, boxes, (2, 3), 0.5)
    assert out.shape == (0, C, 2, 3)
    _assert_format(out, fmt)
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.count_nonzero(x.grad) == 0


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_backward_is_deterministic(isa, fmt):
    x = _map(seed=17, shape=(2, 32, 24, 32))
    rois = clustered_rois(300, 2, 24, 32, seed=18)
    grad = torch.randn(300, 32, 7, 7, generator=torch.Generator().manual_seed(19))

    def run():
        xin = _leaf(x, fmt)
        ops.roi_pool(xin, rois, 7, 1.0).backward(grad)
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
    _, _, _, theirs = _both(x, rois, 7, 1.0, fmt, grad=grad)
    assert torch.equal(first, theirs)


# ---------------------------------------------------------------------------------------------------------
# Unusual and bad input
# ---------------------------------------------------------------------------------------------------------


def _with_finite_neighbours(bad_rows):
    good = [1.5, 2.0, 9.0, 7.5]
    rows = [[1.0] + good] + [[float(i % N)] + list(b) for i, b in enumerate(bad_rows)] + [[2.0] + good]
    return torch.tensor(rows)


def _check_pools_to_zero(rois):
    x = _map(seed=20)
    for fmt in FORMATS.values():
        xin = _leaf(x, fmt)
        out, argmax = RAW.roi_pool(xin, rois, 1.0, 3, 3)
        assert torch.count_nonzero(out[1:-1]) == 0
        assert (argmax[1:-1] == -1).all()
        assert torch.equal(out[[0, -1]], ops.roi_pool(x, rois[[0, -1]], 3, 1.0))
        ops.roi_pool(xin, rois, 3, 1.0).sum().backward()
        expected_grad = _leaf(x)
        ops.roi_pool(expected_grad, rois[[0, -1]], 3, 1.0).sum().backward()
        assert torch.equal(xin.grad, expected_grad.grad)


def test_nan_roi_pools_to_zero(isa):
    nan = math.nan
    _check_pools_to_zero(
        _with_finite_neighbours(
            [(nan, 1, 5, 5), (1, nan, 5, 5), (1, 1, nan, 5), (1, 1, 5, nan), (nan, nan, nan, nan), (nan, 0, 0, 0)]
        )
    )


def test_infinite_roi_outside_the_map_pools_to_zero(isa):
    inf = math.inf
    _check_pools_to_zero(
        _with_finite_neighbours(
            [(inf, inf, inf, inf), (-inf, -inf, -inf, -inf), (inf, 1, inf, 5), (1, -inf, 5, -inf), (-inf, 1, -4, 5)]
        )
    )


def _whole_map_roi_check(corner, x):
    """A RoI from -corner to +corner encloses the map: with 3 x 3 bins the centre bin covers all of it."""
    rois = torch.tensor([[0.0, -corner, -corner, corner, corner], [1.0, -corner, -corner, corner, corner]])
    out, argmax = RAW.roi_pool(x, rois, 1.0, 3, 3)
    assert torch.equal(out[:, :, 1, 1], x.amax(dim=(2, 3))[:2])
    assert torch.equal(argmax[:, :, 1, 1].long(), x.flatten(2).argmax(dim=2)[:2])


def test_huge_roi_enclosing_the_map(isa):
    x = _distinct_map(21, dtype=torch.float32)
    _whole_map_roi_check(1e9, x)
    # One corner infinite: clamped far away, the first bin covers the whole map.
    out, argmax = RAW.roi_pool(x, torch.tensor([[0.0, 0.0, 0.0, math.inf, math.inf]]), 1.0, 3, 3)
    assert torch.equal(out[0, :, 0, 0], x[0].amax(dim=(1, 2)))
    assert torch.count_nonzero(out[0].flatten(1)[:, 1:]) == 0


@pytest.mark.parametrize("corner", [2.0**30, 1.5e9, math.inf])
def test_huge_roi_beyond_the_clamp_encloses_the_map(isa, corner):
    _whole_map_roi_check(corner, _distinct_map(21, dtype=torch.float32))


def test_float64_rois_with_float32_input_are_converted(isa):
    x = _leaf(_map(seed=22))
    rois = awkward_rois(N, H, W, 0.5, seed=23)
    expected = ops.roi_pool(x, rois, 3, 0.5)
    out = ops.roi_pool(x, rois.double(), 3, 0.5)
    assert out.dtype == torch.float32
    assert torch.equal(out, expected)
    out.sum().backward()
    grad64 = x.grad.clone()
    x.grad = None
    expected.sum().backward()
    assert torch.equal(grad64, x.grad)


X = _map(seed=24)
ROIS = torch.tensor([[0.0, 1.0, 1.0, 6.0, 6.0], [1.0, 2.0, 3.0, 8.0, 9.0]])


def _roi(batch_index):
    return torch.tensor([[batch_index, 1.0, 1.0, 4.0, 4.0]])

_, ARGMAX = RAW.roi_pool(X, ROIS, 1.0, 3, 3)

BAD = [
    ("rois-4-columns", lambda: ops.roi_pool(X, ROIS[:, 1:], 3), RuntimeError, r"rois"),
    ("rois-1d", lambda: ops.roi_pool(X, ROIS[0], 3), RuntimeError, r"rois"),
    ("list-element-5-columns", lambda: ops.roi_pool(X, [ROIS, ROIS], 3), ValueError, r"boxes"),
    ("batch-index-negative", lambda: ops.roi_pool(X, _roi(-1.0), 3), RuntimeError, r"batch index"),
    ("batch-index-too-large", lambda: ops.roi_pool(X, _roi(float(N)), 3), RuntimeError, r"batch index"),
    ("batch-index-nan", lambda: ops.roi_pool(X, _roi(math.nan), 3), RuntimeError, r"batch index"),
    ("output-size-zero", lambda: ops.roi_pool(X, ROIS, 0), RuntimeError, r"output_size"),
    ("output-size-negative", lambda: ops.roi_pool(X, ROIS, (-1, 3)), RuntimeError, r"output_size"),
    ("spatial-scale-zero", lambda: ops.roi_pool(X, ROIS, 3, 0.0), RuntimeError, r"spatial_scale"),
    ("spatial-scale-negative", lambda: ops.roi_pool(X, ROIS, 3, -1.0), RuntimeError, r"spatial_scale"),
    ("spatial-scale-inf", lambda: ops.roi_pool(X, ROIS, 3, math.inf), RuntimeError, r"spatial_scale"),
    ("input-3d", lambda: ops.roi_pool(X[0], ROIS, 3), RuntimeError, r"input"),
    ("input-int", lambda: ops.roi_pool(X.int(), ROIS, 3), RuntimeError, r"input"),
    ("rois-int", lambda: ops.roi_pool(X, ROIS.int(), 3), RuntimeError, r"rois"),
    ("rois-on-meta", lambda: ops.roi_pool(X, ROIS.to("meta"), 3), ValueError, r"same device"),
    ("raw-rois-4-columns", lambda: RAW.roi_pool(X, ROIS[:, 1:], 1.0, 3, 3), RuntimeError, r"rois"),
    ("raw-spatial-scale", lambda: RAW.roi_pool(X, ROIS, 0.0, 3, 3), RuntimeError, r"spatial_scale"),
    (
        "raw-backward-argmax-dtype",
        lambda: RAW._roi_pool_backward(torch.zeros(2, C, 3, 3), ROIS, ARGMAX.long(), 1.0, 3, 3, N, C, H, W),
        RuntimeError,
        r"argmax",
    ),
    (
        "raw-backward-argmax-out-of-range",
        lambda: RAW._roi_pool_backward(torch.zeros(2, C, 3, 3), ROIS, ARGMAX + H * W, 1.0, 3, 3, N, C, H, W),
        RuntimeError,
        r"argmax",
    ),
    (
        "raw-backward-batch-index",
        lambda: RAW._roi_pool_backward(torch.zeros(2, C, 3, 3), ROIS, ARGMAX, 1.0, 3, 3, 1, C, H, W),
        RuntimeError,
        r"batch index",
    ),
]


@pytest.mark.parametrize("call, error, match", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
