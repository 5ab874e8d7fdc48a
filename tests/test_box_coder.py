"""BoxCoder, encode_boxes and decode_boxes: parity with torchvision's BoxCoder (float32/float64 within an ulp
of torch's own exp and log, float16/bfloat16 within an ulp of their dtype), a float64 reference, the clamp
of dw/dh, NaN/inf, empty and non-contiguous inputs, gradients (gradcheck, gradgradcheck, equality with
torchvision's autograd), opcheck and bad input.

Tests of the kernels take the ``isa`` fixture and so run at every CPU instruction-set level the machine
supports.
"""

import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

import pydet_ops as ops
from conftest import uniform_boxes

RAW = torch.ops.pydet_ops

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
REDUCED = (torch.float16, torch.bfloat16)
WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 1.0, 0.5, 3.0)]
DEFAULT_CLIP = math.log(1000.0 / 16)

# Significand bits (with the implicit one) of each floating type.
_PRECISION = {torch.float16: 11, torch.bfloat16: 8, torch.float32: 24, torch.float64: 53}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _boxes(n, seed=0, dtype=torch.float32, img=800.0, lo=2.0, hi=300.0):
    return uniform_boxes(n, seed=seed, img=img, lo=lo, hi=hi, dtype=torch.float64).to(dtype)


def _deltas(n, k=1, seed=0, dtype=torch.float32, scale=0.7):
    return (torch.randn(n, 4 * k, generator=_gen(seed), dtype=torch.float64) * scale).to(dtype)


def _ulp(x, dtype):
    """The spacing of ``dtype``'s floats at |x| (the smallest subnormal near 0), in float64."""
    x = x.double().abs()
    _, exponent = torch.frexp(x)
    spacing = torch.ldexp(torch.ones_like(x), exponent - _PRECISION[dtype])
    finfo = torch.finfo(dtype)
    return spacing.clamp(min=finfo.tiny * finfo.eps)


def _assert_within_ulp(actual, expected, ulps=1, min_exact=0.99):
    """Same dtype, shape, NaN and inf pattern; finite values within ``ulps`` ulps of ``expected``'s dtype."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert torch.equal(actual.isnan(), expected.isnan())
    finite = expected.isfinite()
    assert torch.equal(actual.isfinite(), finite)
    assert torch.equal(actual[~finite & ~expected.isnan()], expected[~finite & ~expected.isnan()])
    a, e = actual[finite].double(), expected[finite].double()
    bad = (a - e).abs() > ulps * _ulp(e, expected.dtype)
    assert not bad.any(), (a[bad][:5], e[bad][:5])
    if expected.numel():
        same = (actual == expected) | (actual.isnan() & expected.isnan())
        assert same.double().mean() >= min_exact


def _assert_float_parity(actual, expected, min_exact=0.9):
    """float32 / float64 parity: torch's own exp and log may be an ulp off the correctly rounded value, which
    moves a coordinate by an ulp or two of the largest magnitude involved."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if expected.numel() == 0:
        return
    eps = torch.finfo(expected.dtype).eps
    finite = expected[expected.isfinite()]
    scale = finite.abs().max().item() if finite.numel() else 1.0
    rtol = 1e-6 if expected.dtype == torch.float32 else 1e-14
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=4 * eps * max(scale, 1.0), equal_nan=True)
    same = (actual == expected) | (actual.isnan() & expected.isnan())
    assert same.double().mean() > min_exact


def _assert_parity(actual, expected):
    if expected.dtype in REDUCED:
        _assert_within_ulp(actual, expected)
    else:
        _assert_float_parity(actual, expected)


# ---------------------------------------------------------------------------------------------------------
# Parity with torchvision
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
@pytest.mark.parametrize("k", [1, 91])
def test_decode_single_equals_torchvision(isa, dtype, weights, k):
    n = 1000 if k == 1 else 60
    boxes = _boxes(n, seed=1, dtype=dtype)
    codes = _deltas(n, k, seed=2, dtype=dtype)
    ours = ops.BoxCoder(weights).decode_single(codes, boxes)
    theirs = TVBoxCoder(weights).decode_single(codes, boxes)
    assert ours.shape == (n, 4 * k)
    _assert_parity(ours, theirs)
    # The function form gives the same result.
    assert torch.equal(ops.decode_boxes(codes, boxes, weights), ours)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
def test_encode_single_equals_torchvision(isa, dtype, weights):
    n = 1500
    reference = _boxes(n, seed=3, dtype=dtype)
    proposals = _boxes(n, seed=4, dtype=dtype)
    ours = ops.BoxCoder(weights).encode_single(reference, proposals)
    theirs = TVBoxCoder(weights).encode_single(reference, proposals)
    assert ours.shape == (n, 4) and ours.dtype == dtype
    _assert_parity(ours, theirs)
    assert torch.equal(ops.encode_boxes(reference, proposals, weights), ours)


@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
@pytest.mark.parametrize("k", [1, 91])
def test_decode_list_of_images_equals_torchvision(isa, weights, k):
    counts = [7, 0, 40, 13]
    boxes = [_boxes(c, seed=10 + i) for i, c in enumerate(counts)]
    codes = _deltas(sum(counts), k, seed=5)
    ours = ops.BoxCoder(weights).decode(codes, boxes)
    theirs = TVBoxCoder(weights).decode(codes, boxes)
    assert ours.shape == (sum(counts), k, 4)
    _assert_float_parity(ours, theirs)
    # Any shape with the right number of elements is accepted (torchvision reshapes), and a tuple of boxes.
    reshaped = ops.BoxCoder(weights).decode(codes.reshape(-1), tuple(boxes))
    assert torch.equal(reshaped, ours)


@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
def test_encode_list_of_images_equals_torchvision(weights):
    counts = [5, 0, 31, 2]
    reference = [_boxes(c, seed=20 + i) for i, c in enumerate(counts)]
    proposals = [_boxes(c, seed=30 + i) for i, c in enumerate(counts)]
    ours = ops.BoxCoder(weights).encode(reference, proposals)
    theirs = TVBoxCoder(weights).encode(reference, proposals)
    assert len(ours) == len(theirs) == len(counts)
    for a, b, c in zip(ours, theirs, counts):
        assert a.shape == (c, 4)
        _assert_float_parity(a, b, min_exact=0.8 if c < 10 else 0.9)


@pytest.mark.parametrize(
    "codes_dtype,boxes_dtype",
    [
        (torch.float32, torch.float64),
        (torch.float64, torch.float32),
        (torch.float32, torch.float16),
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float64),
        (torch.float16, torch.bfloat16),
    ],
    ids=str,
)
def test_decode_boxes_of_another_dtype(isa, codes_dtype, boxes_dtype):
    n, k = 500, 3
    boxes = _boxes(n, seed=6, dtype=boxes_dtype)
    codes = _deltas(n, k, seed=7, dtype=codes_dtype)
    for weights in WEIGHTS:
        ours = ops.BoxCoder(weights).decode_single(codes, boxes)
        theirs = TVBoxCoder(weights).decode_single(codes, boxes)
        assert ours.dtype == codes_dtype
        _assert_parity(ours, theirs)
        listed = ops.BoxCoder(weights).decode(codes, [boxes[:100], boxes[100:]])
        assert torch.equal(listed, ours.reshape(n, k, 4))


def test_non_contiguous_inputs(isa):
    n, k = 300, 5
    weights = (10.0, 10.0, 5.0, 5.0)
    wide = _deltas(n, 2 * k, seed=8)
    cases = {
        "strided-columns": (wide[:, ::2], _boxes(2 * n, seed=9)[::2]),
        "transposed": (_deltas(n, k, seed=10).t().contiguous().t(), _boxes(n, seed=11).t().contiguous().t()),
        "row-slice": (_deltas(2 * n, k, seed=12)[1::2], _boxes(3 * n, seed=13)[n : 2 * n]),
    }
    for name, (codes, boxes) in cases.items():
        assert not codes.is_contiguous() or not boxes.is_contiguous(), name
        ours = ops.decode_boxes(codes, boxes, weights)
        assert torch.equal(ours, ops.decode_boxes(codes.contiguous(), boxes.contiguous(), weights)), name
        _assert_float_parity(ours, TVBoxCoder(weights).decode_single(codes, boxes))
    reference = _boxes(2 * n, seed=14)[::2]
    proposals = _boxes(n, seed=15).t().contiguous().t()
    ours = ops.encode_boxes(reference, proposals, weights)
    assert torch.equal(ours, ops.encode_boxes(reference.contiguous(), proposals.contiguous(), weights))
    _assert_float_parity(ours, TVBoxCoder(weights).encode_single(reference, proposals))


def test_encode_then_decode_round_trip(isa):
    reference = _boxes(1000, seed=16, dtype=torch.float64)
    proposals = _boxes(1000, seed=17, dtype=torch.float64)
    for weights in WEIGHTS:
        coder = ops.BoxCoder(weights, bbox_xform_clip=math.inf)
        back = coder.decode_single(coder.encode_single(reference, proposals), proposals)
        torch.testing.assert_close(back, reference, rtol=1e-12, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------
# Float64 reference
# ---------------------------------------------------------------------------------------------------------


def _encode_reference(reference, proposals, weights):
    wx, wy, ww, wh = weights
    rows = []
    for g, p in zip(reference.tolist(), proposals.tolist()):
        gw, gh, pw, ph = g[2] - g[0], g[3] - g[1], p[2] - p[0], p[3] - p[1]
        dx = wx * ((g[0] + g[2]) / 2 - (p[0] + p[2]) / 2) / pw
        dy = wy * ((g[1] + g[3]) / 2 - (p[1] + p[3]) / 2) / ph
        rows.append([dx, dy, ww * math.log(gw / pw), wh * math.log(gh / ph)])
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


def _decode_reference(codes, boxes, weights, clip=DEFAULT_CLIP):
    wx, wy, ww, wh = weights
    out = []
    for c, b in zip(codes.tolist(), boxes.tolist()):
        w, h = b[2] - b[0], b[3] - b[1]
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        row = []
        for j in range(0, len(c), 4):
            px = cx + c[j] / wx * w
            py = cy + c[j + 1] / wy * h
            pw = w * math.exp(min(c[j + 2] / ww, clip))
            ph = h * math.exp(min(c[j + 3] / wh, clip))
            row += [px - pw / 2, py - ph / 2, px + pw / 2, py + ph / 2]
        out.append(row)
    return torch.tensor(out, dtype=torch.float64).reshape(len(out), -1)


@pytest.mark.parametrize("weights", WEIGHTS + [(0.1, 1 / 3, 0.7, 1.3)], ids=str)
def test_float64_reference(isa, weights):
    # Inputs exactly representable in float32, so that both precisions see the same values.
    boxes = _boxes(200, seed=18, dtype=torch.float32).double()
    reference = _boxes(200, seed=19, dtype=torch.float32).double()
    codes = _deltas(200, 3, seed=20, scale=1.5, dtype=torch.float32).double()
    codes[::7, 2] = 20.0  # clamped
    expected_dec = _decode_reference(codes, boxes, weights)
    expected_enc = _encode_reference(reference, boxes, weights)
    # float64: tight.
    torch.testing.assert_close(ops.decode_boxes(codes, boxes, weights), expected_dec, rtol=1e-13, atol=1e-10)
    torch.testing.assert_close(ops.encode_boxes(reference, boxes, weights), expected_enc, rtol=1e-13, atol=1e-12)
    # float32: within float32 rounding of a handful of operations.
    dec32 = ops.decode_boxes(codes.float(), boxes.float(), weights)
    enc32 = ops.encode_boxes(reference.float(), boxes.float(), weights)
    assert dec32.dtype == enc32.dtype == torch.float32
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(dec32.double(), expected_dec, rtol=8 * eps, atol=8 * eps * expected_dec.abs().max())
    torch.testing.assert_close(enc32.double(), expected_enc, rtol=8 * eps, atol=64 * eps)


# ---------------------------------------------------------------------------------------------------------
# Clamp, NaN, inf
# ---------------------------------------------------------------------------------------------------------


def _clip_deltas(clip, dtype):
    clip_t = torch.tensor(clip, dtype=dtype)
    above = torch.nextafter(clip_t.float(), torch.tensor(math.inf)).to(dtype)
    below = torch.nextafter(clip_t.float(), torch.tensor(-math.inf)).to(dtype)
    values = [clip_t, above, below, clip_t + 1, clip_t * 3, torch.tensor(100.0), torch.tensor(1e30)]
    values += [torch.tensor(math.inf), torch.tensor(-math.inf), torch.tensor(-1e30), torch.tensor(-30.0)]
    values += [torch.tensor(0.0), torch.tensor(math.nan)]
    return torch.stack([v.to(dtype) for v in values])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("clip", [DEFAULT_CLIP, 0.5, -1.0, 10.0, math.inf], ids=lambda c: f"clip={c:.3g}")
def test_bbox_xform_clip_equals_torchvision(isa, dtype, clip):
    dw = _clip_deltas(clip if math.isfinite(clip) else 3.0, dtype)
    m = dw.shape[0]
    # Every (dw, dh) pair; dx and dy ordinary, then a few inf / NaN centre deltas.
    codes = torch.stack(
        [torch.full((m, m), 0.25, dtype=dtype), torch.full((m, m), -0.5, dtype=dtype), dw[:, None].expand(m, m),
         dw[None, :].expand(m, m)],
        dim=-1,
    ).reshape(m * m, 4)
    centre = torch.tensor([[math.inf, 0, 0, 0], [0, -math.inf, 0, 0], [math.nan, 0, 0, 0]], dtype=dtype)
    codes = torch.cat([codes, centre])
    boxes = _boxes(codes.shape[0], seed=21, dtype=dtype, img=100.0, lo=1.0, hi=50.0)
    boxes[:3] = torch.tensor([[5.0, 5.0, 5.0, 9.0], [1.0, 2.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0]], dtype=dtype)
    for weights in [(1.0, 1.0, 1.0, 1.0), (2.0, 1.0, 0.5, 3.0)]:
        ours = ops.BoxCoder(weights, bbox_xform_clip=clip).decode_single(codes, boxes)
        theirs = TVBoxCoder(weights, bbox_xform_clip=clip).decode_single(codes, boxes)
        _assert_parity(ours, theirs)


def test_clamp_caps_the_box_size():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 20.0]], dtype=torch.float64).repeat(4, 1)
    codes = torch.tensor(
        [[0, 0, 100.0, 1e300], [0, 0, math.inf, DEFAULT_CLIP], [0, 0, 3.0, 4.0], [0, 0, -math.inf, -1e300]],
        dtype=torch.float64,
    )
    out = ops.decode_boxes(codes, boxes, (1.0, 1.0, 1.0, 1.0))
    widths, heights = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    cap = 1000.0 / 16
    torch.testing.assert_close(widths[:2], torch.tensor([10 * cap, 10 * cap], dtype=torch.float64))
    torch.testing.assert_close(heights[:2], torch.tensor([20 * cap, 20 * cap], dtype=torch.float64))
    torch.testing.assert_close(widths[2], torch.tensor(10 * math.exp(3.0), dtype=torch.float64))
    torch.testing.assert_close(heights[2], torch.tensor(20 * math.exp(4.0), dtype=torch.float64))
    assert widths[3] == 0 and heights[3] == 0
    torch.testing.assert_close(out[3], torch.tensor([5.0, 10.0, 5.0, 10.0], dtype=torch.float64))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nan_propagates_like_torchvision(dtype):
    boxes = _boxes(6, seed=22, dtype=dtype)
    codes = _deltas(6, 2, seed=23, dtype=dtype)
    codes[0, 0] = math.nan
    codes[1, 3] = math.nan
    codes[2, 6] = math.nan
    boxes[3, 0] = math.nan
    boxes[4, 3] = math.nan
    coder, tv_coder = ops.BoxCoder(WEIGHTS[1]), TVBoxCoder(WEIGHTS[1])
    ours = coder.decode_single(codes, boxes)
    theirs = tv_coder.decode_single(codes, boxes)
    assert torch.equal(ours.isnan(), theirs.isnan())
    assert ours[0, 0].isnan() and ours[1, 1].isnan() and ours[2, 4].isnan() and ours[3, 0].isnan()
    assert not ours[5].isnan().any()
    _assert_parity(ours, theirs)
    proposals = _boxes(6, seed=24, dtype=dtype)
    enc_ours = coder.encode_single(boxes, proposals)
    enc_theirs = tv_coder.encode_single(boxes, proposals)
    assert torch.equal(enc_ours.isnan(), enc_theirs.isnan()) and enc_ours[3].isnan().any()
    _assert_parity(enc_ours, enc_theirs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_degenerate_boxes_like_torchvision(dtype):
    # Zero-size and inverted proposals / reference boxes: inf, -inf and NaN deltas as torchvision gives them.
    reference = torch.tensor(
        [[0, 0, 10, 10], [5, 5, 5, 8], [3, 3, 9, 3], [10, 10, 0, 0], [0, 0, 4, 4], [1, 1, 2, 2]], dtype=dtype
    )
    proposals = torch.tensor(
        [[0, 0, 0, 10], [1, 1, 4, 4], [2, 2, 8, 9], [0, 0, 10, 10], [4, 4, 0, 0], [1, 1, 1, 1]], dtype=dtype
    )
    for weights in WEIGHTS:
        ours = ops.BoxCoder(weights).encode_single(reference, proposals)
        theirs = TVBoxCoder(weights).encode_single(reference, proposals)
        assert torch.equal(ours.isnan(), theirs.isnan())
        _assert_parity(ours, theirs)
        codes = torch.tensor([[0.5, -0.5, 0.2, -0.1]], dtype=dtype).repeat(6, 1)
        ours = ops.BoxCoder(weights).decode_single(codes, proposals)
        _assert_parity(ours, TVBoxCoder(weights).decode_single(codes, proposals))


# ---------------------------------------------------------------------------------------------------------
# Empty inputs
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_empty_inputs_shapes_like_torchvision(dtype):
    coder, tv_coder = ops.BoxCoder(WEIGHTS[1]), TVBoxCoder(WEIGHTS[1])
    empty = torch.zeros(0, 4, dtype=dtype)
    for k in (1, 91):
        codes = torch.zeros(0, 4 * k, dtype=dtype)
        ours, theirs = coder.decode_single(codes, empty), tv_coder.decode_single(codes, empty)
        assert ours.shape == theirs.shape == (0, 4 * k) and ours.dtype == theirs.dtype
        ours, theirs = coder.decode(codes, [empty]), tv_coder.decode(codes, [empty])
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        ours, theirs = coder.decode(codes, [empty, empty[:0]]), tv_coder.decode(codes, [empty, empty[:0]])
        assert ours.shape == theirs.shape
    # K = 0 deltas for some boxes.
    boxes = _boxes(5, dtype=dtype)
    codes = torch.zeros(5, 0, dtype=dtype)
    assert coder.decode_single(codes, boxes).shape == tv_coder.decode_single(codes, boxes).shape == (5, 0)
    ours, theirs = coder.encode_single(empty, empty), tv_coder.encode_single(empty, empty)
    assert ours.shape == theirs.shape == (0, 4) and ours.dtype == theirs.dtype
    ours, theirs = coder.encode([empty, empty], [empty, empty]), tv_coder.encode([empty, empty], [empty, empty])
    assert [t.shape for t in ours] == [t.shape for t in theirs] == [(0, 4), (0, 4)]


def test_empty_boxes_list_decode_gives_empty_encode_raises_like_torchvision():
    # decode with no images is an empty [0, 4] result (the README's rule; torchvision fails in torch.cat)
    codes = torch.zeros(0, 4)
    decoded = ops.BoxCoder(WEIGHTS[0]).decode(codes, [])
    assert decoded.shape == (0, 4) and decoded.dtype == codes.dtype
    with pytest.raises(Exception) as theirs:
        TVBoxCoder(WEIGHTS[0]).encode([], [])
    with pytest.raises(type(theirs.value)):
        ops.BoxCoder(WEIGHTS[0]).encode([], [])


# ---------------------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------------------


def _grad_case(seed, n=6, k=2):
    boxes = _boxes(n, seed=seed, dtype=torch.float64, img=50.0, lo=3.0, hi=30.0)
    reference = _boxes(n, seed=seed + 100, dtype=torch.float64, img=50.0, lo=3.0, hi=30.0)
    codes = _deltas(n, k, seed=seed + 200, dtype=torch.float64, scale=0.5)
    return codes, boxes, reference


@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
def test_gradcheck(isa, weights):
    codes, boxes, reference = _grad_case(1)
    # Well below the clamp (where the derivative of dw, dh jumps to 0).
    assert (codes[:, 2::4] / weights[2]).max() < DEFAULT_CLIP - 0.5
    assert (codes[:, 3::4] / weights[3]).max() < DEFAULT_CLIP - 0.5
    args = [t.clone().requires_grad_() for t in (codes, boxes)]
    assert torch.autograd.gradcheck(lambda c, b: ops.decode_boxes(c, b, weights), args)
    args = [t.clone().requires_grad_() for t in (reference, boxes)]
    assert torch.autograd.gradcheck(lambda r, p: ops.encode_boxes(r, p, weights), args)
    # One argument at a time.
    assert torch.autograd.gradcheck(lambda c: ops.decode_boxes(c, boxes, weights), (codes.clone().requires_grad_(),))
    assert torch.autograd.gradcheck(lambda b: ops.decode_boxes(codes, b, weights), (boxes.clone().requires_grad_(),))
    proposals = boxes.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: ops.encode_boxes(reference, p, weights), (proposals,))


@pytest.mark.parametrize("weights", WEIGHTS[1:], ids=str)
def test_gradgradcheck(weights):
    codes, boxes, reference = _grad_case(2, n=4, k=1)
    args = [t.clone().requires_grad_() for t in (codes, boxes)]
    assert torch.autograd.gradgradcheck(lambda c, b: ops.decode_boxes(c, b, weights), args)
    args = [t.clone().requires_grad_() for t in (reference, boxes)]
    assert torch.autograd.gradgradcheck(lambda r, p: ops.encode_boxes(r, p, weights), args)


def _grads(fn, inputs, weight):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    return out, torch.autograd.grad((out * weight).sum(), leaves)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
def test_gradients_equal_torchvision(dtype, weights):
    n, k = 64, 3
    codes = _deltas(n, k, seed=30, dtype=dtype, scale=1.0)
    codes[::5, 2] = 30.0  # clamped with every weight: no gradient through dw
    boxes = _boxes(n, seed=31, dtype=dtype)
    reference = _boxes(n, seed=32, dtype=dtype)
    weight = torch.randn(n, 4 * k, generator=_gen(33), dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    ours_out, ours = _grads(ops.BoxCoder(weights).decode_single, (codes, boxes), weight)
    theirs_out, theirs = _grads(TVBoxCoder(weights).decode_single, (codes, boxes), weight)
    _assert_float_parity(ours_out.detach(), theirs_out.detach())
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    assert (ours[0][::5, 2] == 0).all()
    weight = weight[:, :4]
    ours_out, ours = _grads(ops.BoxCoder(weights).encode_single, (reference, boxes), weight)
    theirs_out, theirs = _grads(TVBoxCoder(weights).encode_single, (reference, boxes), weight)
    _assert_float_parity(ours_out.detach(), theirs_out.detach())
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol / 10)


def test_gradients_with_mixed_dtypes_equal_torchvision():
    # float64 boxes decoded with float32 deltas: the boxes' gradient comes back in float64.
    codes = _deltas(40, 2, seed=34)
    boxes = _boxes(40, seed=35, dtype=torch.float64)
    weight = torch.randn(40, 8, generator=_gen(36))
    _, ours = _grads(ops.BoxCoder(WEIGHTS[1]).decode_single, (codes, boxes), weight)
    _, theirs = _grads(TVBoxCoder(WEIGHTS[1]).decode_single, (codes, boxes), weight)
    assert ours[1].dtype == torch.float64
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_gradient_of_only_one_argument():
    codes, boxes, reference = _grad_case(3)
    codes.requires_grad_()
    out = ops.decode_boxes(codes, boxes, WEIGHTS[0])
    (g,) = torch.autograd.grad(out.sum(), codes)
    assert g.shape == codes.shape and boxes.grad is None
    reference.requires_grad_()
    out = ops.encode_boxes(reference, boxes, WEIGHTS[0])
    (g,) = torch.autograd.grad(out.sum(), reference)
    assert g.shape == reference.shape


# ---------------------------------------------------------------------------------------------------------
# opcheck
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck(dtype):
    codes, boxes, reference = _grad_case(4, n=5, k=3)
    codes, boxes, reference = codes.to(dtype), boxes.to(dtype), reference.to(dtype)
    torch.library.opcheck(RAW.decode_boxes.default, (codes, boxes, [2.0, 1.0, 0.5, 3.0], 0.1))
    torch.library.opcheck(RAW.encode_boxes.default, (reference, boxes, [2.0, 1.0, 0.5, 3.0]))
    if dtype == torch.float64:  # (the autograd checks are the slow part of opcheck)
        c, b, r = (t.clone().requires_grad_() for t in (codes, boxes, reference))
        torch.library.opcheck(RAW.decode_boxes.default, (c, b, [10.0, 10.0, 5.0, 5.0], DEFAULT_CLIP))
        torch.library.opcheck(RAW.encode_boxes.default, (r, b.detach(), [1.0, 1.0, 1.0, 1.0]))
    torch.library.opcheck(RAW.decode_boxes.default, (codes[:0], boxes[:0], [1.0] * 4, DEFAULT_CLIP))
    torch.library.opcheck(RAW.encode_boxes.default, (reference[:0], boxes[:0], [1.0] * 4))


def test_opcheck_mixed_dtypes():
    codes, boxes, reference = _grad_case(5, n=5, k=2)
    args = (codes.float().requires_grad_(), boxes.requires_grad_(), [1.0] * 4, 2.0)
    torch.library.opcheck(RAW.decode_boxes.default, args)
    torch.library.opcheck(RAW.encode_boxes.default, (reference.float(), boxes.half(), [1.0] * 4))


# ---------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------

B = _boxes(5)
C = _deltas(5)
W = (1.0, 1.0, 1.0, 1.0)

BAD = [
    ("decode-6-columns", lambda: ops.decode_boxes(torch.zeros(5, 6), B, W), RuntimeError, r"multiple of 4"),
    ("decode-3-columns", lambda: ops.decode_boxes(torch.zeros(5, 3), B, W), RuntimeError, r"multiple of 4"),
    (
        "coder-decode-single-6",
        lambda: ops.BoxCoder(W).decode_single(torch.zeros(5, 6), B),
        RuntimeError,
        r"multiple of 4",
    ),
    ("raw-decode-6", lambda: RAW.decode_boxes(torch.zeros(5, 6), B, list(W), 1.0), RuntimeError, r"multiple of 4"),
    ("decode-codes-1d", lambda: ops.decode_boxes(torch.zeros(20), B, W), RuntimeError, r"rel_codes must be a 2-D"),
    ("decode-codes-3d", lambda: ops.decode_boxes(C[None], B, W), RuntimeError, r"rel_codes must be a 2-D"),
    ("decode-row-mismatch", lambda: ops.decode_boxes(C[:4], B, W), RuntimeError, r"same number of rows.*4 and 5"),
    (
        "coder-decode-row-mismatch",
        lambda: ops.BoxCoder(W).decode_single(C, B[:3]),
        RuntimeError,
        r"same number of rows",
    ),
    (
        "decode-boxes-5-cols",
        lambda: ops.decode_boxes(C, torch.zeros(5, 5), W),
        RuntimeError,
        r"boxes must have 4 values",
    ),
    ("decode-boxes-1d", lambda: ops.decode_boxes(C, torch.zeros(20), W), RuntimeError, r"boxes must be a 2-D"),
    ("decode-boxes-3d", lambda: ops.decode_boxes(C, B[None], W), RuntimeError, r"boxes must be a 2-D"),
    ("decode-int-codes", lambda: ops.decode_boxes(C.long(), B, W), RuntimeError, r"rel_codes must be a floating"),
    ("decode-int-boxes", lambda: ops.decode_boxes(C, B.int(), W), RuntimeError, r"boxes must be a floating"),
    ("decode-bool-codes", lambda: ops.decode_boxes(C.bool(), B, W), RuntimeError, r"rel_codes must be a floating"),
    ("decode-weights-3", lambda: ops.decode_boxes(C, B, (1.0, 1.0, 1.0)), ValueError, r"weights must be 4"),
    ("decode-weights-5", lambda: ops.decode_boxes(C, B, (1.0,) * 5), ValueError, r"weights must be 4"),
    ("decode-weights-text", lambda: ops.decode_boxes(C, B, "abcd"), TypeError, r"weights"),
    (
        "raw-decode-weights-3",
        lambda: RAW.decode_boxes(C, B, [1.0, 1.0, 1.0], 1.0),
        RuntimeError,
        r"weights must hold 4",
    ),
    ("decode-clip-nan", lambda: ops.decode_boxes(C, B, W, math.nan), RuntimeError, r"bbox_xform_clip must not be NaN"),
    ("encode-row-mismatch", lambda: ops.encode_boxes(B, B[:4], W), RuntimeError, r"same number of boxes.*5 and 4"),
    (
        "encode-ref-5-cols",
        lambda: ops.encode_boxes(torch.zeros(5, 5), B, W),
        RuntimeError,
        r"reference_boxes must have 4",
    ),
    ("encode-prop-3d", lambda: ops.encode_boxes(B, B[None], W), RuntimeError, r"proposals must be a 2-D"),
    ("encode-int-ref", lambda: ops.encode_boxes(B.long(), B, W), RuntimeError, r"reference_boxes must be a floating"),
    ("encode-int-prop", lambda: ops.encode_boxes(B, B.int(), W), RuntimeError, r"proposals must be a floating"),
    ("encode-weights-2", lambda: ops.encode_boxes(B, B, (1.0, 1.0)), ValueError, r"weights must be 4"),
    ("raw-encode-weights-5", lambda: RAW.encode_boxes(B, B, [1.0] * 5), RuntimeError, r"weights must hold 4"),
    ("coder-weights-3", lambda: ops.BoxCoder((1.0, 1.0, 1.0)), ValueError, r"weights must be 4"),
    ("coder-weights-none", lambda: ops.BoxCoder(None), TypeError, r"weights"),
    ("coder-clip-nan", lambda: ops.BoxCoder(W, bbox_xform_clip=math.nan), ValueError, r"bbox_xform_clip"),
    ("coder-decode-boxes-tensor", lambda: ops.BoxCoder(W).decode(C, B), TypeError, r"boxes must be a list or tuple"),
    (
        "coder-decode-codes-list",
        lambda: ops.BoxCoder(W).decode(C.tolist(), [B]),
        TypeError,
        r"rel_codes must be a Tensor",
    ),
    ("coder-encode-int", lambda: ops.BoxCoder(W).encode_single(B.long(), B), RuntimeError, r"floating"),
]


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_raises(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_valid_versions_of_the_bad_calls_work():
    assert ops.decode_boxes(torch.zeros(5, 8), B, W).shape == (5, 8)
    assert ops.decode_boxes(C, B, W).shape == (5, 4)
    assert RAW.decode_boxes(C, B, list(W), 1.0).shape == (5, 4)
    assert ops.encode_boxes(B, B, W).shape == (5, 4)
    assert RAW.encode_boxes(B, B, list(W)).shape == (5, 4)
    assert ops.BoxCoder(W).decode(C, [B]).shape == (5, 1, 4)
    assert ops.BoxCoder(torch.tensor(W)).encode_single(B, B).shape == (5, 4)
    assert ops.decode_boxes(C, B, W, math.inf).shape == (5, 4)


@pytest.mark.parametrize(
    "ref_dtype,prop_dtype",
    [(torch.float32, torch.float64), (torch.float16, torch.float32), (torch.float64, torch.bfloat16)],
    ids=str,
)
def test_encode_mixed_dtypes_equals_torchvision(ref_dtype, prop_dtype):
    # Each box set's width and centre in its own dtype, the rest promoted: bit for bit torchvision's.
    ref = _boxes(500, seed=3).to(ref_dtype)
    prop = _boxes(500, seed=4).to(prop_dtype)
    weights = (10.0, 10.0, 5.0, 5.0)
    expected = TVBoxCoder(weights).encode_single(ref, prop)
    actual = ops.BoxCoder(weights).encode_single(ref, prop)
    assert actual.dtype == expected.dtype
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)
