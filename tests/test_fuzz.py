"""Differential fuzz tests: every detection op on inputs drawn by Hypothesis, compared with its float64
reference (reference.py, roi_reference.py, and the loop references of test_anchors.py / test_box_coder.py)
and with torchvision on the same inputs.

What each comparison expects follows README.md ("What is there", "Rules for unusual input"):

* bit for bit (``torch.equal``, NaN where NaN) in float32: box_iou / generalized / distance IoU, RoI align
  and RoI pool (forward, backward, argmax), MultiScaleRoIAlign, anchors (every dtype), box_area,
  box_convert, clip_boxes_to_image, remove_small_boxes; the same kept indices for nms / batched_nms;
* complete_box_iou within torchvision's result up to its one-ulp atan; BoxCoder within an ulp or two of the
  row's magnitude (torch's own exp and log are up to an ulp off);
* float16 / bfloat16: against the float64 reference with a tolerance derived from the dtype's epsilon and
  the number of rounded operations, and against torchvision wherever torchvision accepts the dtype;
* against the float64 references: exactly (or to float64 rounding) for float64 inputs; for float32 and half
  inputs only where computing in a narrower type cannot change a discrete decision (NMS suppressions,
  pixel snapping, sampling-point validity, anchor rounding) -- dyadic coordinates, power-of-two scales and
  bin counts for the RoI ops, a margin around the IoU threshold for NMS; elsewhere the comparison with
  torchvision (same arithmetic) carries the check.

Each test draws its instruction-set level among the supported ones; the hand-written ``@example`` cases (the
committed seeds) run under every level. Budgets: ``BUDGET`` below, scaled by the Hypothesis profile
(conftest.py: "ci" is derandomized and replays tests/hypothesis-examples/, "dev" draws ten times as many
examples with random seeds and saves failures there) and by ``PYDET_FUZZ_SCALE`` (e.g. 0.3 under ASan).
"""

import math
import os

import pytest
import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision)
import torchvision.ops as tvo
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops.boxes import _batched_nms_vanilla
from torchvision.ops.poolers import LevelMapper

import pydet_ops as ops
from conftest import SUPPORTED_ISAS, assert_bitwise_equal, clustered_boxes, isa_level, tied_scores
from reference import as_index_tensor, pairwise_reference, reference_batched_nms, reference_nms
from roi_reference import (
    _align_geometry,
    roi_align_reference,
    roi_align_reference_backward,
    roi_pool_reference,
    roi_pool_reference_backward,
)
from test_anchors import _reference_anchors
from test_box_coder import _decode_reference, _encode_reference, _ulp
from test_box_iou import KINDS, OURS, THEIRS

RAW = torch.ops.pydet_ops
TV = torch.ops.torchvision

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
FLOAT_DTYPES = (F32, F64, F16, BF16)
HALF = (F16, BF16)
NAN, INF = math.nan, math.inf
FORMATS = (torch.contiguous_format, torch.channels_last)
DEFAULT_CLIP = math.log(1000.0 / 16)

# ---------------------------------------------------------------------------------------------------------
# Budgets
# ---------------------------------------------------------------------------------------------------------

# Generated examples per test under the "ci" profile (max_examples 100); the hand-written @example cases
# come on top. Each example takes a few milliseconds: the whole file runs in about 30 s on two cores (one
# thread), hardly longer under AddressSanitizer (the kernels see small inputs), and ~4 minutes under "dev".
BUDGET = {
    "nms": 500,
    "batched_nms": 400,
    "pairwise": 250,  # per overlap kind
    "box_helpers": 500,
    "roi_align": 400,
    "roi_pool": 400,
    "multi_scale": 300,
    "anchor_generator": 250,
    "grid_anchors": 250,
    "decode": 400,
    "encode": 400,
}
FUZZ_SCALE = settings.default.max_examples / 100 * float(os.environ.get("PYDET_FUZZ_SCALE", "1"))


def fuzz(name):
    return settings(
        max_examples=max(1, round(BUDGET[name] * FUZZ_SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ---------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------


def _isas(case):
    """The drawn ISA level, or every supported one for the hand-written examples (isa=None)."""
    return SUPPORTED_ISAS if case["isa"] is None else [case["isa"]]


_isa = st.sampled_from(SUPPORTED_ISAS)
_float_dtype = st.sampled_from(FLOAT_DTYPES)


def _eps(dtype):
    return torch.finfo(dtype).eps


def _compute_dtype(dtype):
    return F32 if dtype in HALF else dtype


def _rounding(bound, dtype):
    """The error of one final rounding of values bounded by ``bound`` to a half type (one ulp, subnormals
    included); nothing for float32 / float64, which the kernels compute in."""
    return _ulp(bound, dtype) if dtype in HALF else torch.zeros_like(bound)


def _half_step(bound):
    """The error of one float16 operation on values bounded by ``bound``: an epsilon, or the subnormal spacing."""
    return _eps(F16) * bound + torch.finfo(F16).tiny * _eps(F16)


def assert_within(actual, expected, tol, what, mask=None):
    """Same shape; where ``mask``: NaN exactly where ``expected`` is NaN, the same infinities, and finite
    values within ``tol`` (a number or a tensor broadcasting to ``expected``)."""
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    a, e = actual.detach().double(), expected.detach().double()
    tol = torch.as_tensor(tol, dtype=torch.float64).expand(e.shape)
    if mask is not None:
        mask = mask.expand(e.shape)
        a, e, tol = a[mask], e[mask], tol[mask]
    a, e, tol = a.reshape(-1), e.reshape(-1), tol.reshape(-1)
    ok = (a == e) | (a.isnan() & e.isnan()) | ((a - e).abs() <= tol)
    if not bool(ok.all()):
        bad = (~ok).nonzero()[:6].flatten().tolist()
        raise AssertionError(
            f"{what}: {int((~ok).sum())} of {ok.numel()} values differ; first (flat index, actual, expected, tol): "
            + ", ".join(f"({i}, {a[i].item()!r}, {e[i].item()!r}, {tol[i].item():.3g})" for i in bad)
        )


def assert_same_indices(actual, expected, what):
    assert actual.dtype == torch.int64 and actual.dim() == 1, (what, actual.dtype, actual.shape)
    assert torch.equal(actual, expected), f"{what}\nactual:   {actual.tolist()}\nexpected: {expected.tolist()}"


def _sorted_like_torch(indices, scores):
    """``indices`` in the README's NMS output order: NaN scores first, then by decreasing score, ties by
    ascending index."""
    s = scores.tolist()
    return sorted(indices, key=lambda i: (0, 0.0, i) if math.isnan(s[i]) else (1, -s[i], i))


def _ranked(scores):
    """Distinct float64 scores in the same order as ``scores`` under the README's rule (NaN first, ties by
    index): what the plain-Python reference, which sorts with Python floats, can take."""
    order = _sorted_like_torch(range(scores.numel()), scores)
    ranks = torch.empty(scores.numel(), dtype=torch.float64)
    for position, i in enumerate(order):
        ranks[i] = float(scores.numel() - position)
    return ranks


# ---------------------------------------------------------------------------------------------------------
# Box strategies
# ---------------------------------------------------------------------------------------------------------

_HUGE = (1e6, 3.0e8, 2.0**31 + 0.5, 1e15, 1e30)
_small_int = st.integers(-20, 20).map(float)
_moderate = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False)
_huge = st.one_of(
    st.sampled_from(_HUGE + tuple(-v for v in _HUGE)),
    st.floats(1e6, 1e30, allow_subnormal=False),
    st.floats(-1e30, -1e6, allow_subnormal=False),
)
_coord = st.one_of(_small_int, _small_int, _moderate, _moderate, _huge)
_side = st.one_of(
    st.just(0.0),  # degenerate
    st.integers(1, 30).map(float),
    st.integers(1, 30).map(float),
    st.floats(1e-3, 500.0, allow_subnormal=False),
    st.integers(-20, -1).map(float),  # inverted
    st.sampled_from([1e6, 1e30]),
)
_non_finite = st.sampled_from([NAN, INF, -INF])


@st.composite
def _box(draw, non_finite=True):
    x1, y1 = draw(_coord), draw(_coord)
    box = [x1, y1, x1 + draw(_side), y1 + draw(_side)]
    if non_finite and draw(st.integers(0, 11)) == 11:
        box[draw(st.integers(0, 3))] = draw(_non_finite)
    return box


def _boxes_tensor(rows):
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


_SCORE_LEVELS = [0.0, 0.25, 0.5, 0.75, 1.0]
_score = st.one_of(
    st.sampled_from(_SCORE_LEVELS),
    st.sampled_from(_SCORE_LEVELS),
    st.sampled_from(_SCORE_LEVELS),
    st.floats(-1.0, 1.0, allow_subnormal=False),
    st.floats(-1.0, 1.0, allow_subnormal=False),
    st.sampled_from([NAN, INF, -INF, -0.0]),
)
_threshold = st.one_of(
    st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]),
    st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]),
    st.floats(0.0, 1.0),
    st.sampled_from([-0.25, 1.5, NAN]),
)
_label = st.sampled_from([-(2**40), -1, 0, 0, 1, 1, 2, 5, 2**40])


# ---------------------------------------------------------------------------------------------------------
# nms and batched_nms
# ---------------------------------------------------------------------------------------------------------


def _nms_case(rows, scores, thr, dtype=F32, labels=None, bulk=None, isa=None, label_dtype=torch.int64):
    return dict(rows=rows, scores=scores, thr=thr, dtype=dtype, labels=labels, bulk=bulk, isa=isa,
                label_dtype=label_dtype)


@st.composite
def _nms_cases(draw, batched):
    bulk = None
    if draw(st.integers(0, 5)) == 5:
        # A few hundred RPN-like boxes (the kernels' grid strategy when every coordinate is finite), plus the
        # drawn ones (huge coordinates included: see test_nms_grid_with_a_huge_coordinate_span).
        bulk = dict(
            n=draw(st.integers(256, 320)),
            clusters=draw(st.integers(1, 12)),
            jitter=draw(st.sampled_from([0.0, 0.5, 3.0])),
            levels=draw(st.integers(1, 8)),
            classes=draw(st.integers(1, 3)),
            seed=draw(st.integers(0, 2**31 - 1)),
        )
    rows = draw(st.lists(_box(), max_size=12))
    n = len(rows)
    scores = draw(st.lists(_score, min_size=n, max_size=n))
    labels = draw(st.lists(_label, min_size=n, max_size=n)) if batched else None
    label_dtype = torch.int64
    if batched:
        label_dtype = draw(st.sampled_from([torch.int64, torch.int64, torch.int32, torch.int16, torch.uint8]))
        info = torch.iinfo(label_dtype)
        labels = [min(max(v, info.min), info.max) for v in labels]  # fit the dtype (saturate)
    return _nms_case(rows, scores, draw(_threshold), draw(_float_dtype), labels, bulk, draw(_isa), label_dtype)


def _nms_inputs(case):
    boxes = _boxes_tensor(case["rows"])
    scores = torch.tensor(case["scores"], dtype=torch.float64).reshape(-1)
    labels = torch.tensor(case["labels"] or [0] * boxes.shape[0], dtype=torch.int64)
    bulk = case["bulk"]
    if bulk:
        n, seed = bulk["n"], bulk["seed"]
        boxes = torch.cat([clustered_boxes(n, bulk["clusters"], seed, img=300.0, jitter=bulk["jitter"],
                                           dtype=torch.float64), boxes])
        scores = torch.cat([tied_scores(n, seed + 1, levels=bulk["levels"], dtype=torch.float64), scores])
        extra = torch.randint(0, bulk["classes"], (n,), generator=torch.Generator().manual_seed(seed + 2))
        labels = torch.cat([extra, labels])
    return boxes.to(case["dtype"]), scores.to(case["dtype"]), labels.to(case["label_dtype"])


def _nms_decisions_robust(boxes, thr, labels=None):
    """True when computing the IoUs in float32 instead of float64 cannot change a suppression: every pair
    that can suppress (same label) involves a NaN coordinate (NaN IoU in any precision), or has finite
    coordinates below 1e15 (no float32 overflow), an IoU at least 1e-4 from the threshold and, for a negative
    threshold, a union not nearly cancelled (0 / 0 would give NaN where the other precision gives 0)."""
    b = boxes.double()
    if b.shape[0] < 2 or math.isnan(thr):  # a NaN threshold suppresses nothing
        return True
    nan_box = b.isnan().any(1)
    tame = b.isfinite().all(1) & (b.abs().amax(1) < 1e15)
    if not bool((nan_box | tame).all()):
        return False
    iou = pairwise_reference("iou", b, b)
    ok = (iou - thr).abs() > 1e-4
    if thr < 0:
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        union = area[:, None] + area[None, :]  # the intersection is 0 wherever the union can cancel
        ok &= union.abs() > 1e-5 * (area[:, None].abs() + area[None, :].abs())
    ok |= nan_box[:, None] | nan_box[None, :]
    ok.fill_diagonal_(True)
    if labels is not None:
        ok |= labels[:, None] != labels[None, :]
    return bool(ok.all())


def _assert_fixed_sizes(call, kept, n, what):
    """The fixed-size variant: keep[:count] is `kept`[:max_output], then -1, for max_output around the count."""
    for max_output in sorted({0, max(kept.numel() // 2, 1), kept.numel(), n + 1}):
        keep, count = call(max_output)
        expect = kept[:max_output]
        assert keep.shape == (max_output,) and int(count) == expect.numel(), f"{what}: {keep.shape}, {count}"
        assert torch.equal(keep[: expect.numel()], expect) and bool((keep[expect.numel():] == -1).all()), what


@fuzz("nms")
@given(case=_nms_cases(batched=False))
# Identical boxes and tied scores: the lowest index survives.
@example(case=_nms_case([[10.0, 20.0, 50.0, 80.0]] * 4, [0.5, 0.9, 0.9, 0.5], 0.5))
# NaN scores rank first (ties by index); a NaN coordinate never suppresses nor is suppressed; an inverted box
# overlaps nothing; -0.0 and +0.0 scores tie.
@example(
    case=_nms_case(
        [[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 9, NAN], [10, 10, 0, 0], [0, 0, 10, 10], [0, 0, 10.5, 10]],
        [NAN, 0.0, NAN, 1.0, -0.0, 0.0],
        0.3,
    )
)
# Negative threshold: everything after the first is suppressed, except NaN IoUs (a zero-size pair: 0 / 0);
# a NaN threshold suppresses nothing.
@example(case=_nms_case([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 4, 4], [1, 1, 3, 3]], [1.0, 0.9, 0.8, 0.7], -0.25))
@example(case=_nms_case([[0, 0, 4, 4], [0, 0, 4, 4], [1, 1, 3, 3]], [0.5, 0.7, 0.6], NAN, dtype=F64))
# float32 overflow: areas of 1e30-sized boxes are inf, their IoUs NaN (never suppress); infinite coordinates.
@example(
    case=_nms_case(
        [[0, 0, 1e30, 1e30], [0, 0, 1e30, 1e30], [-1e30, 0, 1e30, 1], [-INF, 0, INF, 1], [0, 0, INF, 5]],
        [0.5, 0.5, 0.4, 0.3, 0.2],
        0.0,
    )
)
# Half types: ties created by rounding the scores; zero-size boxes.
@example(
    case=_nms_case(
        [[0, 0, 8, 8], [0, 0, 8, 8.001], [3, 3, 3, 3], [3, 3, 3, 3], [1, 1, 7, 7]],
        [0.3, 0.30001, 0.2, 0.2, 0.1],
        0.5,
        dtype=F16,
    )
)
# The grid strategy (>= 256 boxes, finite), with heavily tied scores and a few extra boxes.
@example(
    case=_nms_case(
        [[0, 0, 300, 300], [50, 50, 50, 80]],
        [0.5, 0.5],
        0.5,
        bulk=dict(n=260, clusters=3, jitter=0.0, levels=2, classes=1, seed=7),
    )
)
# The grid strategy over a coordinate span of 1e15 (found here: see test_nms_grid_with_a_huge_coordinate_span).
@example(case=_nms_case([[0, -1e15, 0, -1e15]], [0.0], 0.0, bulk=dict(n=256, clusters=1, jitter=0.0, levels=1,
                                                                     classes=1, seed=0)))
def test_nms(case):
    boxes, scores, _ = _nms_inputs(case)
    thr, dtype = case["thr"], case["dtype"]
    theirs = tvo.nms(boxes, scores, thr) if dtype in (F32, F64) else None
    robust = dtype == F64 or _nms_decisions_robust(boxes, thr)
    event(f"nms reference compared: {robust}")
    expected = as_index_tensor(reference_nms(boxes.double(), _ranked(scores.double()), thr)) if robust else None
    for isa in _isas(case):
        with isa_level(isa):
            ours = ops.nms(boxes, scores, thr)
            if theirs is not None:
                assert_same_indices(ours, theirs, f"nms vs torchvision ({isa})")
            else:  # torchvision refuses half types on CPU; the README defines them as the float32 computation
                assert_same_indices(ours, ops.nms(boxes.float(), scores.float(), thr), f"nms half vs float32 ({isa})")
            if expected is not None:
                assert_same_indices(ours, expected, f"nms vs reference ({isa})")
            _assert_fixed_sizes(lambda m: ops.nms_fixed(boxes, scores, thr, m), ours, boxes.shape[0],
                                f"nms_fixed ({isa})")


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("span", [1e12, 1e15, 1e16, 1e18, 1e30])
@pytest.mark.parametrize("op", ["nms", "batched_nms"])
def test_nms_grid_with_a_huge_coordinate_span(op, span, dtype):
    """Found by this fuzzer: 256 ordinary boxes (the grid strategy) and one point ``span`` away along one axis.
    The grid planner bounded the cell count assuming both axes shrink; with one axis down to a single cell the
    other got ~sqrt(span / side * 256) cells: past 2^24 per axis float32's clamp of the cell index rounded
    up (heap-buffer-overflow in CellBuckets, wrong results, 'double free or corruption'), further out the
    allocation failed (MemoryError) or took seconds."""
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(256, 2, generator=g, dtype=torch.float64) * 300
    boxes = torch.cat([torch.cat([xy, xy + 10 + 40 * torch.rand(256, 2, generator=g, dtype=torch.float64)], 1),
                       torch.tensor([[0.0, -span, 0.0, -span]], dtype=torch.float64)]).to(dtype)
    scores = torch.rand(257, generator=g).to(dtype)
    expected = tvo.nms(boxes, scores, 0.5)
    if op == "nms":
        ours = ops.nms(boxes, scores, 0.5)
    else:
        ours = ops.batched_nms(boxes, scores, torch.zeros(257, dtype=torch.int64), 0.5)
    assert_same_indices(ours, expected, op)


def _batched_domain_exact_for_torchvision(boxes, labels):
    """torchvision's public batched_nms shifts each class by label * (max coordinate + 1): exact (and so
    comparable index for index) only for float64 whole-number coordinates in [0, 1e4] and small labels."""
    b = boxes.double()
    return (
        boxes.dtype == F64
        and bool(b.isfinite().all())
        and bool((b == b.round()).all())
        and bool(((b >= 0) & (b <= 1e4)).all())
        and bool((labels.long().abs() <= 1024).all())
        and boxes.numel() <= 4000
    )


@fuzz("batched_nms")
@given(case=_nms_cases(batched=True))
# The grid strategy over a coordinate span of 1e30 (see test_nms_grid_with_a_huge_coordinate_span).
@example(case=_nms_case([[0, 1e30, 0, 1e30]], [0.0], 0.0, labels=[0], bulk=dict(n=256, clusters=1, jitter=0.0,
                                                                               levels=1, classes=1, seed=0)))
# The same boxes in classes far apart (+-2^40): each class keeps its own box.
@example(
    case=_nms_case(
        [[0, 0, 10, 10]] * 5, [0.9, 0.9, 0.8, 0.7, 0.9], 0.5, labels=[2**40, -(2**40), 2**40, 0, -1]
    )
)
# NaN scores across classes, an inverted box, an infinite coordinate.
@example(
    case=_nms_case(
        [[0, 0, 10, 10], [0, 0, 10, 10], [10, 0, 0, 10], [0, 0, INF, 10], [1, 1, 11, 11]],
        [NAN, 0.5, 0.5, NAN, 0.4],
        0.1,
        labels=[1, 1, 1, 2, 1],
    )
)
# Whole-number float64 boxes: compared with torchvision's public batched_nms (coordinate offsets) as well.
@example(
    case=_nms_case(
        [[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [100, 100, 110, 110]],
        [0.5, 0.6, 0.5, 0.5],
        0.5,
        dtype=F64,
        labels=[0, 0, 3, 3],
    )
)
@example(
    case=_nms_case(
        [[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10]], [0.5, 0.5, 0.5], 0.3, dtype=BF16, labels=[5, 5, -1]
    )
)
@example(
    case=_nms_case([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [2, 2, 9, 9]], [0.1, 0.5, 0.5, 0.9], 0.3,
                   labels=[255, 0, 255, 0], label_dtype=torch.uint8)
)
def test_batched_nms(case):
    boxes, scores, labels = _nms_inputs(case)
    thr, dtype = case["thr"], case["dtype"]
    scores64 = scores.double()
    theirs = theirs_public = None
    if dtype in (F32, F64):
        # torchvision's per-class loop (exact for any coordinates), put in the README's order (its final sort
        # is not stable).
        vanilla = _batched_nms_vanilla(boxes, scores, labels.long(), thr).tolist()
        theirs = as_index_tensor(_sorted_like_torch(vanilla, scores64))
        if _batched_domain_exact_for_torchvision(boxes, labels):
            theirs_public = tvo.batched_nms(boxes, scores, labels.long(), thr)
    robust = dtype == F64 or _nms_decisions_robust(boxes, thr, labels.long())
    event(f"batched_nms reference compared: {robust}")
    expected = None
    if robust:
        expected = as_index_tensor(reference_batched_nms(boxes.double(), _ranked(scores64), labels.long(), thr))
    for isa in _isas(case):
        with isa_level(isa):
            ours = ops.batched_nms(boxes, scores, labels, thr)
            if theirs is not None:
                assert_same_indices(ours, theirs, f"batched_nms vs torchvision per-class nms ({isa})")
            else:
                upcast = ops.batched_nms(boxes.float(), scores.float(), labels, thr)
                assert_same_indices(ours, upcast, f"batched_nms half vs float32 ({isa})")
            if theirs_public is not None:
                assert_same_indices(ours, theirs_public, f"batched_nms vs torchvision batched_nms ({isa})")
            if expected is not None:
                assert_same_indices(ours, expected, f"batched_nms vs reference ({isa})")
            # The same labels in int64 give the same result.
            assert_same_indices(ops.batched_nms(boxes, scores, labels.long(), thr), ours, f"batched_nms int64 ({isa})")
            _assert_fixed_sizes(lambda m: ops.batched_nms_fixed(boxes, scores, labels, thr, m), ours, boxes.shape[0],
                                f"batched_nms_fixed ({isa})")


# ---------------------------------------------------------------------------------------------------------
# The overlap family
# ---------------------------------------------------------------------------------------------------------



def _pair_case(rows1, rows2, dtype=F32, lead=False, eps=1e-7, isa=None):
    return dict(rows1=rows1, rows2=rows2, dtype=dtype, lead=lead, eps=eps, isa=isa)


@st.composite
def _pair_cases(draw):
    return _pair_case(
        draw(st.lists(_box(), max_size=7)),
        draw(st.lists(_box(), max_size=7)),
        draw(_float_dtype),
        draw(st.integers(0, 4)) == 4,
        draw(st.sampled_from([1e-7, 1e-7, 0.0, 1e-3])),
        draw(_isa),
    )


def _pair_inputs(case):
    b1 = _boxes_tensor(case["rows1"]).to(case["dtype"])
    b2 = _boxes_tensor(case["rows2"]).to(case["dtype"])
    if case["lead"]:  # leading dimensions that broadcast: [2, N, 4] against [1, M, 4]
        b1 = torch.stack([b1, b1 * 0.5])
        b2 = b2[None]
    return b1, b2


def _pair_geometry(b1, b2):
    """Per pair, in float64: both boxes finite and not inverted; the largest coordinate magnitude M; the
    diagonal of the enclosing box."""
    a, b = b1.double().unsqueeze(-2), b2.double().unsqueeze(-3)

    def upright(t):
        return t.isfinite().all(-1) & (t[..., 2] >= t[..., 0]) & (t[..., 3] >= t[..., 1])

    normal = upright(a) & upright(b)
    m = torch.maximum(a.abs().amax(-1), b.abs().amax(-1))
    ew = torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0])
    eh = torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1])
    diag = torch.sqrt(ew * ew + eh * eh)
    return normal, m, diag


def _overlap_tolerance(kind, m, diag, eps):
    """Error bound of the overlap measures of upright boxes computed in a type of epsilon ``eps`` from exact
    inputs: a few roundings for IoU and GIoU; the centre distance of DIoU / CIoU loses ``eps * M`` to
    cancellation, relative to the enclosing diagonal; CIoU's aspect term adds a few more."""
    if kind in ("iou", "giou"):
        return torch.full_like(m, 32 * eps)
    cond = torch.where(diag > 0, m / diag, torch.zeros_like(m))
    tol = 32 * eps * (1 + cond)
    return tol + 64 * eps if kind == "ciou" else tol


@pytest.mark.parametrize("kind", KINDS)
@fuzz("pairwise")
@given(case=_pair_cases())
# The same point twice (empty enclosing box: 0 / 0), zero-width boxes sharing an edge, inverted boxes.
@example(
    case=_pair_case(
        [[5, 5, 5, 5], [0, 0, 0, 10], [10, 10, 0, 0], [0, 10, 10, 0]],
        [[5, 5, 5, 5], [0, 0, 0, 10], [0, 0, 10, 10], [2, 3, 4, 7]],
    )
)
# NaN and infinite coordinates: NaN rows / columns and whatever torchvision's formulas give for infinities.
@example(case=_pair_case([[0, 0, NAN, 1], [0, 0, INF, 1], [-INF, -INF, INF, INF]], [[0, 0, 1, 1], [0, 0, INF, 2]]))
# float32 overflow (areas of 1e30-sized boxes), tiny boxes far from the origin (cancellation in DIoU).
@example(
    case=_pair_case(
        [[0, 0, 1e30, 1e30], [1e6, 1e6, 1e6 + 0.5, 1e6 + 0.25], [-1e15, -1e15, 1e15, 1e15]],
        [[0, 0, 1e30, 1e30], [1e6 + 0.125, 1e6, 1e6 + 0.5, 1e6 + 0.5], [1, 1, 2, 2]],
    )
)
# Leading dimensions, float64 with eps = 0 (DIoU of identical points: 0 / 0).
@example(case=_pair_case([[1, 1, 1, 1], [0, 0, 4, 4]], [[1, 1, 1, 1], [2, 2, 6, 6]], dtype=F64, lead=True, eps=0.0))
# Half types: ours computes in float32 from the exact half values, torchvision rounds some steps to half.
@example(case=_pair_case([[0, 0, 1000, 1000], [3.3, 4.4, 5.5, 6.6]], [[0.1, 0.2, 999, 1001], [3, 4, 5, 7]], F16))
@example(case=_pair_case([[0, 0, 300, 300], [-7, -7, 7, 7]], [[1, 1, 299, 301], [-6, -8, 8, 6]], BF16))
def test_pairwise(kind, case):
    b1, b2 = _pair_inputs(case)
    dtype = case["dtype"]
    kwargs = {"eps": case["eps"]} if kind in ("diou", "ciou") else {}
    theirs = THEIRS[kind](b1, b2, **kwargs)
    reference = pairwise_reference(kind, b1, b2, **kwargs)
    normal, m, diag = _pair_geometry(b1, b2)
    if dtype == F64:
        ref_mask = None if kind != "ciou" else normal
        ref_tol = 1e-12 * (1 + reference.abs())
    else:
        # float32 and half inputs are computed in float32: compared where float32 cannot overflow.
        ref_mask = normal & (m < 1e15)
        ref_tol = _overlap_tolerance(kind, m, diag, _eps(F32)) * (1 + reference.abs())
    for isa in _isas(case):
        with isa_level(isa):
            ours = OURS[kind](b1, b2, **kwargs)
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, (ours.dtype, theirs.dtype)
            assert_within(ours, reference, ref_tol, f"{kind} vs float64 reference ({isa})", ref_mask)
            if dtype == F32:
                if kind == "ciou":  # torchvision's atan may be an ulp off: <= 1e-6 after the aspect term
                    assert_within(ours, theirs, 1e-6, f"ciou vs torchvision ({isa})", normal)
                else:
                    assert_bitwise_equal(ours, theirs)
            elif dtype == F64:
                mask = normal if kind == "ciou" else None
                assert_within(ours, theirs, 1e-12 * (1 + theirs.abs()), f"{kind} vs torchvision ({isa})", mask)
            else:
                # The README: half input is computed in float32 from the exact input values.
                assert_bitwise_equal(ours, OURS[kind](b1.float(), b2.float(), **kwargs))
                # torchvision rounds the intersection (and DIoU's centres) to half: within a few half ulps.
                tv_tol = _overlap_tolerance(kind, m, diag, _eps(dtype)) / 4 * (1 + theirs.abs())
                assert_within(ours, theirs, tv_tol, f"{kind} half vs torchvision ({isa})", normal & (m <= 1e4))


# ---------------------------------------------------------------------------------------------------------
# box_area, box_convert, clip_boxes_to_image, remove_small_boxes
# ---------------------------------------------------------------------------------------------------------

BOX_FMTS = ("xyxy", "xywh", "cxcywh")


def _helper_case(rows, dtype=F32, lead=False, fmts=("xyxy", "cxcywh"), size=(30, 50), min_size=1.0, isa=None):
    return dict(rows=rows, dtype=dtype, lead=lead, fmts=fmts, size=size, min_size=min_size, isa=isa)


@st.composite
def _helper_cases(draw):
    return _helper_case(
        draw(st.lists(_box(), max_size=10)),
        draw(_float_dtype),
        draw(st.integers(0, 4)) == 4,
        (draw(st.sampled_from(BOX_FMTS)), draw(st.sampled_from(BOX_FMTS))),
        (draw(st.integers(0, 60)), draw(st.integers(0, 60))),
        draw(st.one_of(st.sampled_from([0.0, 1.0, 5.0, 1e-3]), st.floats(-2.0, 50.0), st.just(NAN))),
        None,
    )


def _convert_reference(boxes, in_fmt, out_fmt):
    """box_convert in float64, from the formulas of each format."""
    a, b, c, d = boxes.double().unbind(-1)
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        a, b, c, d = a - c / 2, b - d / 2, a + c / 2, b + d / 2
    if out_fmt == "xywh":
        return torch.stack((a, b, c - a, d - b), -1)
    if out_fmt == "cxcywh":
        return torch.stack(((a + c) / 2, (b + d) / 2, c - a, d - b), -1)
    return torch.stack((a, b, c, d), -1)


@fuzz("box_helpers")
@given(case=_helper_cases())
@example(case=_helper_case([[0, 0, NAN, 1], [0, INF, 5, -INF], [10, 10, 0, 0], [3, 3, 3, 3]], min_size=0.0))
@example(case=_helper_case([[1e30, 1e30, -1e30, 3e38], [0, 0, 1, 1]], fmts=("cxcywh", "xywh"), size=(0, 0)))
@example(case=_helper_case([[-5, -5, 70, 40], [0, 0, 2, 2.5]], dtype=F16, lead=True, fmts=("xywh", "cxcywh")))
@example(case=_helper_case([[0.5, 0.5, 300.5, 2.5], [1, 1, 3, 3]], dtype=BF16, min_size=2.0))
def test_box_helpers(case):
    dtype, (in_fmt, out_fmt), size, min_size = case["dtype"], case["fmts"], case["size"], case["min_size"]
    boxes = _boxes_tensor(case["rows"]).to(dtype)
    if case["lead"]:
        boxes = torch.stack([boxes, boxes.flip(0)])
    exact = boxes.double()
    out_dtype = _compute_dtype(dtype)

    area_ref = (exact[..., 2] - exact[..., 0]) * (exact[..., 3] - exact[..., 1])
    area_mask = area_ref.abs() < torch.finfo(out_dtype).max / 4
    converted_ref = _convert_reference(exact, in_fmt, out_fmt)
    scale = exact.abs().amax(-1, keepdim=True)
    convert_mask = (scale < torch.finfo(dtype).max / 8).expand(converted_ref.shape)
    clip_ref = torch.stack(
        (exact[..., 0::2].clamp(0, size[1]), exact[..., 1::2].clamp(0, size[0])), -1
    ).reshape(exact.shape).to(dtype)
    for isa in _isas(case):
        with isa_level(isa):
            area = ops.box_area(boxes)
            assert_bitwise_equal(area, tvo.box_area(boxes))
            assert area.dtype == out_dtype
            # Two differences and a product, each rounded once (half types are upcast first).
            assert_within(area, area_ref, 2 * _eps(out_dtype) * area_ref.abs(), f"box_area vs reference ({isa})",
                          area_mask)

            converted = ops.box_convert(boxes, in_fmt, out_fmt)
            assert_bitwise_equal(converted, tvo.box_convert(boxes, in_fmt, out_fmt))
            assert_within(converted, converted_ref, 4 * _eps(dtype) * scale, f"box_convert vs reference ({isa})",
                          convert_mask)

            clipped = ops.clip_boxes_to_image(boxes, size)
            assert_bitwise_equal(clipped, tvo.clip_boxes_to_image(boxes, size))
            assert_bitwise_equal(clipped, clip_ref)

            if not case["lead"]:
                keep = ops.remove_small_boxes(boxes, min_size)
                assert_same_indices(keep, tvo.remove_small_boxes(boxes, min_size), f"remove_small_boxes ({isa})")
                # Reference: exact sides, where rounding the side to the dtype cannot cross min_size.
                ws, hs = exact[:, 2] - exact[:, 0], exact[:, 3] - exact[:, 1]
                slack = 2 * _eps(dtype) * exact.abs().amax(1)
                decided = ((ws - min_size).abs() > slack) & ((hs - min_size).abs() > slack)
                decided |= ws.isnan() | hs.isnan() | (ws < min_size - slack) | (hs < min_size - slack)
                if math.isnan(min_size):
                    decided[:] = True
                expected = torch.where((ws >= min_size) & (hs >= min_size) & decided)[0]
                kept_decided = keep[decided[keep]]
                assert_same_indices(kept_decided, expected, f"remove_small_boxes vs reference ({isa})")


# ---------------------------------------------------------------------------------------------------------
# RoI align and RoI pool
# ---------------------------------------------------------------------------------------------------------


def _roi_case(shape, rois, output_size, scale, sampling_ratio=2, aligned=False, dtype=F32, fmt=torch.channels_last,
              form="tensor", dyadic=False, seed=0, ties=False, isa=None):
    return dict(shape=shape, rois=rois, output_size=output_size, scale=scale, sampling_ratio=sampling_ratio,
                aligned=aligned, dtype=dtype, fmt=fmt, form=form, dyadic=dyadic, seed=seed, ties=ties, isa=isa)


@st.composite
def _roi_cases(draw, pool):
    """RoIs inside, partly outside and fully outside the map, of zero or negative size, smaller than a pixel,
    huge, or with a NaN coordinate.

    ``dyadic`` cases (coordinates on a 1/8-pixel grid, power-of-two scale and bin counts) are computed
    exactly the same way in float32 and float64 up to the final sums, so narrow types are compared with the
    float64 reference there; ``free`` cases use any coordinates and scales in [0.25, 1]."""
    dtype = draw(_float_dtype)
    n, c = draw(st.integers(1, 3)), draw(st.one_of(st.integers(1, 4), st.sampled_from([8, 13, 16, 17, 20])))
    h, w = draw(st.integers(1, 13)), draw(st.integers(1, 13))
    dyadic = draw(st.booleans())
    if dyadic:
        scale = draw(st.sampled_from([1.0, 0.5, 0.25]))
        output_size = (draw(st.sampled_from([1, 2, 4])), draw(st.sampled_from([1, 2, 4])))
    else:
        scale = draw(st.one_of(st.sampled_from([1.0, 0.5, 0.25, 0.3, 0.6, 0.75]), st.floats(0.25, 1.0)))
        output_size = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    sampling_ratio = 0 if pool else draw(st.integers(-1, 3))

    def map_coord(size):  # in map pixels: inside, partly and fully outside
        if dyadic:
            return draw(st.integers(-8 * (size + 3), 8 * (size + 3))) / 8
        return draw(st.one_of(st.floats(-(size + 3.0), size + 3.0, allow_subnormal=False),
                              st.integers(-2 * (size + 3), 2 * (size + 3)).map(lambda v: v / 2)))

    def map_side(size):  # zero, sub-pixel, up to the whole map and beyond, or inverted
        if dyadic:
            return draw(st.one_of(st.just(0.0), st.integers(1, 8 * (size + 4)), st.integers(-8 * size, -1))) / 8
        return draw(st.one_of(st.just(0.0), st.floats(0.01, size + 4.0), st.floats(-float(size), -0.01),
                              st.integers(1, size + 4).map(float)))

    rows = []
    for _ in range(draw(st.integers(0, 6))):
        b = draw(st.integers(0, n - 1))
        x1, y1 = map_coord(w), map_coord(h)
        box = [x1, y1, x1 + map_side(w), y1 + map_side(h)]
        special = draw(st.integers(0, 9))
        if special == 9:
            box[draw(st.integers(0, 3))] = NAN
        elif special == 7 and (not pool or dtype == F64):
            # roi_align pools such a RoI to zero; roi_pool clamps it at +-2^28 pixels, which only float64
            # reproduces exactly in the reference.
            box[draw(st.integers(0, 3))] = draw(st.sampled_from([INF, -INF]))
        elif special == 8 and dtype in (F32, F64) and not dyadic:
            # Huge coordinates (float32 / float64 only: half types would make them infinite). An adaptive grid
            # over a huge RoI would take astronomically many samples (in torchvision and the reference), so
            # huge extents only come with a fixed sampling ratio; otherwise the RoI is huge but far away.
            far = draw(_huge)
            if sampling_ratio > 0 or pool:
                box = [draw(st.sampled_from([-1.0, 1.0])) * far, y1, far, y1 + map_side(h)]
            else:
                box = [far, y1, far + draw(st.floats(0.0, 6.0)), y1 + map_side(h)]
        rows.append([float(b)] + [v / scale for v in box])
    return _roi_case(
        (n, c, h, w),
        rows,
        output_size,
        scale,
        sampling_ratio,
        draw(st.booleans()),
        dtype,
        draw(st.sampled_from(FORMATS)),
        draw(st.sampled_from(["tensor", "list"])),
        dyadic,
        draw(st.integers(0, 2**31 - 1)),
        draw(st.booleans()) if pool else False,
        draw(_isa),
    )


def _roi_inputs(case):
    n, c, h, w = case["shape"]
    g = torch.Generator().manual_seed(case["seed"])
    if case["ties"]:
        x = torch.randint(-2, 3, (n, c, h, w), generator=g).to(case["dtype"])
    else:
        x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64).to(case["dtype"])
    rois = torch.tensor(case["rois"], dtype=torch.float64).reshape(-1, 5)
    if case["form"] == "list":  # grouped by image, so that both forms list the RoIs in the same order
        rois = rois[torch.argsort(rois[:, 0], stable=True)]
    return x, rois.to(case["dtype"]), g


def _as_form(rois, form, n):
    if form == "tensor":
        return rois
    return [rois[rois[:, 0] == i, 1:] for i in range(n)]


def _leaf(x, fmt):
    return x.detach().clone().contiguous(memory_format=fmt).requires_grad_()


def _keeps_format(t, x):
    """The README: the RoI ops keep the input's memory format. A map that is contiguous in both formats (one
    pixel, or one channel) has either."""
    formats = [f for f in FORMATS if x.is_contiguous(memory_format=f)]
    return any(t.is_contiguous(memory_format=f) for f in formats)


def _align_max_count(rois, case):
    """The largest number of sampling points of a bin over ``rois`` (as the reference counts them)."""
    _, _, h, w = case["shape"]
    ph, pw = case["output_size"]
    counts = [
        _align_geometry(r, case["scale"], ph, pw, case["sampling_ratio"], case["aligned"], h, w)[3]
        for r in rois.double().tolist()
    ]
    return max(counts, default=1.0)


@fuzz("roi_align")
@given(case=_roi_cases(pool=False))
# RoIs whose samples fall exactly on the validity edges -1 and H / W, a sub-pixel RoI, the whole map, an
# inverted RoI with aligned=True and an adaptive grid (torchvision cannot take it: reference only), a NaN.
@example(
    case=_roi_case(
        (2, 17, 5, 7),
        [[0, -1.5, -1.5, 7.5, 5.5], [1, 2.25, 3.5, 2.5, 3.75], [0, -0.5, -0.5, 6.5, 4.5], [1, 5, 4, 1, 2],
         [0, 1, NAN, 3, 3], [1, -4, -4, -1, -1]],
        (2, 3),
        1.0,
        sampling_ratio=-1,
        aligned=True,
    )
)
# The same with aligned=False (one-pixel minimum size), NCHW, as a list with an image without RoIs.
@example(
    case=_roi_case(
        (3, 3, 4, 4), [[0, 0, 0, 0, 0], [2, 3.9, 3.9, 4.2, 4.2], [2, -8, 1, -2, 2]], (4, 1), 0.5, sampling_ratio=0,
        fmt=torch.contiguous_format, form="list",
    )
)
# Huge coordinates with a fixed sampling ratio: samples far outside (zero) or symmetric around the map.
@example(
    case=_roi_case((1, 2, 3, 3), [[0, -1e30, 0, 1e30, 2], [0, 1e6, 1e6, 2e6, 2e6], [0, -3e8, -1, 3e8, 4]], (1, 3),
                   0.75, sampling_ratio=3, dtype=F64)
)
# Infinite coordinates: pooled to zero.
@example(
    case=_roi_case((1, 3, 4, 5), [[0, -INF, 1, 2, 2], [0, 1, 1, INF, 2], [0, 1, INF, 2, 3], [0, 1, 1, 2, -INF],
                                  [0, 1, 1, 3, 3]], (1, 2), 1.0, sampling_ratio=0, dyadic=True)
)
@example(case=_roi_case((1, 20, 13, 13), [[0, 1.5, 2.5, 11, 12.25], [0, 0, 0, 13, 13]], (2, 2), 1.0, dtype=F16,
                        dyadic=True))
@example(case=_roi_case((2, 5, 6, 9), [[1, 0.5, 0.5, 8.5, 5.5], [0, 8, 5, 9, 6]], (4, 4), 0.5, sampling_ratio=-1,
                        aligned=True, dtype=BF16, dyadic=True))
def test_roi_align(case):
    x, rois, g = _roi_inputs(case)
    n, c, h, w = case["shape"]
    ph, pw = case["output_size"]
    dtype, fmt, form = case["dtype"], case["fmt"], case["form"]
    args = ((ph, pw), case["scale"], case["sampling_ratio"], case["aligned"])
    grad = torch.randn(rois.shape[0], c, ph, pw, generator=g, dtype=torch.float64).to(dtype)

    # float64 reference, with bounds: the same sums over |x| and |grad| bound every partial sum.
    ref_mode = dtype == F64 or case["dyadic"]
    event(f"roi_align reference compared: {ref_mode}")
    if ref_mode:
        r64, x64, g64 = rois.double(), x.double(), grad.double()
        ref = roi_align_reference(x64, r64, *args)
        ref_bound = roi_align_reference(x64.abs(), r64, *args)
        ref_grad = roi_align_reference_backward(g64, r64, x.shape, *args)
        ref_grad_bound = roi_align_reference_backward(g64.abs(), r64, x.shape, *args)
        terms = 4 * _align_max_count(rois, case) + 8  # products summed per output value
        grad_terms = rois.shape[0] * ph * pw * terms  # contributions summed per input value
        eps_c = _eps(_compute_dtype(dtype))
        tol = _rounding(ref_bound, dtype) + terms * eps_c * ref_bound
        grad_tol = _rounding(ref_grad_bound, dtype) + grad_terms * eps_c * ref_grad_bound

    # torchvision: every RoI but those it cannot take (NaN or infinite coordinates: undefined there; inverted
    # RoIs with aligned=True and an adaptive grid: it raises).
    finite_rows = rois.isfinite().all(1)
    tv_rows = finite_rows.clone()
    if case["aligned"] and case["sampling_ratio"] <= 0:
        tv_rows &= (rois[:, 3] >= rois[:, 1]) & (rois[:, 4] >= rois[:, 2])
    if dtype == F16:
        half_rows, pos_err = _half_geometry_rows(rois, case["scale"], h, w, case["aligned"], case["sampling_ratio"],
                                                 case["dyadic"])
        tv_rows &= half_rows
    theirs = None
    if dtype != BF16:
        tv_in = x.detach().clone().requires_grad_()
        theirs = tvo.roi_align(tv_in, _as_form(rois[tv_rows], form, n), *args)
        theirs.backward(grad[tv_rows])

    for isa in _isas(case):
        with isa_level(isa):
            xin = _leaf(x, fmt)
            out = ops.roi_align(xin, _as_form(rois, form, n), *args)
            out.backward(grad)
            assert out.dtype == dtype and out.shape == (rois.shape[0], c, ph, pw)
            assert _keeps_format(out, xin) and _keeps_format(xin.grad, xin), (out.stride(), xin.grad.stride())
            assert xin.grad.dtype == dtype
            # The README: a RoI with a NaN or infinite coordinate pools to zero.
            zero_rows = ~finite_rows
            assert torch.count_nonzero(out[zero_rows]) == 0, f"non-finite RoIs must pool to 0 ({isa})"
            if ref_mode:
                assert_within(out, ref, tol, f"roi_align vs reference ({isa})")
                assert_within(xin.grad, ref_grad, grad_tol, f"roi_align backward vs reference ({isa})")
            if dtype in HALF:
                # Computed in float32 from the half values, rounded once.
                wide_in = _leaf(x.float(), fmt)
                wide = ops.roi_align(wide_in, _as_form(rois.float(), form, n), *args)
                wide.backward(grad.float())
                assert_within(out, wide, _ulp(wide, dtype), f"roi_align half vs float32 ({isa})")
                assert_within(xin.grad, wide_in.grad, _ulp(wide_in.grad, dtype),
                              f"roi_align backward half vs float32 ({isa})")
            if theirs is None:
                continue
            if bool(tv_rows.all()):
                sub_out, sub_grad = out, xin.grad
            else:
                sub_in = _leaf(x, fmt)
                sub_out = ops.roi_align(sub_in, _as_form(rois[tv_rows], form, n), *args)
                sub_out.backward(grad[tv_rows])
                sub_grad = sub_in.grad
            if dtype in (F32, F64):
                assert torch.equal(sub_out, theirs), (
                    f"roi_align vs torchvision ({isa}): {(sub_out - theirs).abs().max()}"
                )
                assert torch.equal(sub_grad, tv_in.grad), (
                    f"roi_align backward vs torchvision ({isa}): {(sub_grad - tv_in.grad).abs().max()}"
                )
            else:
                # torchvision's float16 kernel rounds every step (and every accumulation) to half: the sums'
                # rounding, plus samples moved by up to pos_err pixels (bilinear weights off by up to
                # 4 * pos_err per sample).
                r64, x64, g64 = rois[tv_rows].double(), x.double(), grad[tv_rows].double()
                count = 4 * _align_max_count(rois[tv_rows], case) + 8
                bound = roi_align_reference(x64.abs(), r64, *args)
                grad_bound = roi_align_reference_backward(g64.abs(), r64, x.shape, *args)
                moved = 4 * pos_err * x64.abs().max()
                moved_grad = 2 * pos_err * g64.abs().sum((0, 2, 3))[None, :, None, None]
                assert_within(sub_out, theirs, 2 * count * _half_step(bound) + moved,
                              f"roi_align f16 vs torchvision ({isa})")
                assert_within(sub_grad, tv_in.grad, 2 * r64.shape[0] * ph * pw * count * _half_step(grad_bound)
                              + moved_grad, f"roi_align f16 backward vs torchvision ({isa})")


def _half_geometry_rows(rois, scale, height, width, aligned, sampling_ratio, exact_sizes):
    """torchvision's float16 RoI align rounds the RoI corners, bin sizes and sampling positions to half.
    Returns the RoIs for which that moves no sample by more than ``pos_err`` map pixels and cannot change a
    discrete decision -- no sample region within 2 * pos_err of the validity edges (-1 and the map size), and
    no adaptive grid count computed from a rounded RoI size (the sizes are exact in half for dyadic cases) --
    and ``pos_err``."""
    r = rois.double()
    offset = 0.5 if aligned else 0.0
    inside = r[:, 1:].isfinite().all(1)
    magnitude = 0.0
    edges = []
    for lo, hi, size in ((1, 3, width), (2, 4, height)):
        start = r[:, lo] * scale - offset
        extent = (r[:, hi] - r[:, lo]) * scale
        if not aligned:
            extent = extent.clamp(min=1.0)
        a, b = torch.minimum(start, start + extent), torch.maximum(start, start + extent)
        edges.append((a, b, size))
        finite = torch.cat([a[inside], b[inside]]).abs()
        magnitude = max(magnitude, float(finite.max()) if finite.numel() else 0.0)
    pos_err = 8 * _eps(F16) * (1 + magnitude)
    for a, b, size in edges:
        inside &= (a >= -1 + 2 * pos_err) & (b <= size - 2 * pos_err)
    if not (exact_sizes or sampling_ratio > 0):
        inside[:] = False
    return inside, pos_err


# aligned=False widens RoIs narrower than one pixel, and torchvision widens one whose x2 / y2 is -inf too; here
# a RoI with an infinite coordinate pools to zero whatever `aligned` is, forward and backward.
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("corner", [3, 4])
def test_roi_align_negative_infinite_corner_pools_to_zero(corner, sampling_ratio):
    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0)).requires_grad_()
    rois = torch.tensor([[0.0, 1.0, 1.0, 2.0, 2.0]])
    rois[0, corner] = -INF
    out = ops.roi_align(x, rois, 1, 1.0, sampling_ratio, False)
    out.sum().backward()
    assert torch.count_nonzero(out) == 0 and torch.count_nonzero(x.grad) == 0, (out, x.grad)


def _clamp_for_pool(rois, scale):
    """The README's rule: roi_pool clamps coordinates beyond +-2^28 pixels (after scaling)."""
    limit = 2.0**28 / scale
    out = rois.clone()
    out[:, 1:] = out[:, 1:].clamp(-limit, limit)  # NaN stays NaN
    return out


@fuzz("roi_pool")
@given(case=_roi_cases(pool=True))
# Maps of few values (ties: the first maximum in row-major order), coordinates on half pixels (rounding
# ties, half away from zero), RoIs outside, inverted, NaN.
@example(
    case=_roi_case(
        (2, 3, 5, 6),
        [[0, 0.5, 1.5, 2.5, 3.5], [1, -1.5, -2.5, 6.5, 5.5], [0, 4, 4, 1, 1], [1, 7, 6, 9, 9], [0, NAN, 0, 2, 2]],
        (2, 4),
        1.0,
        ties=True,
    )
)
# Coordinates beyond 2^28 pixels (clamped there), float64, as a list.
@example(
    case=_roi_case((2, 2, 4, 4), [[0, -1e30, -1e30, 1e30, 1e30], [1, 1e9, 0, 2e9, 3], [1, -3e8, 1, 3.5e8, 2]], (3, 2),
                   0.6, dtype=F64, form="list")
)
@example(case=_roi_case((1, 4, 7, 7), [[0, 0.5, 0.5, 6.5, 6.5], [0, 2, 2, 2, 2]], (4, 2), 0.5, dtype=F16, dyadic=True,
                        ties=True))
@example(case=_roi_case((1, 2, 3, 11), [[0, -1, 0, 12, 3]], (1, 4), 1.0, dtype=BF16, dyadic=True))
# float16 with scale 0.75: 0.6665 * 0.75 is 0.4999 in float32 (pixel 0) but 0.5 in half (pixel 1, torchvision)
@example(case=_roi_case((1, 1, 1, 1), [[0, 0, 2 / 3, 0, 2 / 3], [0, 0, 0, INF, 0]], (1, 1), 0.75, dtype=F16))
def test_roi_pool(case):
    x, rois, g = _roi_inputs(case)
    n, c, h, w = case["shape"]
    ph, pw = case["output_size"]
    dtype, fmt, form, scale = case["dtype"], case["fmt"], case["form"], case["scale"]
    grad = torch.randn(rois.shape[0], c, ph, pw, generator=g, dtype=torch.float64).to(dtype)

    ref_mode = dtype == F64 or case["dyadic"]
    event(f"roi_pool reference compared: {ref_mode}")
    if ref_mode:
        clamped = _clamp_for_pool(rois.double(), scale)
        ref, ref_argmax = roi_pool_reference(x.double(), clamped, (ph, pw), scale)
        ref_grad = roi_pool_reference_backward(grad.double(), clamped, ref_argmax, x.shape)
        grad_bound = roi_pool_reference_backward(grad.double().abs(), clamped, ref_argmax, x.shape)
        grad_terms = rois.shape[0] * ph * pw + 2  # gradients summed per input value
        grad_tol = _rounding(grad_bound, dtype) + grad_terms * _eps(_compute_dtype(dtype)) * grad_bound

    # torchvision: RoIs without NaN and inside the +-2^28 pixel range (undefined, or clamped here, beyond);
    # float16 only where its half arithmetic is exact: power-of-two scales (it rounds x * spatial_scale to
    # half) and bin counts (its bin sizes are half).
    finite_rows = ~rois.isnan().any(1) & ((rois[:, 1:].double() * scale).abs() <= 2.0**28).all(1)
    tv_ok = dtype in (F32, F64) or (
        dtype == F16 and scale in (0.25, 0.5, 1.0) and ph in (1, 2, 4) and pw in (1, 2, 4)
    )
    if tv_ok:
        tv_out, tv_argmax = TV.roi_pool(x, rois[finite_rows], scale, ph, pw)
        tv_in = x.detach().clone().requires_grad_()
        tvo.roi_pool(tv_in, _as_form(rois[finite_rows], form, n), (ph, pw), scale).backward(grad[finite_rows])

    for isa in _isas(case):
        with isa_level(isa):
            xin = _leaf(x, fmt)
            out, argmax = RAW.roi_pool(xin.detach(), rois, scale, ph, pw)
            assert out.dtype == dtype and argmax.dtype == torch.int32 and out.shape == (rois.shape[0], c, ph, pw)
            assert _keeps_format(out, xin) and _keeps_format(argmax, xin), (out.stride(), argmax.stride())
            public = ops.roi_pool(xin, _as_form(rois, form, n), (ph, pw), scale)
            public.backward(grad)
            assert torch.equal(public, out), f"roi_pool public vs raw op ({isa})"
            nan_rows = rois.isnan().any(1)  # the README: pools to zero, argmax -1
            assert torch.count_nonzero(out[nan_rows]) == 0 and bool((argmax[nan_rows] == -1).all())
            assert xin.grad.dtype == dtype and _keeps_format(xin.grad, xin), xin.grad.stride()
            if ref_mode:  # a maximum is exact: bit for bit, argmax included
                assert torch.equal(out.double(), ref), (
                    f"roi_pool vs reference ({isa}): {(out.double() - ref).abs().max()}"
                )
                assert torch.equal(argmax.long(), ref_argmax), f"roi_pool argmax vs reference ({isa})"
                assert_within(xin.grad, ref_grad, grad_tol, f"roi_pool backward vs reference ({isa})")
            if dtype in HALF:
                wide, wide_argmax = RAW.roi_pool(x.float().contiguous(memory_format=fmt), rois.float(), scale, ph, pw)
                assert torch.equal(out, wide.to(dtype)) and torch.equal(argmax, wide_argmax), (
                    f"roi_pool half vs float32 ({isa})"
                )
            if not tv_ok:
                continue
            sub_out, sub_argmax = RAW.roi_pool(x.contiguous(memory_format=fmt), rois[finite_rows], scale, ph, pw)
            assert torch.equal(sub_out, tv_out), f"roi_pool vs torchvision ({isa})"
            assert torch.equal(sub_argmax, tv_argmax), f"roi_pool argmax vs torchvision ({isa})"
            if bool(finite_rows.all()):
                sub_grad = xin.grad
            else:
                sub_in = _leaf(x, fmt)
                ops.roi_pool(sub_in, _as_form(rois[finite_rows], form, n), (ph, pw), scale).backward(
                    grad[finite_rows]
                )
                sub_grad = sub_in.grad
            if dtype in (F32, F64):
                assert torch.equal(sub_grad, tv_in.grad), f"roi_pool backward vs torchvision ({isa})"
            else:  # torchvision accumulates the gradient in half
                bound = roi_pool_reference_backward(grad[finite_rows].double().abs(), rois[finite_rows].double(),
                                                    tv_argmax.long(), x.shape)
                tol = (int(finite_rows.sum()) * ph * pw + 2) * _half_step(bound)
                assert_within(sub_grad, tv_in.grad, tol, f"roi_pool f16 backward vs torchvision ({isa})")


# ---------------------------------------------------------------------------------------------------------
# MultiScaleRoIAlign
# ---------------------------------------------------------------------------------------------------------


def _ms_case(image_shapes, k_min, levels, boxes, output_size=(2, 2), sampling_ratio=2, channels=3, dtype=F32,
             fmts=None, canonical=(224, 4), dyadic=False, seed=0, isa=None):
    fmts = fmts or [torch.channels_last] * levels
    return dict(image_shapes=image_shapes, k_min=k_min, levels=levels, boxes=boxes, output_size=output_size,
                sampling_ratio=sampling_ratio, channels=channels, dtype=dtype, fmts=fmts, canonical=canonical,
                dyadic=dyadic, seed=seed, isa=isa)


@st.composite
def _ms_cases(draw):
    dtype = draw(_float_dtype)
    k_min = draw(st.integers(1, 3))
    levels = draw(st.integers(1, 4 - k_min + 1))
    k_max = k_min + levels - 1
    # The padded batch is a multiple of the coarsest stride, so every level's scale is exactly 2^-k.
    hm = (2**k_max) * draw(st.integers(1, max(1, 64 // 2**k_max)))
    wm = (2**k_max) * draw(st.integers(1, max(1, 64 // 2**k_max)))
    n = draw(st.integers(1, 2))
    image_shapes = [(hm, wm)] + [(draw(st.integers(1, hm)), draw(st.integers(1, wm))) for _ in range(n - 1)]
    image_shapes = draw(st.permutations(image_shapes))
    dyadic = draw(st.booleans())
    if dyadic:
        output_size = (draw(st.sampled_from([1, 2, 4])), draw(st.sampled_from([1, 2, 4])))
    else:
        output_size = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))

    def coord(limit):
        if dyadic:
            return draw(st.integers(-64, 8 * (limit + 8))) / 8
        return draw(st.floats(-8.0, limit + 8.0, allow_subnormal=False))

    def side(limit):  # from tiny (finest level) to far beyond the image (coarsest level), zero, inverted
        if dyadic:
            return draw(st.one_of(st.just(0), st.integers(1, 32), st.integers(1, 32 * limit), st.integers(-40, -1))) / 8
        return draw(st.one_of(st.just(0.0), st.floats(0.05, 4.0), st.floats(1.0, 4.0 * limit), st.floats(-5.0, -0.01)))

    boxes = []
    for _ in range(n):
        rows = []
        for _ in range(draw(st.integers(0, 4))):
            x1, y1 = coord(wm), coord(hm)
            row = [x1, y1, x1 + side(wm), y1 + side(hm)]
            if draw(st.integers(0, 9)) == 9:
                row[draw(st.integers(0, 3))] = NAN
            rows.append(row)
        boxes.append(rows)
    return _ms_case(
        image_shapes,
        k_min,
        levels,
        boxes,
        output_size,
        draw(st.integers(-1, 3)),
        draw(st.integers(1, 8)),
        dtype,
        [draw(st.sampled_from(FORMATS)) for _ in range(levels)],
        draw(st.sampled_from([(224, 4), (16, 2), (32, 3), (56, 4)])),
        dyadic,
        draw(st.integers(0, 2**31 - 1)),
        draw(_isa),
    )


@fuzz("multi_scale")
@given(case=_ms_cases())
# Boxes exactly on a level boundary (sqrt(area) = 2 * canonical_scale: torchvision's +1e-6), a zero-area box
# (the finest level), an inverted one and a NaN one (no level: pooled to 0), a huge one (the coarsest level).
@example(
    case=_ms_case(
        [(32, 48), (20, 40)],
        2,
        3,
        [[[0, 0, 32, 32], [4, 4, 4, 12], [10, 10, 2, 30], [1, 1, NAN, 5]], [[-500, -500, 500, 500], [1, 2, 5, 9]]],
        canonical=(16, 3),
    )
)
@example(
    case=_ms_case([(16, 16)], 1, 1, [[[0.5, 0.5, 8.5, 12.5], [15, 15, 17, 17]]], output_size=(4, 1), sampling_ratio=-1,
                  dtype=F64, fmts=[torch.contiguous_format])
)
@example(
    case=_ms_case([(32, 32)], 2, 2, [[[0, 0, 16, 16], [2, 2, 30, 30], [8, 8, 9, 9]]], output_size=(2, 4), dtype=F16,
                  canonical=(16, 3), dyadic=True)
)
def test_multi_scale_roi_align(case):
    dtype, k_min, levels = case["dtype"], case["k_min"], case["levels"]
    k_max = k_min + levels - 1
    hm = max(s[0] for s in case["image_shapes"])
    wm = max(s[1] for s in case["image_shapes"])
    n, c = len(case["image_shapes"]), case["channels"]
    ph, pw = case["output_size"]
    sr = case["sampling_ratio"]
    cs, cl = case["canonical"]
    g = torch.Generator().manual_seed(case["seed"])
    names = [f"p{k}" for k in range(k_min, k_max + 1)]
    feats = {
        name: torch.randn(n, c, hm // 2**k, wm // 2**k, generator=g, dtype=torch.float64).to(dtype)
        for name, k in zip(names, range(k_min, k_max + 1))
    }
    boxes = [_boxes_tensor(rows).to(dtype) for rows in case["boxes"]]
    all_boxes = torch.cat(boxes)
    k = all_boxes.shape[0]
    grad = torch.randn(k, c, ph, pw, generator=g, dtype=torch.float64).to(dtype)
    scales = [2.0**-lvl for lvl in range(k_min, k_max + 1)]
    rois = torch.cat([torch.full((b.shape[0], 1), float(i), dtype=torch.float64) for i, b in enumerate(boxes)]
                     + [torch.zeros(0, 1, dtype=torch.float64)])
    rois = torch.cat([rois, all_boxes.double()], 1)

    # Levels by torchvision's rule, computed on the boxes as given. With several levels, boxes with a NaN or
    # negative area have no level and pool to 0 (the class docstring); with one level every box is pooled from
    # it, as torchvision does (RoI align: a NaN coordinate pools to 0).
    compute = _compute_dtype(dtype)
    area = (all_boxes[:, 2] - all_boxes[:, 0]).to(compute) * (all_boxes[:, 3] - all_boxes[:, 1]).to(compute)
    if levels > 1:
        valid = ~area.isnan() & (area >= 0)
        mapper_levels = LevelMapper(k_min, k_max, canonical_scale=cs, canonical_level=cl)([all_boxes])
    else:
        valid = ~all_boxes.isnan().any(1)  # (for torchvision only, for which NaN RoIs are undefined)
        mapper_levels = torch.zeros(k, dtype=torch.int64)
    level_of = torch.where(valid | (levels == 1), mapper_levels, torch.full_like(mapper_levels, -1))

    # float64 reference per level, and the same sums over |x| and |grad| that bound every partial sum.
    ref = torch.zeros(k, c, ph, pw, dtype=torch.float64)
    bound = torch.zeros_like(ref)
    ref_grads = {name: torch.zeros(feats[name].shape, dtype=torch.float64) for name in names}
    grad_bounds = {name: torch.zeros(feats[name].shape, dtype=torch.float64) for name in names}
    terms = 8.0
    for lvl, name in enumerate(names):
        idx = (level_of == lvl).nonzero().flatten()
        if idx.numel() == 0:
            continue
        f64, r64, g64 = feats[name].double(), rois[idx], grad[idx].double()
        args = ((ph, pw), scales[lvl], sr, False)
        ref[idx] = roi_align_reference(f64, r64, *args)
        bound[idx] = roi_align_reference(f64.abs(), r64, *args)
        ref_grads[name] = roi_align_reference_backward(g64, r64, f64.shape, *args)
        grad_bounds[name] = roi_align_reference_backward(g64.abs(), r64, f64.shape, *args)
        for r in r64.tolist():
            count = _align_geometry(r, scales[lvl], ph, pw, sr, False, f64.shape[2], f64.shape[3])[3]
            terms = max(terms, 4 * count + 8)
    grad_terms = k * ph * pw * terms
    ref_mode = dtype == F64 or case["dyadic"]
    event(f"MultiScaleRoIAlign reference compared: {ref_mode}")
    eps_c = _eps(compute)
    tol = _rounding(bound, dtype) + terms * eps_c * bound
    grad_tol = {name: _rounding(grad_bounds[name], dtype) + grad_terms * eps_c * grad_bounds[name] for name in names}

    # torchvision: the boxes with a level (its LevelMapper is undefined for NaN and negative areas); in
    # float16 those whose geometry its half arithmetic keeps (see _half_geometry_rows).
    tv_rows = valid.clone()
    pos_err = 0.0
    if dtype == F16:
        for lvl, name in enumerate(names):
            at_level = level_of == lvl
            fh, fw = feats[name].shape[-2:]
            rows, err = _half_geometry_rows(rois[at_level], scales[lvl], fh, fw, False, sr, case["dyadic"])
            tv_rows[at_level] &= rows
            pos_err = max(pos_err, err)
    starts = [0]
    for b in boxes:
        starts.append(starts[-1] + b.shape[0])
    tv_boxes = [b[tv_rows[starts[i]:starts[i + 1]]] for i, b in enumerate(boxes)]
    theirs = None
    if dtype != BF16:
        tv_feats = {name: f.detach().clone().requires_grad_() for name, f in feats.items()}
        tv_pooler = tvo.MultiScaleRoIAlign(names, (ph, pw), sr, canonical_scale=cs, canonical_level=cl)
        theirs = tv_pooler(tv_feats, tv_boxes, case["image_shapes"])
        theirs.backward(grad[tv_rows])
        assert tv_pooler.scales == scales

    for isa in _isas(case):
        with isa_level(isa):
            leaves = {name: _leaf(feats[name], fmt) for name, fmt in zip(names, case["fmts"])}
            pooler = ops.MultiScaleRoIAlign(names, (ph, pw), sr, canonical_scale=cs, canonical_level=cl)
            out = pooler(leaves, boxes, case["image_shapes"])
            out.backward(grad)
            assert pooler.scales == scales
            assert out.dtype == dtype and out.shape == (k, c, ph, pw)
            assert torch.count_nonzero(out[level_of < 0]) == 0, "boxes without a level must pool to 0"
            if ref_mode:
                assert_within(out, ref, tol, f"MultiScaleRoIAlign vs reference ({isa})")
                for name in names:
                    assert_within(leaves[name].grad, ref_grads[name], grad_tol[name],
                                  f"MultiScaleRoIAlign backward {name} vs reference ({isa})")
            if theirs is None:
                continue
            if bool(tv_rows.all()):
                sub_out, sub_leaves = out, leaves
            else:
                sub_leaves = {name: _leaf(feats[name], fmt) for name, fmt in zip(names, case["fmts"])}
                sub_pooler = ops.MultiScaleRoIAlign(names, (ph, pw), sr, canonical_scale=cs, canonical_level=cl)
                sub_out = sub_pooler(sub_leaves, tv_boxes, case["image_shapes"])
                sub_out.backward(grad[tv_rows])
            if dtype in (F32, F64):
                assert torch.equal(sub_out, theirs), f"MultiScaleRoIAlign vs torchvision ({isa})"
                for name in names:
                    assert torch.equal(sub_leaves[name].grad, tv_feats[name].grad), (
                        f"MultiScaleRoIAlign backward {name} vs torchvision ({isa})"
                    )
            else:  # float16: torchvision rounds every step (and every accumulation) to half; see test_roi_align
                g_sub = grad[tv_rows].double()
                moved = 4 * pos_err * max(float(f.double().abs().max()) for f in feats.values())
                moved_grad = 2 * pos_err * g_sub.abs().sum((0, 2, 3))[None, :, None, None]
                assert_within(sub_out, theirs, 2 * terms * _half_step(bound[tv_rows]) + moved,
                              f"MultiScaleRoIAlign f16 vs torchvision ({isa})")
                for name in names:
                    assert_within(sub_leaves[name].grad, tv_feats[name].grad,
                                  2 * grad_terms * _half_step(grad_bounds[name]) + moved_grad,
                                  f"MultiScaleRoIAlign f16 backward {name} vs torchvision ({isa})")


# The README: with two or more maps a box of negative or NaN area has no level and pools to zero; with a single
# map every box goes to roi_align, as in torchvision, so an inverted box pools like any inverted RoI.
@pytest.mark.parametrize("names", [["p2"], ["p2", "p3"]])
def test_multi_scale_negative_area(names):
    g = torch.Generator().manual_seed(0)
    x = {"p2": torch.randn(1, 2, 8, 8, generator=g), "p3": torch.randn(1, 2, 4, 4, generator=g)}
    boxes = [torch.tensor([[4.0, 4.0, 20.0, 12.0], [20.0, 4.0, 4.0, 12.0], [4.0, NAN, 20.0, 12.0]])]
    out = ops.MultiScaleRoIAlign(names, 2, 2)(x, boxes, [(32, 32)])
    theirs = tvo.MultiScaleRoIAlign(names, 2, 2)(x, [boxes[0][:2]], [(32, 32)])
    assert torch.count_nonzero(out[0]) > 0
    assert torch.count_nonzero(out[2]) == 0, out[2]
    assert torch.equal(out[:2], theirs)
    if len(names) == 1:
        assert torch.count_nonzero(out[1]) > 0
    else:
        assert torch.count_nonzero(out[1]) == 0, out[1]


# ---------------------------------------------------------------------------------------------------------
# Anchors
# ---------------------------------------------------------------------------------------------------------


def _anchor_case(sizes, ratios, image_hw, shapes, n=1, dtype=F32, isa=None):
    return dict(sizes=sizes, ratios=ratios, image_hw=image_hw, shapes=shapes, n=n, dtype=dtype, isa=isa)


_anchor_size = st.one_of(
    st.integers(1, 512), st.sampled_from([16, 32, 45, 45.5, 90.25, 128]), st.floats(1.0, 600.0, allow_subnormal=False)
)
_aspect_ratio = st.one_of(
    st.sampled_from([0.5, 1.0, 2.0, 0.25, 4.0, 0.33, 3.1]), st.floats(0.1, 10.0, allow_subnormal=False)
)


@st.composite
def _anchor_cases(draw):
    levels = draw(st.integers(1, 3))
    sizes = tuple(tuple(draw(st.lists(_anchor_size, min_size=1, max_size=3))) for _ in range(levels))
    ratios = tuple(tuple(draw(st.lists(_aspect_ratio, min_size=1, max_size=3))) for _ in range(levels))
    image_hw = (draw(st.integers(1, 256)), draw(st.integers(1, 256)))
    shapes = [(draw(st.integers(1, 13)), draw(st.integers(1, 13))) for _ in range(levels)]
    return _anchor_case(sizes, ratios, image_hw, shapes, draw(st.integers(1, 2)), draw(_float_dtype), draw(_isa))


def _cell_rounding_slack(sizes, ratios):
    """Per level, per cell anchor: 1 where the half width or height lies within 1e-4 (relative) of a
    half-integer, so that computing it in float32 (torchvision's order: ratio, its square root, a product,
    then / 2) instead of float64 may round it to the other whole number; else 0."""
    slack = []
    for level_sizes, level_ratios in zip(sizes, ratios):
        cells = []
        for r in level_ratios:
            for s in level_sizes:
                half_w, half_h = s / math.sqrt(r) / 2, s * math.sqrt(r) / 2
                near = [abs(v - math.floor(v) - 0.5) < 1e-4 * max(1.0, v) for v in (half_w, half_h)]
                cells.append([float(near[0]), float(near[1]), float(near[0]), float(near[1])])
        slack.append(torch.tensor(cells, dtype=torch.float64))
    return slack


@fuzz("anchor_generator")
@given(case=_anchor_cases())
# Rounding ties (45 * 1 / 2 = 22.5 rounds to even), feature maps larger than the image (stride 0), one pixel.
@example(case=_anchor_case(((45, 45.5), (1,)), ((1.0, 4.0), (0.25,)), (10, 12), [(20, 30), (1, 1)], n=2))
# Coordinates beyond the exactly representable whole numbers of float16 (2048) and bfloat16 (256).
@example(case=_anchor_case(((37, 300),), ((0.6, 1.7),), (256, 256), [(2, 3)], dtype=F16))
@example(case=_anchor_case(((512,), (23, 100)), ((0.1, 10.0), (2.0,)), (200, 180), [(13, 11), (4, 4)], dtype=BF16))
@example(case=_anchor_case(((32, 64, 128),), ((0.5, 1.0, 2.0),), (100, 150), [(12, 13)], dtype=F64))
def test_anchor_generator(case):
    sizes, ratios, shapes, n, dtype = (case[k] for k in ("sizes", "ratios", "shapes", "n", "dtype"))
    ih, iw = case["image_hw"]
    images = ImageList(torch.zeros(n, 3, ih, iw), [(max(1, ih - 3 * i), max(1, iw - 5 * i)) for i in range(n)])
    features = [torch.zeros(n, 2, h, w, dtype=dtype) for h, w in shapes]
    theirs = TVAnchorGenerator(sizes, ratios)(images, features)

    reference = _reference_anchors(sizes, ratios, (ih, iw), shapes)
    slack = torch.cat([cells.repeat(h * w, 1) for cells, (h, w) in zip(_cell_rounding_slack(sizes, ratios), shapes)])
    if dtype in HALF:  # the cell anchors and the sums are rounded to the dtype
        cells = torch.cat([c.repeat(h * w, 1) for c, (h, w) in
                           zip(ops.AnchorGenerator(sizes, ratios).cell_anchors, shapes)]).double()
        slack = slack + _ulp(cells, dtype) + _ulp(reference, dtype)
    for isa in _isas(case):
        with isa_level(isa):
            gen = ops.AnchorGenerator(sizes, ratios)
            assert gen.num_anchors_per_location() == [len(s) * len(r) for s, r in zip(sizes, ratios)]
            for call in range(2):  # the second call comes from the cache
                ours = gen(images, features)
                assert len(ours) == n
                for a, b in zip(ours, theirs):
                    assert_bitwise_equal(a, b)
                    assert_within(a, reference, slack, f"anchors vs reference (call {call}, {isa})")


def _grid_case(cells, grid_sizes, strides, offset=0.0, dtype=F32, isa=None):
    return dict(cells=cells, grid_sizes=grid_sizes, strides=strides, offset=offset, dtype=dtype, isa=isa)


@st.composite
def _grid_cases(draw):
    levels = draw(st.integers(1, 3))
    cell_value = st.integers(-1200, 1200).map(lambda v: v / 2)
    cell = st.lists(cell_value, min_size=4, max_size=4)
    cells = [draw(st.lists(cell, min_size=1, max_size=3)) for _ in range(levels)]
    grid_sizes = [(draw(st.integers(0, 9)), draw(st.integers(0, 9))) for _ in range(levels)]
    strides = [(draw(st.integers(0, 64)), draw(st.integers(0, 64))) for _ in range(levels)]
    offset = draw(st.sampled_from([0.0, 0.0, 0.5, -1.25, 2.5, 8.0]))
    return _grid_case(cells, grid_sizes, strides, offset, draw(_float_dtype), draw(_isa))


@fuzz("grid_anchors")
@given(case=_grid_cases())
@example(case=_grid_case([[[-2, -3, 2, 3], [-5.5, -1, 5.5, 1]], [[-8, -8, 8, 8]]], [(3, 4), (2, 1)], [(5, 6), (10, 12)],
                         offset=2.5))
@example(case=_grid_case([[[0, 0, 0, 0]], [[-1, -1, 1, 1]]], [(0, 3), (7, 0)], [(4, 4), (0, 0)]))
@example(case=_grid_case([[[-600, -599.5, 600, 599.5]]], [(9, 9)], [(64, 63)], dtype=F16))
def test_grid_anchors(case):
    dtype, offset = case["dtype"], case["offset"]
    cells = [torch.tensor(c, dtype=torch.float64) for c in case["cells"]]
    grid_sizes, strides = case["grid_sizes"], case["strides"]
    tv_strides = [[torch.tensor(sy), torch.tensor(sx)] for sy, sx in strides]

    def torchvision_grid(cell_dtype):
        gen = TVAnchorGenerator(((1,),) * len(cells), ((1.0,),) * len(cells))
        gen.cell_anchors = [c.to(cell_dtype) for c in cells]
        return gen.grid_anchors([list(s) for s in grid_sizes], tv_strides)

    theirs = torchvision_grid(dtype)
    # Whole and half numbers below 2^13: float64 sums are exact, a float64 reference.
    expected = torch.cat(torchvision_grid(F64)) + offset
    if dtype in HALF:
        repeated_cells = torch.cat([c.repeat(h * w, 1) for c, (h, w) in zip(cells, grid_sizes)] + [cells[0][:0]])
        shifts = expected - offset - repeated_cells
        slack = _ulp(repeated_cells, dtype) + _ulp(shifts, dtype) + 2 * _ulp(expected, dtype)
    for isa in _isas(case):
        with isa_level(isa):
            ours = ops.grid_anchors([c.to(dtype) for c in cells], grid_sizes, strides, offset=offset)
            assert ours.dtype == dtype and ours.shape == expected.shape
            if offset == 0.0:
                assert_bitwise_equal(ours, torch.cat(theirs))
            if dtype in (F32, F64):
                assert_bitwise_equal(ours, expected.to(dtype))
            else:  # the cell anchors, the shifts and the sums rounded to the half type
                assert_within(ours, expected, slack, f"grid_anchors half ({isa})")
            # The AnchorGenerator method, with its cell anchors replaced.
            gen = ops.AnchorGenerator(((1,),) * len(cells), ((1.0,),) * len(cells))
            gen.cell_anchors = [c.to(dtype) for c in cells]
            method = gen.grid_anchors([list(s) for s in grid_sizes], tv_strides)
            assert len(method) == len(theirs)
            for a, b in zip(method, theirs):
                assert_bitwise_equal(a, b)


# ---------------------------------------------------------------------------------------------------------
# BoxCoder: encode_boxes, decode_boxes
# ---------------------------------------------------------------------------------------------------------

_WEIGHTS = st.one_of(
    st.sampled_from([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 1.0, 0.5, 3.0)]),
    st.sampled_from([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 1.0, 0.5, 3.0)]),
    st.tuples(*[st.floats(0.1, 20.0, allow_subnormal=False)] * 4),
    st.tuples(*[st.floats(0.1, 20.0, allow_subnormal=False)] * 4),
    # zero, negative and NaN weights: torchvision's formulas (a zero weight decodes to inf)
    st.tuples(*[st.sampled_from([1.0, 0.0, -2.0, NAN])] * 4),
)
_delta = st.one_of(
    st.floats(-3.0, 3.0, allow_subnormal=False),
    st.floats(-3.0, 3.0, allow_subnormal=False),
    st.sampled_from([0.0, DEFAULT_CLIP, 4.2, 10.0, -10.0, 50.0, 1e30, -1e30]),
    st.sampled_from([NAN, INF, -INF]),
)


def _coder_case(rows, deltas, weights=(10.0, 10.0, 5.0, 5.0), clip=DEFAULT_CLIP, dtype=F32, other_dtype=None,
                via="function", split=None, isa=None):
    return dict(rows=rows, deltas=deltas, weights=weights, clip=clip, dtype=dtype, other_dtype=other_dtype, via=via,
                split=split, isa=isa)


@st.composite
def _coder_cases(draw, decode):
    n = draw(st.integers(0, 6))
    rows = draw(st.lists(_box(), min_size=n, max_size=n))
    if decode:
        k = draw(st.integers(1, 3))
        deltas = draw(st.lists(st.lists(_delta, min_size=4 * k, max_size=4 * k), min_size=n, max_size=n))
    else:  # encode: the reference boxes
        deltas = draw(st.lists(_box(), min_size=n, max_size=n))
    dtype = draw(_float_dtype)
    other = draw(st.one_of(st.none(), st.none(), _float_dtype))
    split = draw(st.integers(0, n)) if n else 0
    return _coder_case(
        rows,
        deltas,
        draw(_WEIGHTS),
        draw(st.sampled_from([DEFAULT_CLIP, DEFAULT_CLIP, 0.5, 10.0, INF, -1.0, -INF])),
        dtype,
        other,
        draw(st.sampled_from(["function", "single", "list"])),
        split,
        draw(_isa),
    )


def _group_scale(t, boxes=None):
    """Per group of 4 values (one box): the largest finite magnitude, also over the box it was made from."""
    g = t.double().reshape(t.shape[0], t.shape[1] // 4, 4)
    scale = torch.where(g.isfinite(), g.abs(), torch.zeros_like(g)).amax(-1, keepdim=True)
    if boxes is not None:
        b = boxes.double()
        b = torch.where(b.isfinite(), b.abs(), torch.zeros_like(b)).amax(-1)
        scale = torch.maximum(scale, b[:, None, None])
    return scale.expand(g.shape).reshape(t.shape)


@fuzz("decode")
@given(case=_coder_cases(decode=True))
# dw / dh at, beyond and far beyond the clip; NaN and infinite deltas; zero-size and inverted boxes.
@example(
    case=_coder_case(
        [[0, 0, 10, 20], [5, 5, 5, 8], [10, 10, 0, 0], [0, 0, 4, 4]],
        [[0.5, -0.5, DEFAULT_CLIP * 5, 1e30], [NAN, 0, 0, 0], [0, 0, -INF, 2.0], [INF, -INF, 0.1, 0.2]],
    )
)
# No clip, huge boxes (float32 overflow of exp(dw) * w), weights below one.
@example(case=_coder_case([[0, 0, 1e30, 1e30], [-1e6, -1e6, 1e6, 1e6]], [[0.1, 0.2, 30.0, 0.5], [1, 1, 2, 2]],
                          weights=(0.5, 0.25, 0.1, 0.1), clip=INF, via="list", split=1))
@example(
    case=_coder_case([[1, 2, 300, 400], [3, 4, 5, 6]], [[0.5, 0.25, 1.0, -1.0, 0, 0, 0, 0], [3, 3, 3, 3, 0, 0, 0, 0]],
                     dtype=F16, other_dtype=F32, via="single")
)
@example(case=_coder_case([[1, 2, 300, 400]], [[0.5, 0.25, 1.0, -1.0]], dtype=BF16, clip=0.5))
# Zero, negative and NaN weights, a clip of -inf: torchvision's formulas (a zero weight decodes to inf).
@example(case=_coder_case([[1, 2, 30, 40], [0, 0, 1, 1]], [[0.5, 0.0, 1.0, -1.0], [0, 1, 2, 3]],
                          weights=(0.0, -2.0, NAN, 1.0), clip=-INF))
def test_decode(case):
    dtype, weights, clip = case["dtype"], case["weights"], case["clip"]
    n = len(case["rows"])
    codes = torch.tensor(case["deltas"], dtype=torch.float64).reshape(n, -1) if n else torch.zeros(0, 4)
    codes = codes.to(dtype)
    boxes = _boxes_tensor(case["rows"]).to(case["other_dtype"] or dtype)
    split = [boxes[: case["split"]], boxes[case["split"]:]]

    def call(coder_cls, fn):
        coder = coder_cls(weights, bbox_xform_clip=clip)
        if case["via"] == "list":
            return coder.decode(codes, split).reshape(n, codes.shape[1])
        if case["via"] == "single" or fn is None:
            return coder.decode_single(codes, boxes)
        return fn(codes, boxes, weights, clip)

    theirs = call(TVBoxCoder, None)
    # The reference on the groups it can take: finite inputs, exp without overflow.
    same = boxes.to(dtype).double()  # boxes are converted to the deltas' dtype
    c64 = codes.double()
    limit = torch.finfo(dtype).max / 4
    ok_rows = same.isfinite().all(1) & c64.isfinite().all(1) & (same.abs() < limit).all(1)
    ok_rows &= all(w != 0 for w in weights)  # (the reference divides by the weights)
    # exp(min(dw / ww, clip)) must not overflow Python's float64 exp.
    ok_rows &= ((c64[:, 2::4] / weights[2]).clamp(max=clip) <= 700).all(1)
    ok_rows &= ((c64[:, 3::4] / weights[3]).clamp(max=clip) <= 700).all(1)
    rows = ok_rows.nonzero().flatten()
    ref = torch.full((n, c64.shape[1]), NAN, dtype=torch.float64)
    if rows.numel():
        ref[rows] = _decode_reference(c64[rows], same[rows], weights, clip)
    eps = _eps(dtype)
    ref_tol = (64 if dtype == F64 else 16) * eps * _group_scale(ref, same)
    ref_mask = ok_rows[:, None] & ref.isfinite() & (ref.abs() < limit)
    for isa in _isas(case):
        with isa_level(isa):
            ours = call(ops.BoxCoder, ops.decode_boxes)
            assert ours.dtype == theirs.dtype == dtype and ours.shape == theirs.shape
            # torchvision's order of operations: an exp an ulp off moves a corner by at most ~2 ulps of the
            # box's largest value.
            tol = 2 * _ulp(_group_scale(theirs), dtype)
            assert_within(ours, theirs, tol, f"decode vs torchvision ({isa})")
            assert_within(ours, ref, ref_tol, f"decode vs reference ({isa})", ref_mask)


@fuzz("encode")
@given(case=_coder_cases(decode=False))
# Zero-size and inverted proposals (infinite and NaN deltas), NaN boxes.
@example(
    case=_coder_case(
        [[0, 0, 0, 10], [1, 1, 4, 4], [0, 0, 10, 10], [4, 4, 0, 0], [1, 1, 1, 1], [0, 0, 2, 2]],
        [[0, 0, 10, 10], [5, 5, 5, 8], [10, 10, 0, 0], [0, 0, 4, 4], [1, 1, 2, 2], [0, NAN, 1, 1]],
    )
)
@example(
    case=_coder_case([[1e6, 1e6, 1e6 + 1, 1e6 + 2], [-1e30, 0, 1e30, 1]],
                     [[1e6 + 0.5, 1e6, 1e6 + 2, 1e6 + 1], [0, 0, 1e30, 2]], weights=(2.0, 1.0, 0.5, 3.0), via="list",
                     split=1)
)
@example(
    case=_coder_case([[0, 0, 30, 40], [2, 2, 9, 5]], [[1, 1, 29, 41], [2.5, 2.5, 8, 6]], dtype=BF16, other_dtype=F64)
)
@example(case=_coder_case([[0, 0, 30, 40]], [[1, 1, 29, 41]], dtype=F16, via="single"))
@example(case=_coder_case([[0, 0, 3, 1], [0, 0, 2, 2]], [[0, 0, 1, 1], [1, 1, 2, 2]], weights=(-2.0, 1.0, 0.0, NAN)))
def test_encode(case):
    weights = case["weights"]
    proposals = _boxes_tensor(case["rows"]).to(case["dtype"])
    reference = _boxes_tensor(case["deltas"]).to(case["other_dtype"] or case["dtype"])
    dtype = torch.promote_types(proposals.dtype, reference.dtype)
    s = case["split"]

    def call(coder_cls, fn):
        coder = coder_cls(weights)
        if case["via"] == "list":
            return torch.cat(coder.encode([reference[:s], reference[s:]], [proposals[:s], proposals[s:]]))
        if case["via"] == "single" or fn is None:
            return coder.encode_single(reference, proposals)
        return fn(reference, proposals, weights)

    theirs = call(TVBoxCoder, None)
    g, p = reference.double(), proposals.double()
    gw, gh, pw, ph = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1], p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    ok_rows = g.isfinite().all(1) & p.isfinite().all(1) & (gw > 0) & (gh > 0) & (pw > 0) & (ph > 0)
    rows = ok_rows.nonzero().flatten()
    ref = torch.full((g.shape[0], 4), NAN, dtype=torch.float64)
    if rows.numel():
        ref[rows] = _encode_reference(g[rows], p[rows], weights)
    # dx = wx * (centre difference) / pw loses eps * (|g| + |p|) to cancellation; dw = ww * log(gw / pw) a
    # few eps; each in the computing type (step by step in half types), and each box set's widths and centres
    # in its own dtype (the README), so the coarser input dtype counts.
    eps = max(_eps(proposals.dtype), _eps(reference.dtype))
    m = torch.maximum(g.abs().amax(1), p.abs().amax(1))
    side = torch.stack([pw, ph, pw, ph], 1)
    w = torch.tensor(weights, dtype=torch.float64).abs()
    ref_tol = (64 if dtype == F64 else 16) * eps * (ref.abs() + w * (1 + m[:, None] / side))
    ref_mask = ok_rows[:, None] & (m[:, None] < min(1e15, torch.finfo(dtype).max / 8))
    for isa in _isas(case):
        with isa_level(isa):
            ours = call(ops.BoxCoder, ops.encode_boxes)
            assert ours.dtype == theirs.dtype == dtype and ours.shape == theirs.shape
            assert_within(ours, theirs, 2 * _ulp(theirs, dtype), f"encode vs torchvision ({isa})")
            assert_within(ours, ref, ref_tol, f"encode vs reference ({isa})", ref_mask)
