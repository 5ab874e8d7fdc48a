"""Pairwise overlap family: box_iou, generalized_box_iou, distance_box_iou, complete_box_iou.

Checked against torchvision.ops (bit for bit in float32 for IoU / GIoU / DIoU, within 1e-6 for CIoU) and
against the independent float64 reference in reference.py. Every kernel test runs under every supported
ISA level through the ``isa`` fixture.
"""

import pytest
import torch
import torchvision.ops as tvo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pydet_ops as ops
from conftest import CRAFTED_NAMES, assert_bitwise_equal, crafted_box_sets, ulp_close, uniform_boxes
from reference import pairwise_reference

KINDS = ("iou", "giou", "diou", "ciou")
OURS = {
    "iou": ops.box_iou,
    "giou": ops.generalized_box_iou,
    "diou": ops.distance_box_iou,
    "ciou": ops.complete_box_iou,
}
THEIRS = {
    "iou": tvo.box_iou,
    "giou": tvo.generalized_box_iou,
    "diou": tvo.distance_box_iou,
    "ciou": tvo.complete_box_iou,
}
RAW = {
    "iou": torch.ops.pydet_ops.box_iou,
    "giou": torch.ops.pydet_ops.generalized_box_iou,
    "diou": torch.ops.pydet_ops.distance_box_iou,
    "ciou": torch.ops.pydet_ops.complete_box_iou,
}
HAS_EPS = ("diou", "ciou")

HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def assert_matches_torchvision(kind, ours, theirs):
    """float32: bit for bit for iou/giou/diou; CIoU (an atan per box) within 1e-6."""
    if kind == "ciou":
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6, equal_nan=True)
    else:
        assert_bitwise_equal(ours, theirs)


def both(kind, b1, b2, **kwargs):
    return OURS[kind](b1, b2, **kwargs), THEIRS[kind](b1, b2, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# Parity with torchvision
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n,m,seed", [(1, 1, 0), (7, 13, 1), (64, 200, 2), (301, 37, 3), (33, 1000, 4)])
def test_float32_random_matches_torchvision(isa, kind, n, m, seed):
    b1 = uniform_boxes(n, seed=seed)
    b2 = uniform_boxes(m, seed=seed + 100)
    assert_matches_torchvision(kind, *both(kind, b1, b2))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", CRAFTED_NAMES)
def test_float32_crafted_matches_torchvision(isa, kind, name):
    boxes = crafted_box_sets(torch.float32)[name]
    others = uniform_boxes(9, seed=11, img=120.0, lo=1.0, hi=80.0)
    assert_matches_torchvision(kind, *both(kind, boxes, boxes))
    assert_matches_torchvision(kind, *both(kind, boxes, others))
    assert_matches_torchvision(kind, *both(kind, others, boxes))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", CRAFTED_NAMES)
def test_float64_crafted_matches_torchvision(isa, kind, name):
    boxes = crafted_box_sets(torch.float64)[name]
    ours, theirs = both(kind, boxes, boxes)
    ulp_close(ours, theirs, ulps=8)


@pytest.mark.parametrize("kind", HAS_EPS)
@pytest.mark.parametrize("eps", [0.0, 1e-7, 0.5, 10.0])
def test_eps_argument_matches_torchvision(isa, kind, eps):
    b1 = uniform_boxes(20, seed=21, img=50.0, lo=1.0, hi=30.0)
    b2 = uniform_boxes(17, seed=22, img=50.0, lo=1.0, hi=30.0)
    assert_matches_torchvision(kind, *both(kind, b1, b2, eps=eps))


@pytest.mark.parametrize("kind", KINDS)
def test_nan_coordinate_gives_nan_row_and_column(isa, kind):
    b1 = uniform_boxes(5, seed=31)
    b2 = uniform_boxes(6, seed=32)
    b1[2, 1] = float("nan")
    b2[3, 2] = float("nan")
    ours, theirs = both(kind, b1, b2)
    assert torch.isnan(ours[2]).all()
    assert torch.isnan(ours[:, 3]).all()
    others = torch.ones_like(ours, dtype=torch.bool)
    others[2] = False
    others[:, 3] = False
    assert not torch.isnan(ours[others]).any()
    assert_matches_torchvision(kind, ours, theirs)


@pytest.mark.parametrize("kind", KINDS)
def test_infinite_coordinates_match_torchvision(isa, kind):
    b1 = uniform_boxes(6, seed=33)
    b2 = uniform_boxes(5, seed=34)
    b1[0, 2] = float("inf")
    b1[1, 0] = float("-inf")
    b1[2] = torch.tensor([float("-inf"), float("-inf"), float("inf"), float("inf")])
    b2[4, 3] = float("inf")
    assert_matches_torchvision(kind, *both(kind, b1, b2))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "dtype,scale",
    [
        (torch.float32, 1e-20),
        (torch.float32, 1e-22),
        (torch.float32, 1e17),
        (torch.float64, 1e-160),
        (torch.float64, 1e150),
    ],
    ids=str,
)
def test_extreme_magnitudes_match_torchvision(isa, kind, dtype, scale):
    # Tiny scales make areas subnormal (no flush-to-zero allowed); huge ones bring areas near overflow.
    b1 = (uniform_boxes(19, seed=35, img=100.0, lo=1.0, hi=60.0, dtype=torch.float64) * scale).to(dtype)
    b2 = (uniform_boxes(23, seed=36, img=100.0, lo=1.0, hi=60.0, dtype=torch.float64) * scale).to(dtype)
    ours, theirs = both(kind, b1, b2)
    if dtype == torch.float32:
        assert_matches_torchvision(kind, ours, theirs)
    else:
        ulp_close(ours, theirs, ulps=8)


# ---------------------------------------------------------------------------------------------------------
# Against the float64 reference
# ---------------------------------------------------------------------------------------------------------

_coord = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
_side = st.one_of(st.just(0.0), st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False))
_box = st.tuples(_coord, _coord, _side, _side).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


def _box_tensor(rows):
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


@pytest.mark.parametrize("kind", KINDS)
@HYPOTHESIS
@given(rows1=st.lists(_box, max_size=10), rows2=st.lists(_box, max_size=10))
def test_float64_matches_reference(isa, kind, rows1, rows2):
    b1, b2 = _box_tensor(rows1), _box_tensor(rows2)
    ours = OURS[kind](b1, b2)
    assert ours.dtype == torch.float64
    assert ours.shape == (b1.shape[0], b2.shape[0])
    torch.testing.assert_close(ours, pairwise_reference(kind, b1, b2), rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("kind", KINDS)
@HYPOTHESIS
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(0, 40),
    m=st.integers(0, 40),
    scale=st.sampled_from([1.0, 100.0, 1e5]),
)
def test_float64_random_sets_match_reference(isa, kind, seed, n, m, scale):
    b1 = uniform_boxes(n, seed=seed, img=scale, lo=scale / 100, hi=scale / 2, dtype=torch.float64)
    b2 = uniform_boxes(m, seed=seed + 1, img=scale, lo=scale / 100, hi=scale / 2, dtype=torch.float64)
    torch.testing.assert_close(OURS[kind](b1, b2), pairwise_reference(kind, b1, b2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", CRAFTED_NAMES)
def test_float64_crafted_match_reference(isa, kind, name):
    boxes = crafted_box_sets(torch.float64)[name]
    ours = OURS[kind](boxes, boxes)
    torch.testing.assert_close(ours, pairwise_reference(kind, boxes, boxes), rtol=1e-12, atol=1e-12, equal_nan=True)


# ---------------------------------------------------------------------------------------------------------
# Dtypes
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_float32_from_exact_values(isa, kind, dtype):
    b1 = uniform_boxes(40, seed=41, img=100.0, lo=2.0, hi=60.0).to(dtype)
    b2 = uniform_boxes(23, seed=42, img=100.0, lo=2.0, hi=60.0).to(dtype)
    ours = OURS[kind](b1, b2)
    assert ours.dtype == torch.float32
    assert ours.dtype == THEIRS[kind](b1, b2).dtype
    # Same values as the float32 computation on the upcast inputs ...
    assert_bitwise_equal(ours, OURS[kind](b1.float(), b2.float()))
    # ... and close to the float64 reference on those same values.
    ref = pairwise_reference(kind, b1.double(), b2.double())
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.int64])
def test_integer_inputs_give_float32_like_torchvision(isa, kind, dtype):
    b1 = uniform_boxes(30, seed=43, img=400.0, lo=1.0, hi=150.0, integer=True).to(dtype)
    b2 = uniform_boxes(19, seed=44, img=400.0, lo=1.0, hi=150.0, integer=True).to(dtype)
    ours, theirs = both(kind, b1, b2)
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=2e-6, atol=2e-6)
    # Exact values rounded once to float32.
    ref = pairwise_reference(kind, b1, b2)
    torch.testing.assert_close(ours.double(), ref, rtol=0, atol=1.2e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_float64_output_dtype(isa, kind):
    b1 = uniform_boxes(8, seed=45, dtype=torch.float64)
    b2 = uniform_boxes(9, seed=46, dtype=torch.float64)
    ours, theirs = both(kind, b1, b2)
    assert ours.dtype == theirs.dtype == torch.float64


MIXED_DTYPES = [
    (torch.float32, torch.float64),
    (torch.float64, torch.float32),
    (torch.float16, torch.float32),
    (torch.bfloat16, torch.float64),
    (torch.float16, torch.bfloat16),
    (torch.int64, torch.float32),
    (torch.int32, torch.float16),
    (torch.int64, torch.float64),
    (torch.float64, torch.int32),
    (torch.int32, torch.int64),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("d1,d2", MIXED_DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def test_mixed_dtype_output_matches_torchvision(kind, d1, d2):
    # Result-dtype promotion happens before any kernel runs, so one ISA level is enough here.
    b1 = uniform_boxes(12, seed=47, img=200.0, lo=2.0, hi=100.0, integer=True).to(d1)
    b2 = uniform_boxes(10, seed=48, img=200.0, lo=2.0, hi=100.0, integer=True).to(d2)
    ours, theirs = both(kind, b1, b2)
    assert ours.dtype == theirs.dtype, f"{d1} x {d2}: got {ours.dtype}, torchvision gives {theirs.dtype}"
    torch.testing.assert_close(ours.double(), pairwise_reference(kind, b1, b2), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Shapes: batching, broadcasting, empty, non-contiguous, box formats
# ---------------------------------------------------------------------------------------------------------

LEADING_DIMS = [
    ((3,), (3,)),
    ((2, 4), (2, 4)),
    ((4,), ()),
    ((), (4,)),
    ((2, 1), (3,)),
    ((4, 1), (1, 3)),
    ((1,), (5,)),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lead1,lead2", LEADING_DIMS, ids=str)
def test_batched_and_broadcast_match_torchvision(isa, kind, lead1, lead2):
    n, m = 6, 5
    b1 = uniform_boxes(n * max(1, torch.Size(lead1).numel()), seed=51, img=200.0).reshape(*lead1, n, 4)
    b2 = uniform_boxes(m * max(1, torch.Size(lead2).numel()), seed=52, img=200.0).reshape(*lead2, m, 4)
    ours, theirs = both(kind, b1, b2)
    batch = torch.broadcast_shapes(lead1, lead2)
    assert ours.shape == (*batch, n, m)
    assert_matches_torchvision(kind, ours, theirs)
    # Each batch entry equals the unbatched computation on its own pair.
    e1 = b1.expand(*batch, n, 4).reshape(-1, n, 4)
    e2 = b2.expand(*batch, m, 4).reshape(-1, m, 4)
    flat = ours.reshape(-1, n, m)
    for k in range(flat.shape[0]):
        assert_bitwise_equal(flat[k], OURS[kind](e1[k], e2[k]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "shape1,shape2",
    [((0, 4), (5, 4)), ((5, 4), (0, 4)), ((0, 4), (0, 4)), ((2, 0, 4), (2, 3, 4)), ((0, 3, 4), (3, 4))],
    ids=str,
)
def test_empty_inputs(isa, kind, shape1, shape2):
    b1 = uniform_boxes(max(1, torch.Size(shape1[:-1]).numel()), seed=53)[: torch.Size(shape1[:-1]).numel()]
    b2 = uniform_boxes(max(1, torch.Size(shape2[:-1]).numel()), seed=54)[: torch.Size(shape2[:-1]).numel()]
    b1, b2 = b1.reshape(shape1), b2.reshape(shape2)
    ours, theirs = both(kind, b1, b2)
    assert ours.shape == theirs.shape
    assert ours.dtype == theirs.dtype == torch.float32
    assert ours.numel() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_non_contiguous_inputs(isa, kind):
    b1 = uniform_boxes(37, seed=55)
    b2 = uniform_boxes(29, seed=56)
    wide = torch.zeros(37, 8)
    wide[:, ::2] = b1
    strided1 = wide[:, ::2]  # stride 2 in the last dimension
    strided2 = b2.t().contiguous().t()  # column-major
    assert not strided1.is_contiguous() and not strided2.is_contiguous()
    expected = OURS[kind](b1, b2)
    assert_bitwise_equal(OURS[kind](strided1, strided2), expected)
    assert_bitwise_equal(OURS[kind](b1[::3], b2[1::2]), OURS[kind](b1[::3].contiguous(), b2[1::2].contiguous()))
    # A zero-stride (expanded) batch.
    expanded = b1.expand(3, 37, 4)
    out = OURS[kind](expanded, b2)
    for k in range(3):
        assert_bitwise_equal(out[k], expected)
    assert_matches_torchvision(kind, OURS[kind](strided1, strided2), THEIRS[kind](strided1, strided2))


def _to_fmt(boxes_xyxy, fmt):
    return tvo.box_convert(boxes_xyxy, "xyxy", fmt)


@pytest.mark.parametrize("fmt", ["xyxy", "xywh", "cxcywh"])
def test_box_iou_formats_match_torchvision(isa, fmt):
    b1 = _to_fmt(uniform_boxes(31, seed=57), fmt)
    b2 = _to_fmt(uniform_boxes(22, seed=58), fmt)
    ours = ops.box_iou(b1, b2, fmt=fmt)
    theirs = tvo.box_iou(b1, b2, fmt=fmt)
    assert ours.dtype == theirs.dtype
    # torchvision computes the areas of xywh / cxcywh boxes as w * h, which rounds differently from
    # (x2 - x1) * (y2 - y1): equal up to float32 rounding.
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    # Batched boxes in another format.
    ours_b = ops.box_iou(b1[:30].reshape(3, 10, 4), b2, fmt=fmt)
    theirs_b = tvo.box_iou(b1[:30].reshape(3, 10, 4), b2, fmt=fmt)
    torch.testing.assert_close(ours_b, theirs_b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_iou_formats_exact_on_whole_numbers(isa, fmt, dtype):
    # Even coordinates and sizes: every conversion is exact, so the results must agree bit for bit.
    b1 = _to_fmt(uniform_boxes(25, seed=59, img=300.0, lo=2.0, hi=90.0, integer=True) * 2, fmt).to(dtype)
    b2 = _to_fmt(uniform_boxes(14, seed=60, img=300.0, lo=2.0, hi=90.0, integer=True) * 2, fmt).to(dtype)
    assert_bitwise_equal(ops.box_iou(b1, b2, fmt=fmt), tvo.box_iou(b1, b2, fmt=fmt))
    assert_bitwise_equal(
        ops.box_iou(b1, b2, fmt=fmt), ops.box_iou(ops.box_convert(b1, fmt, "xyxy"), ops.box_convert(b2, fmt, "xyxy"))
    )


# ---------------------------------------------------------------------------------------------------------
# Autograd
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", ["boxes1", "boxes2", "both"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_match_torchvision(isa, kind, which, dtype):
    base1 = uniform_boxes(7, seed=61, img=60.0, lo=5.0, hi=50.0, dtype=dtype)
    base2 = uniform_boxes(9, seed=62, img=60.0, lo=5.0, hi=50.0, dtype=dtype)
    weights = torch.randn(7, 9, generator=torch.Generator().manual_seed(63), dtype=dtype)
    grads = {}
    values = {}
    for name, fn in (("ours", OURS[kind]), ("theirs", THEIRS[kind])):
        b1 = base1.clone().requires_grad_(which in ("boxes1", "both"))
        b2 = base2.clone().requires_grad_(which in ("boxes2", "both"))
        out = fn(b1, b2)
        assert out.requires_grad
        (out * weights).sum().backward()
        values[name] = out.detach()
        grads[name] = [t.grad for t in (b1, b2) if t.requires_grad]
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(values["ours"], values["theirs"], **tol)
    assert len(grads["ours"]) == len(grads["theirs"])
    for g_ours, g_theirs in zip(grads["ours"], grads["theirs"]):
        assert g_ours is not None and g_ours.dtype == dtype
        torch.testing.assert_close(g_ours, g_theirs, **tol)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lead1,lead2", [((3,), (3,)), ((2, 1), (3,)), ((), (4,))], ids=str)
def test_batched_gradients_match_torchvision(isa, kind, lead1, lead2):
    n, m = 5, 4
    base1 = uniform_boxes(n * torch.Size(lead1).numel(), seed=81, img=60.0, lo=5.0, hi=50.0, dtype=torch.float64)
    base2 = uniform_boxes(m * torch.Size(lead2).numel(), seed=82, img=60.0, lo=5.0, hi=50.0, dtype=torch.float64)
    base1, base2 = base1.reshape(*lead1, n, 4), base2.reshape(*lead2, m, 4)
    results = {}
    for name, fn in (("ours", OURS[kind]), ("theirs", THEIRS[kind])):
        b1, b2 = base1.clone().requires_grad_(), base2.clone().requires_grad_()
        out = fn(b1, b2)
        out.square().sum().backward()
        results[name] = (out.detach(), b1.grad, b2.grad)
    for ours, theirs in zip(results["ours"], results["theirs"]):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_values_match_no_grad_values(isa, kind):
    b1 = uniform_boxes(11, seed=64, img=80.0, lo=5.0, hi=50.0, dtype=torch.float64)
    b2 = uniform_boxes(6, seed=65, img=80.0, lo=5.0, hi=50.0, dtype=torch.float64)
    with_grad = OURS[kind](b1.clone().requires_grad_(), b2)
    torch.testing.assert_close(with_grad.detach(), OURS[kind](b1, b2), rtol=1e-13, atol=1e-14)
    with torch.no_grad():
        assert not OURS[kind](b1.clone().requires_grad_(), b2).requires_grad


def _separated_boxes(n, seed, square=False):
    """Boxes whose coordinates are all distinct and away from every kink of the formulas."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 20
    wh = 4 + torch.rand(n, 2, generator=g, dtype=torch.float64) * 12
    if square:
        wh[:, 1] = wh[:, 0]
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind):
    # CIoU treats alpha as a constant (as torchvision does), so its analytic gradient is the true gradient
    # only where the aspect-ratio term vanishes: use squares there.
    square = kind == "ciou"
    b1 = _separated_boxes(3, seed=66, square=square).requires_grad_()
    b2 = _separated_boxes(4, seed=67, square=square).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: OURS[kind](a, b), (b1, b2))
    batched1 = _separated_boxes(4, seed=68, square=square).reshape(2, 2, 4).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: OURS[kind](a, b), (batched1, b2))


def test_gradcheck_box_iou_formats():
    for fmt in ("xywh", "cxcywh"):
        b1 = _to_fmt(_separated_boxes(3, seed=69), fmt).requires_grad_()
        b2 = _to_fmt(_separated_boxes(3, seed=70), fmt).requires_grad_()
        assert torch.autograd.gradcheck(lambda a, b: ops.box_iou(a, b, fmt=fmt), (b1, b2))


# ---------------------------------------------------------------------------------------------------------
# Operator registration
# ---------------------------------------------------------------------------------------------------------


def _opcheck_samples(kind):
    samples = [
        (uniform_boxes(5, seed=71), uniform_boxes(7, seed=72)),
        (
            uniform_boxes(10, seed=73, dtype=torch.float64).reshape(2, 5, 4),
            uniform_boxes(3, seed=74, dtype=torch.float64),
        ),
        (uniform_boxes(0, seed=75), uniform_boxes(4, seed=76)),
        (uniform_boxes(6, seed=77).to(torch.float16), uniform_boxes(2, seed=78).to(torch.float16)),
        (uniform_boxes(10, seed=83).reshape(2, 1, 5, 4), uniform_boxes(21, seed=84).reshape(3, 7, 4)),
    ]
    if kind in HAS_EPS:
        samples = [(b1, b2, 1e-7) for b1, b2 in samples]
    return samples


@pytest.mark.parametrize("kind", KINDS)
def test_opcheck(kind):
    for args in _opcheck_samples(kind):
        torch.library.opcheck(RAW[kind].default, args)


@pytest.mark.parametrize("kind", KINDS)
def test_raw_op_matches_wrapper(isa, kind):
    b1 = uniform_boxes(12, seed=79)
    b2 = uniform_boxes(8, seed=80)
    args = (b1, b2, 1e-7) if kind in HAS_EPS else (b1, b2)
    assert_bitwise_equal(RAW[kind](*args), OURS[kind](b1, b2))
    half_args = tuple(a.half() if isinstance(a, torch.Tensor) else a for a in args)
    assert RAW[kind](*half_args).dtype == torch.float32
