"""nms and batched_nms: parity with torchvision.ops and with the plain-Python greedy reference.

Every kernel test runs under every supported ISA level through the ``isa`` fixture. Inputs with N >= 256
boxes and finite coordinates take the grid strategy of the kernel; shorter runs, non-finite coordinates and
negative thresholds take the dense sweep. Both must give the kept set of the greedy rule exactly.
"""

import pytest
import torch
import torchvision.ops as tvo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pydet_ops as ops
from conftest import (
    SUPPORTED_ISAS,
    clustered_boxes,
    crafted_box_sets,
    distinct_scores,
    isa_level,
    nms_opcheck_samples,
    tied_scores,
    uniform_boxes,
)
from reference import as_index_tensor, reference_batched_nms, reference_nms

HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SIZES = [0, 1, 2, 10, 100, 1000, 5000]
THRESHOLDS = [0.0, 0.3, 0.5, 0.7, 1.0]


def assert_same_indices(ours, expected):
    assert ours.dtype == torch.int64
    assert ours.dim() == 1
    assert torch.equal(ours, expected), f"\nours:     {ours.tolist()}\nexpected: {expected.tolist()}"


def assert_same_kept_scores(ours, theirs, scores):
    """With tied scores the kept boxes may differ among equal scores; the score sequence may not."""
    assert ours.dtype == torch.int64
    assert ours.numel() == theirs.numel()
    torch.testing.assert_close(scores[ours], scores[theirs], rtol=0, atol=0, equal_nan=True)


def dense_boxes(n, seed, dtype=torch.float32):
    # Boxes packed so that many overlap, whatever n.
    img = 20.0 * max(1.0, n**0.5)
    return uniform_boxes(n, seed=seed, img=img, lo=4.0, hi=60.0, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------
# nms: parity with torchvision
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("n", SIZES)
def test_nms_matches_torchvision(isa, n, threshold):
    boxes = dense_boxes(n, seed=n + 1)
    scores = distinct_scores(n, seed=n + 2)
    assert_same_indices(ops.nms(boxes, scores, threshold), tvo.nms(boxes, scores, threshold))


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("n", SIZES)
def test_nms_tied_scores_match_torchvision(isa, n, threshold):
    boxes = dense_boxes(n, seed=n + 3)
    scores = tied_scores(n, seed=n + 4, levels=5)
    ours = ops.nms(boxes, scores, threshold)
    assert_same_kept_scores(ours, tvo.nms(boxes, scores, threshold), scores)


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("n", [10, 300, 1000])
def test_nms_tied_scores_break_ties_by_index(isa, n, threshold):
    boxes = dense_boxes(n, seed=n + 5, dtype=torch.float64)
    scores = tied_scores(n, seed=n + 6, levels=3, dtype=torch.float64)
    assert_same_indices(ops.nms(boxes, scores, threshold), as_index_tensor(reference_nms(boxes, scores, threshold)))


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("n", [100, 1000, 5000])
def test_nms_float64_matches_torchvision(isa, n, threshold):
    boxes = dense_boxes(n, seed=n + 7, dtype=torch.float64)
    scores = distinct_scores(n, seed=n + 8, dtype=torch.float64)
    assert_same_indices(ops.nms(boxes, scores, threshold), tvo.nms(boxes, scores, threshold))


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 0.95, 1.0])
@pytest.mark.parametrize("n,clusters", [(256, 8), (2000, 20), (6000, 50), (6000, 600)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_clustered_rpn_like_matches_torchvision(isa, n, clusters, threshold, dtype):
    boxes = clustered_boxes(n, clusters, seed=n + clusters, dtype=dtype)
    scores = distinct_scores(n, seed=n + clusters + 1, dtype=dtype)
    assert_same_indices(ops.nms(boxes, scores, threshold), tvo.nms(boxes, scores, threshold))


@pytest.mark.parametrize("n", [255, 256, 257])
@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_nms_around_grid_size_limit(isa, n, threshold):
    boxes = clustered_boxes(n, 5, seed=n, img=300.0)
    scores = distinct_scores(n, seed=n + 1)
    assert_same_indices(ops.nms(boxes, scores, threshold), tvo.nms(boxes, scores, threshold))


@pytest.mark.parametrize("n", [300, 3000])
def test_nms_wide_spread_and_tiny_boxes(isa, n):
    # Very different box sizes in one run: a few huge boxes over many tiny ones.
    g = torch.Generator().manual_seed(n)
    tiny = uniform_boxes(n - 5, seed=n, img=5000.0, lo=0.5, hi=3.0)
    huge = torch.rand(5, 2, generator=g) * 1000
    huge = torch.cat([huge, huge + 3000 + torch.rand(5, 2, generator=g) * 1000], dim=1)
    boxes = torch.cat([tiny, huge])
    scores = distinct_scores(n, seed=n + 1)
    for threshold in (0.0, 1e-4, 0.5):
        assert_same_indices(ops.nms(boxes, scores, threshold), tvo.nms(boxes, scores, threshold))


# ---------------------------------------------------------------------------------------------------------
# nms: boxes exactly at the threshold
# ---------------------------------------------------------------------------------------------------------


def _pairs_at_ratio(width, copies, dtype):
    """``copies`` far-apart pairs: box [0, 0, width, 1] (higher score) and [0, 0, 1, 1]; IoU = 1 / width."""
    offsets = torch.arange(copies, dtype=torch.float64)[:, None] * 10 * (width + 1)
    big = torch.tensor([[0.0, 0.0, width, 1.0]], dtype=torch.float64) + offsets * torch.tensor([1.0, 0, 1.0, 0])
    small = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64) + offsets * torch.tensor([1.0, 0, 1.0, 0])
    boxes = torch.stack([big, small], dim=1).reshape(-1, 4).to(dtype)
    scores = torch.arange(2 * copies, 0, -1, dtype=torch.float64).to(dtype) / (2 * copies)
    return boxes, scores


@pytest.mark.parametrize("copies", [1, 200])  # 200 pairs: the grid strategy
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_iou_exactly_at_threshold_keeps_both(isa, copies, dtype):
    boxes, scores = _pairs_at_ratio(2.0, copies, dtype)  # IoU == 0.5 exactly
    assert ops.box_iou(boxes[:1], boxes[1:2]).item() == 0.5
    keep_all = torch.arange(2 * copies)
    assert_same_indices(ops.nms(boxes, scores, 0.5), keep_all)
    assert_same_indices(ops.nms(boxes, scores, 0.49), keep_all[0::2])
    assert_same_indices(ops.nms(boxes, scores, 0.5), tvo.nms(boxes, scores, 0.5))
    assert_same_indices(ops.nms(boxes, scores, 0.49), tvo.nms(boxes, scores, 0.49))
    # The next double above 0.5 keeps both, the next one below suppresses.
    half = torch.tensor(0.5, dtype=torch.float64)
    above = torch.nextafter(half, torch.tensor(1.0, dtype=torch.float64)).item()
    below = torch.nextafter(half, torch.tensor(0.0, dtype=torch.float64)).item()
    assert below < 0.5 < above
    assert_same_indices(ops.nms(boxes, scores, above), keep_all)
    assert_same_indices(ops.nms(boxes, scores, below), keep_all[0::2])
    assert_same_indices(ops.nms(boxes, scores, below), tvo.nms(boxes, scores, below))


@pytest.mark.parametrize("copies", [1, 200])
@pytest.mark.parametrize("width", [3.0, 10.0, 7.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_rounded_iou_against_double_threshold(isa, copies, width, dtype):
    # IoU = 1/3, 1/10, 1/7 is not representable: in float32 the computed IoU rounds above or below the double
    # threshold 1/width, and the comparison must be made exactly as torchvision makes it.
    boxes, scores = _pairs_at_ratio(width, copies, dtype)
    for threshold in (1.0 / width, float(torch.tensor(1.0 / width, dtype=torch.float32)), 1.0 / width - 1e-9):
        assert_same_indices(ops.nms(boxes, scores, threshold), tvo.nms(boxes, scores, threshold))


@pytest.mark.parametrize("n,span", [(300, 20), (2000, 60), (5000, 200)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_integer_lattice_boxes_hit_thresholds_exactly(isa, n, span, dtype):
    # Whole-number boxes (zero sizes and touching edges included) give IoUs that are simple fractions, many
    # exactly equal to the thresholds below; tied integer scores on top.
    g = torch.Generator().manual_seed(n)
    xy = torch.randint(0, span, (n, 2), generator=g)
    wh = torch.randint(0, 7, (n, 2), generator=g)
    boxes = torch.cat([xy, xy + wh], dim=1).to(dtype)
    scores = torch.randint(0, 50, (n,), generator=g).to(dtype)
    idxs = torch.randint(0, 4, (n,), generator=g)
    for threshold in (0.0, 0.25, 1 / 3, 0.5, 2 / 3, 1.0):
        assert_same_indices(ops.nms(boxes, scores, threshold), tvo.nms(boxes, scores, threshold))
        expected = as_index_tensor(_per_class_torchvision(boxes, scores, idxs, threshold))
        assert_same_indices(ops.batched_nms(boxes, scores, idxs, threshold), expected)


# ---------------------------------------------------------------------------------------------------------
# nms: crafted inputs
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["identical", "negative", "large", "inverted", "zero_size", "mixed"])
@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_crafted_matches_torchvision(isa, name, threshold, dtype):
    boxes = crafted_box_sets(dtype)[name]
    scores = distinct_scores(boxes.shape[0], seed=7, dtype=dtype)
    assert_same_indices(ops.nms(boxes, scores, threshold), tvo.nms(boxes, scores, threshold))
    # The same boxes repeated far apart, enough of them for the grid strategy.
    span = float((boxes[:, 2:] - boxes[:, :2]).abs().max()) + float(boxes.abs().max()) + 10.0
    reps = -(-300 // boxes.shape[0])
    shifts = torch.arange(reps, dtype=torch.float64).repeat_interleave(boxes.shape[0])[:, None] * 2 * span
    many = (boxes.to(torch.float64).repeat(reps, 1) + shifts * torch.tensor([1.0, 0.0, 1.0, 0.0])).to(dtype)
    many_scores = distinct_scores(many.shape[0], seed=8, dtype=dtype)
    assert_same_indices(ops.nms(many, many_scores, threshold), tvo.nms(many, many_scores, threshold))


@pytest.mark.parametrize("n", [5, 400])
def test_nms_identical_boxes_keep_only_the_best(isa, n):
    boxes = torch.tensor([[3.0, 4.0, 30.0, 40.0]]).repeat(n, 1)
    scores = distinct_scores(n, seed=9)
    keep = ops.nms(boxes, scores, 0.5)
    assert_same_indices(keep, scores.argmax().reshape(1))
    # With all scores tied, the first box survives.
    assert_same_indices(ops.nms(boxes, torch.ones(n), 0.5), torch.zeros(1, dtype=torch.int64))
    # IoU 1 is not > 1: everything survives, by score.
    assert_same_indices(ops.nms(boxes, scores, 1.0), torch.argsort(scores, descending=True, stable=True))


@pytest.mark.parametrize("n", [50, 600])
def test_nms_large_coordinates_match_torchvision(isa, n):
    for base in (1e5, 1e6, 3e7):
        boxes = clustered_boxes(n, max(1, n // 40), seed=n, img=base, jitter=base * 1e-4, lo=base / 50, hi=base / 10)
        boxes = boxes + base
        scores = distinct_scores(n, seed=n + 1)
        for threshold in (0.3, 0.7):
            assert_same_indices(ops.nms(boxes, scores, threshold), tvo.nms(boxes, scores, threshold))


@pytest.mark.parametrize(
    "dtype,scale",
    [
        (torch.float32, 1e-20),
        (torch.float32, 1e-22),
        (torch.float32, 1e18),
        (torch.float64, 1e-160),
        (torch.float64, 1e150),
    ],
    ids=str,
)
@pytest.mark.parametrize("n", [50, 600])
def test_nms_extreme_magnitudes_match_torchvision(isa, dtype, scale, n):
    # Tiny scales make areas subnormal (no flush-to-zero allowed); huge ones bring areas near overflow.
    boxes = (clustered_boxes(n, 5, seed=n, img=300.0, dtype=torch.float64) * scale).to(dtype)
    scores = distinct_scores(n, seed=n + 1, dtype=dtype)
    for threshold in (0.0, 0.5):
        assert_same_indices(ops.nms(boxes, scores, threshold), tvo.nms(boxes, scores, threshold))


@pytest.mark.parametrize("n", [60, 600])
def test_nms_far_outliers_and_overflowing_areas_match_torchvision(isa, n):
    boxes = clustered_boxes(n, 8, seed=n, img=300.0)
    boxes[0] = torch.tensor([1e30, 1e30, 2e30, 2e30])
    boxes[1] = torch.tensor([-3e38, -3e38, 3e38, 3e38])  # width overflows to inf
    boxes[2] = torch.tensor([-1e38, 5.0, 1e38, 50.0])
    boxes[3] = torch.tensor([1e-30, 1e-30, 3e-30, 2e-30])
    scores = distinct_scores(n, seed=n + 1)
    for threshold in (0.0, 0.5, 0.9):
        assert_same_indices(ops.nms(boxes, scores, threshold), tvo.nms(boxes, scores, threshold))
    # Without the overflowing box the input is finite throughout.
    keep_rows = torch.arange(n) != 1
    b, s = boxes[keep_rows], scores[keep_rows]
    for threshold in (0.0, 0.5):
        assert_same_indices(ops.nms(b, s, threshold), tvo.nms(b, s, threshold))


@pytest.mark.parametrize("n", [50, 600])
def test_nms_negative_coordinates_match_torchvision(isa, n):
    boxes = clustered_boxes(n, max(1, n // 30), seed=n, img=500.0) - 800.0
    scores = distinct_scores(n, seed=n + 1)
    for threshold in (0.0, 0.5):
        assert_same_indices(ops.nms(boxes, scores, threshold), tvo.nms(boxes, scores, threshold))


@pytest.mark.parametrize("n", [40, 500])
def test_nms_inverted_boxes_match_torchvision(isa, n):
    boxes = clustered_boxes(n, max(1, n // 20), seed=n, img=300.0)
    g = torch.Generator().manual_seed(n)
    flip_x = torch.rand(n, generator=g) < 0.3
    flip_y = torch.rand(n, generator=g) < 0.3
    boxes[flip_x] = boxes[flip_x][:, [2, 1, 0, 3]]
    boxes[flip_y] = boxes[flip_y][:, [0, 3, 2, 1]]
    scores = distinct_scores(n, seed=n + 1)
    for threshold in (0.0, 0.5, 1.0):
        ours = ops.nms(boxes, scores, threshold)
        assert_same_indices(ours, tvo.nms(boxes, scores, threshold))
        # An inverted box overlaps nothing: it is always kept.
        inverted = torch.nonzero(flip_x | flip_y).flatten()
        assert torch.isin(inverted, ours).all()


# ---------------------------------------------------------------------------------------------------------
# nms: half types, non-finite values, negative thresholds, non-contiguous inputs
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [10, 300, 1500])
def test_nms_half_inputs_equal_float32_computation(isa, dtype, n):
    boxes = uniform_boxes(n, seed=n, img=40.0 * n**0.5, lo=4.0, hi=60.0).to(dtype)
    scores = distinct_scores(n, seed=n + 1).to(dtype)
    for threshold in (0.0, 0.5, 0.8):
        ours = ops.nms(boxes, scores, threshold)
        assert_same_indices(ours, ops.nms(boxes.float(), scores.float(), threshold))
        # torchvision refuses half types on CPU; the float32 upcast is the definition.
        assert_same_indices(ours, tvo.nms(boxes.float(), scores.float(), threshold))


@pytest.mark.parametrize("n", [10, 400])
def test_nms_nan_scores_rank_first_like_torchvision(isa, n):
    boxes = dense_boxes(n, seed=n)
    scores = distinct_scores(n, seed=n + 1)
    scores[[1, n // 2, n - 1]] = float("nan")
    for threshold in (0.0, 0.5):
        ours = ops.nms(boxes, scores, threshold)
        assert_same_indices(ours, tvo.nms(boxes, scores, threshold))
        # NaN-scored boxes are processed first, by index: the first is always kept, and the kept ones lead.
        kept_nan = [i for i in ours.tolist() if scores[i].isnan()]
        assert kept_nan[0] == 1 and kept_nan == sorted(kept_nan)
        assert ours[: len(kept_nan)].tolist() == kept_nan


@pytest.mark.parametrize("n", [10, 400])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_non_finite_coordinates_match_torchvision(isa, n, value, dtype):
    boxes = dense_boxes(n, seed=n, dtype=dtype)
    scores = distinct_scores(n, seed=n + 1, dtype=dtype)
    boxes[0, 0] = value
    boxes[3, 2] = value
    boxes[5, 1] = value
    boxes[7] = value
    for threshold in (0.0, 0.3, 0.5, 1.0):
        assert_same_indices(ops.nms(boxes, scores, threshold), tvo.nms(boxes, scores, threshold))


@pytest.mark.parametrize("n", [10, 400])
def test_nms_nan_box_never_suppresses_and_is_never_suppressed(isa, n):
    boxes = dense_boxes(n, seed=n)
    scores = distinct_scores(n, seed=n + 1)
    top = int(scores.argmax())
    boxes[top, 1] = float("nan")
    for threshold in (0.0, 0.5):
        ours = ops.nms(boxes, scores, threshold)
        assert ours[0].item() == top
        others = torch.ones(n, dtype=torch.bool)
        others[top] = False
        idx = torch.nonzero(others).flatten()
        rest = idx[ops.nms(boxes[idx], scores[idx], threshold)]
        assert_same_indices(ours[1:], rest)


@pytest.mark.parametrize("threshold", [-0.5, -1e-9, -float("inf"), float("nan"), float("inf"), 2.0])
@pytest.mark.parametrize("n", [10, 400])
def test_nms_unusual_thresholds_match_torchvision(isa, n, threshold):
    boxes = dense_boxes(n, seed=n)
    boxes[2, 0] = float("nan")
    scores = distinct_scores(n, seed=n + 1)
    assert_same_indices(ops.nms(boxes, scores, threshold), tvo.nms(boxes, scores, threshold))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("n", [10, 300, 5000])
def test_nms_special_score_values_order_like_a_stable_sort(isa, dtype, n):
    # Signed zeros tie, both NaN signs rank first, infinities and subnormals keep their places.
    tiny = torch.finfo(torch.float32 if dtype != torch.float64 else torch.float64).tiny / 4
    special = torch.tensor(
        [0.0, -0.0, float("inf"), -float("inf"), float("nan"), -float("nan"), tiny, -tiny, 1.0, -1.0, 3e38, -3e38],
        dtype=torch.float64,
    )
    g = torch.Generator().manual_seed(n)
    scores = special[torch.randint(0, special.numel(), (n,), generator=g)].to(dtype)
    boxes = uniform_boxes(n, seed=n, img=10.0 * n**0.5, lo=1.0, hi=20.0).to(dtype)
    upcast = dtype in (torch.float16, torch.bfloat16)
    b_ref, s_ref = (boxes.float(), scores.float()) if upcast else (boxes, scores)
    order = torch.sort(s_ref, descending=True, stable=True).indices
    assert_same_indices(ops.nms(boxes, scores, 1.0), order)  # nothing is suppressed at threshold 1
    for threshold in (0.0, 0.5):
        assert_same_indices(ops.nms(boxes, scores, threshold), tvo.nms(b_ref, s_ref, threshold))


def test_nms_accepts_inputs_that_require_grad(isa):
    boxes = clustered_boxes(300, 6, seed=16)
    scores = distinct_scores(300, seed=17)
    expected = tvo.nms(boxes, scores, 0.5)
    keep = ops.nms(boxes.clone().requires_grad_(), scores.clone().requires_grad_(), 0.5)
    assert not keep.requires_grad
    assert_same_indices(keep, expected)
    idxs = torch.zeros(300, dtype=torch.int64)
    keep = ops.batched_nms(boxes.clone().requires_grad_(), scores.clone().requires_grad_(), idxs, 0.5)
    assert_same_indices(keep, expected)


def test_nms_non_contiguous_inputs(isa):
    n = 700
    boxes = clustered_boxes(n, 20, seed=1)
    scores = distinct_scores(n, seed=2)
    wide = torch.zeros(n, 8)
    wide[:, 1::2] = boxes
    strided_boxes = wide[:, 1::2]
    strided_scores = torch.stack([scores, -scores], dim=1)[:, 0]
    assert not strided_boxes.is_contiguous() and not strided_scores.is_contiguous()
    expected = tvo.nms(boxes, scores, 0.5)
    assert_same_indices(ops.nms(strided_boxes, strided_scores, 0.5), expected)
    column_major = boxes.t().contiguous().t()
    assert_same_indices(ops.nms(column_major, scores, 0.5), expected)
    every_other = tvo.nms(boxes[::2].contiguous(), scores[::2].contiguous(), 0.5)
    assert_same_indices(ops.nms(boxes[::2], scores[::2], 0.5), every_other)


def test_nms_empty_input(isa):
    for dtype in (torch.float32, torch.float64, torch.float16):
        keep = ops.nms(torch.empty(0, 4, dtype=dtype), torch.empty(0, dtype=dtype), 0.5)
        assert keep.dtype == torch.int64 and keep.shape == (0,)
        no_ids = torch.empty(0, dtype=torch.int64)
        keep = ops.batched_nms(torch.empty(0, 4, dtype=dtype), torch.empty(0, dtype=dtype), no_ids, 0.5)
        assert keep.dtype == torch.int64 and keep.shape == (0,)


def test_nms_result_is_sorted_by_score_and_a_subset(isa):
    boxes = clustered_boxes(3000, 40, seed=3)
    scores = torch.rand(3000, generator=torch.Generator().manual_seed(4))
    keep = ops.nms(boxes, scores, 0.6)
    assert keep.unique().numel() == keep.numel()
    assert ((keep >= 0) & (keep < 3000)).all()
    assert (scores[keep][:-1] >= scores[keep][1:]).all()


# ---------------------------------------------------------------------------------------------------------
# nms: against the plain-Python reference
# ---------------------------------------------------------------------------------------------------------

_coord = st.floats(-50, 50, allow_nan=False, allow_infinity=False)
_side = st.floats(0, 40, allow_nan=False, allow_infinity=False)
_box = st.tuples(_coord, _coord, _side, _side).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])
_threshold = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.7, 1.0]), st.floats(0, 1))


@HYPOTHESIS
@given(
    rows=st.lists(_box, max_size=40),
    score_values=st.lists(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]) | st.floats(-1, 1), min_size=40, max_size=40),
    threshold=_threshold,
)
def test_nms_float64_matches_reference(isa, rows, score_values, threshold):
    boxes = torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)
    scores = torch.tensor(score_values[: len(rows)], dtype=torch.float64)
    expected = as_index_tensor(reference_nms(boxes, scores, threshold))
    assert_same_indices(ops.nms(boxes, scores, threshold), expected)


@HYPOTHESIS
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(256, 500),
    clusters=st.integers(1, 30),
    jitter=st.sampled_from([0.0, 0.5, 3.0, 20.0]),
    ties=st.booleans(),
    threshold=_threshold,
)
def test_nms_float64_grid_sizes_match_reference(isa, seed, n, clusters, jitter, ties, threshold):
    boxes = clustered_boxes(n, clusters, seed=seed, img=400.0, jitter=jitter, dtype=torch.float64)
    scores = (tied_scores(n, seed=seed + 1, levels=6) if ties else distinct_scores(n, seed=seed + 1)).double()
    expected = as_index_tensor(reference_nms(boxes, scores, threshold))
    assert_same_indices(ops.nms(boxes, scores, threshold), expected)


# ---------------------------------------------------------------------------------------------------------
# batched_nms
# ---------------------------------------------------------------------------------------------------------


def assert_batched_matches_torchvision(ours, theirs, scores):
    """torchvision re-sorts the kept boxes with an unstable sort: compare as sets and as score sequences."""
    assert ours.dtype == torch.int64
    assert sorted(ours.tolist()) == sorted(theirs.tolist())
    assert_same_kept_scores(ours, theirs, scores)
    assert (scores[ours][:-1] >= scores[ours][1:]).all()


@pytest.mark.parametrize("num_classes", [1, 3, 80])
@pytest.mark.parametrize("n", [0, 1, 10, 500, 1000, 1500, 4000])
@pytest.mark.parametrize("idx_dtype", [torch.int32, torch.int64, torch.uint8])
def test_batched_nms_matches_torchvision(isa, n, num_classes, idx_dtype):
    # Whole-number coordinates: torchvision's coordinate-offset path (n <= 1000) is then exact as well.
    boxes = uniform_boxes(n, seed=n, img=20.0 * max(1.0, n**0.5), lo=4.0, hi=60.0, integer=True)
    scores = distinct_scores(n, seed=n + 1)
    idxs = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(n + 2)).to(idx_dtype)
    for threshold in (0.0, 0.5, 0.8):
        ours = ops.batched_nms(boxes, scores, idxs, threshold)
        theirs = tvo.batched_nms(boxes, scores, idxs.long(), threshold)
        assert_batched_matches_torchvision(ours, theirs, scores)
        assert_same_indices(ours, as_index_tensor(_per_class_torchvision(boxes, scores, idxs, threshold)))


def _per_class_torchvision(boxes, scores, idxs, threshold):
    """torchvision.ops.nms per class; kept indices by descending score, ties by index."""
    kept = []
    for c in idxs.unique().tolist():
        members = torch.nonzero(idxs == c).flatten()
        kept.extend(members[tvo.nms(boxes[members], scores[members], threshold)].tolist())
    s = scores.tolist()
    return sorted(kept, key=lambda i: (-s[i], i))


@pytest.mark.parametrize("n", [10, 300, 2000])
def test_batched_nms_tied_scores(isa, n):
    boxes = clustered_boxes(n, max(2, n // 50), seed=n)
    scores = tied_scores(n, seed=n + 1, levels=4)
    idxs = torch.randint(0, 5, (n,), generator=torch.Generator().manual_seed(n + 2))
    for threshold in (0.3, 0.7):
        ours = ops.batched_nms(boxes, scores, idxs, threshold)
        assert_same_indices(ours, as_index_tensor(_per_class_torchvision(boxes, scores, idxs, threshold)))
        assert_same_kept_scores(ours, tvo.batched_nms(boxes, scores, idxs, threshold), scores)


@pytest.mark.parametrize("class_ids", [[-5, 0, 3], [2**40, -(2**40), 7], [-(2**63), 2**63 - 1, 0, -1]], ids=str)
@pytest.mark.parametrize("n", [30, 700])
def test_batched_nms_negative_and_huge_class_ids(isa, n, class_ids):
    boxes = clustered_boxes(n, max(2, n // 40), seed=n, img=200.0)
    scores = distinct_scores(n, seed=n + 1)
    which = torch.randint(0, len(class_ids), (n,), generator=torch.Generator().manual_seed(n + 2))
    idxs = torch.tensor(class_ids, dtype=torch.int64)[which]
    for threshold in (0.2, 0.6):
        ours = ops.batched_nms(boxes, scores, idxs, threshold)
        # The class ids only name groups: renaming them changes nothing.
        assert_same_indices(ours, ops.batched_nms(boxes, scores, which, threshold))
        assert_same_indices(ours, as_index_tensor(_per_class_torchvision(boxes, scores, idxs, threshold)))


@pytest.mark.parametrize("idx_dtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8])
def test_batched_nms_index_dtypes(isa, idx_dtype):
    n = 600
    boxes = clustered_boxes(n, 12, seed=5)
    scores = distinct_scores(n, seed=6)
    which = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(7))
    expected = ops.batched_nms(boxes, scores, which, 0.5)
    assert_same_indices(ops.batched_nms(boxes, scores, which.to(idx_dtype), 0.5), expected)
    if idx_dtype.is_signed:
        assert_same_indices(ops.batched_nms(boxes, scores, (which - 2).to(idx_dtype), 0.5), expected)


def test_batched_nms_single_class_equals_nms(isa):
    for n in (7, 300, 3000):
        boxes = clustered_boxes(n, max(1, n // 30), seed=n)
        scores = tied_scores(n, seed=n + 1, levels=10)
        for class_id in (0, -3, 2**40):
            idxs = torch.full((n,), class_id, dtype=torch.int64)
            assert_same_indices(ops.batched_nms(boxes, scores, idxs, 0.5), ops.nms(boxes, scores, 0.5))


def test_batched_nms_large_coordinates_need_no_offset_trick(isa):
    # Boxes of two classes at the same place and far from the origin: each class suppresses on its own.
    n = 400
    boxes = clustered_boxes(n, 10, seed=8, img=1e3) + 1e6
    scores = distinct_scores(n, seed=9)
    idxs = torch.arange(n) % 2
    ours = ops.batched_nms(boxes, scores, idxs, 0.5)
    assert_same_indices(ours, as_index_tensor(_per_class_torchvision(boxes, scores, idxs, 0.5)))


def test_batched_nms_float64_half_and_non_contiguous(isa):
    n = 800
    boxes = clustered_boxes(n, 30, seed=10, dtype=torch.float64)
    scores = distinct_scores(n, seed=11, dtype=torch.float64)
    idxs = torch.randint(0, 6, (n,), generator=torch.Generator().manual_seed(12))
    expected = as_index_tensor(_per_class_torchvision(boxes, scores, idxs, 0.5))
    assert_same_indices(ops.batched_nms(boxes, scores, idxs, 0.5), expected)
    strided = torch.stack([idxs, idxs], dim=1)[:, 1]
    assert not strided.is_contiguous()
    column_major = boxes.t().contiguous().t()
    assert_same_indices(ops.batched_nms(column_major, scores[None].expand(2, n)[1], strided, 0.5), expected)
    half_boxes, half_scores = boxes.half(), scores.half()
    assert_same_indices(
        ops.batched_nms(half_boxes, half_scores, idxs, 0.5),
        ops.batched_nms(half_boxes.float(), half_scores.float(), idxs, 0.5),
    )


@HYPOTHESIS
@given(
    rows=st.lists(_box, max_size=40),
    score_values=st.lists(st.sampled_from([0.0, 0.5, 1.0]) | st.floats(-1, 1), min_size=40, max_size=40),
    class_values=st.lists(st.sampled_from([-(2**40), -1, 0, 1, 5, 2**40]), min_size=40, max_size=40),
    threshold=_threshold,
)
def test_batched_nms_float64_matches_reference(isa, rows, score_values, class_values, threshold):
    boxes = torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)
    scores = torch.tensor(score_values[: len(rows)], dtype=torch.float64)
    idxs = torch.tensor(class_values[: len(rows)], dtype=torch.int64)
    expected = as_index_tensor(reference_batched_nms(boxes, scores, idxs, threshold))
    assert_same_indices(ops.batched_nms(boxes, scores, idxs, threshold), expected)


@HYPOTHESIS
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(256, 600),
    num_classes=st.integers(1, 4),
    threshold=_threshold,
)
def test_batched_nms_grid_sizes_match_reference(isa, seed, n, num_classes, threshold):
    boxes = clustered_boxes(n, 6, seed=seed, img=200.0, dtype=torch.float64)
    scores = tied_scores(n, seed=seed + 1, levels=50, dtype=torch.float64)
    idxs = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(seed + 2))
    expected = as_index_tensor(reference_batched_nms(boxes, scores, idxs, threshold))
    assert_same_indices(ops.batched_nms(boxes, scores, idxs, threshold), expected)


# ---------------------------------------------------------------------------------------------------------
# A large input: 400k boxes
# ---------------------------------------------------------------------------------------------------------


def _check_greedy_property(boxes, scores, keep, cluster_of, threshold):
    """Verifies exactly that ``keep`` is the greedy NMS result, for boxes whose clusters cannot overlap.

    Box j is kept by the greedy rule iff no kept box processed before it has IoU > threshold with it. Boxes of
    different clusters never overlap, so only pairs inside a cluster need checking; clusters are padded to one
    size and checked with batched ``box_iou`` calls, a slice of clusters at a time.
    """
    n = boxes.shape[0]
    order = torch.sort(scores, descending=True, stable=True).indices
    rank = torch.empty(n, dtype=torch.int64)
    rank[order] = torch.arange(n)
    kept = torch.zeros(n, dtype=torch.bool)
    kept[keep] = True
    # Group by cluster, then by rank inside each cluster.
    by_cluster = torch.argsort(cluster_of * n + rank)
    counts = torch.bincount(cluster_of)
    num_clusters, width = counts.numel(), int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(n) - starts.repeat_interleave(counts)
    padded_boxes = torch.zeros(num_clusters, width, 4, dtype=boxes.dtype)
    padded_kept = torch.zeros(num_clusters, width, dtype=torch.bool)
    valid = torch.zeros(num_clusters, width, dtype=torch.bool)
    cl = cluster_of[by_cluster]
    padded_boxes[cl, slot] = boxes[by_cluster]
    padded_kept[cl, slot] = kept[by_cluster]
    valid[cl, slot] = True
    earlier = torch.ones(width, width, dtype=torch.bool).triu(diagonal=1)  # [i, j]: i processed before j
    step = max(1, 4_000_000 // (width * width))
    for c0 in range(0, num_clusters, step):
        b = padded_boxes[c0 : c0 + step]
        iou = ops.box_iou(b, b)  # [C, i, j]
        suppressing = (iou > threshold) & padded_kept[c0 : c0 + step, :, None] & earlier
        suppressed = suppressing.any(dim=1)
        v = valid[c0 : c0 + step]
        # Kept boxes are exactly the valid boxes that nothing earlier and kept suppresses.
        assert torch.equal(padded_kept[c0 : c0 + step][v], ~suppressed[v])


@pytest.mark.slow
def test_nms_400k_boxes():
    n, grid = 400_000, 64  # 4096 well-separated clusters of about 100 boxes each
    g = torch.Generator().manual_seed(400)
    cluster_of = torch.randint(0, grid * grid, (n,), generator=g)
    centres = torch.stack([cluster_of % grid, cluster_of // grid], dim=1).to(torch.float32) * 200.0
    centre = centres + torch.randn(n, 2, generator=g) * 4.0
    half = 10.0 + torch.rand(n, 2, generator=g) * 20.0  # every box stays within 34 of its cluster centre
    boxes = torch.cat([centre - half, centre + half], dim=1)
    scores = torch.rand(n, generator=g)  # ~5k exact ties among 400k float32 scores
    threshold = 0.5
    results = {}
    for level in SUPPORTED_ISAS:
        with isa_level(level):
            results[level] = ops.nms(boxes, scores, threshold)
    first = results[SUPPORTED_ISAS[0]]
    for level, keep in results.items():
        assert_same_indices(keep, first)
    assert 0 < first.numel() < n
    assert (scores[first][:-1] >= scores[first][1:]).all()
    _check_greedy_property(boxes, scores, first, cluster_of, threshold)


# ---------------------------------------------------------------------------------------------------------
# Operator registration
# ---------------------------------------------------------------------------------------------------------


def test_opcheck_nms():
    # The output size depends on the data; the registered fake allocates it with new_dynamic_size, which
    # every opcheck sub-test (schema, autograd registration, fake tensor, aot dispatch) supports.
    for args in nms_opcheck_samples():
        torch.library.opcheck(torch.ops.pydet_ops.nms.default, args)


def test_opcheck_batched_nms():
    samples = [
        (clustered_boxes(40, 4, seed=5), distinct_scores(40, seed=6), torch.randint(0, 3, (40,)), 0.5),
        (
            clustered_boxes(300, 6, seed=7, dtype=torch.float64),
            distinct_scores(300, seed=8, dtype=torch.float64),
            torch.randint(-2, 2, (300,), dtype=torch.int32),
            0.3,
        ),
        (torch.empty(0, 4), torch.empty(0), torch.empty(0, dtype=torch.int64), 0.5),
    ]
    for args in samples:
        torch.library.opcheck(torch.ops.pydet_ops.batched_nms.default, args)


def test_raw_ops_match_wrappers(isa):
    boxes = clustered_boxes(500, 10, seed=13)
    scores = distinct_scores(500, seed=14)
    idxs = torch.randint(0, 3, (500,), generator=torch.Generator().manual_seed(15))
    assert_same_indices(torch.ops.pydet_ops.nms(boxes, scores, 0.5), ops.nms(boxes, scores, 0.5))
    assert_same_indices(
        torch.ops.pydet_ops.batched_nms(boxes, scores, idxs, 0.5), ops.batched_nms(boxes, scores, idxs, 0.5)
    )


def test_torch_compile_with_data_dependent_output():
    # The fake kernels give nms a data-dependent length; a compiled graph can use it downstream.
    def detect(boxes, scores, idxs):
        keep = ops.batched_nms(boxes, scores, idxs, 0.5)
        kept = boxes[keep]
        return keep, ops.box_iou(kept, boxes).amax(dim=0)

    compiled = torch.compile(detect, backend="aot_eager", fullgraph=True)
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        for n, seed in ((300, 18), (450, 19)):
            boxes = clustered_boxes(n, 8, seed=seed)
            scores = distinct_scores(n, seed=seed + 1)
            idxs = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(seed + 2))
            keep, best = compiled(boxes, scores, idxs)
            keep_eager, best_eager = detect(boxes, scores, idxs)
            assert_same_indices(keep, keep_eager)
            torch.testing.assert_close(best, best_eager, rtol=0, atol=0)
    torch._dynamo.reset()


@pytest.mark.parametrize("far", [1e6, 1e15, 1e30, 3e38, 1e300, 1.7e308])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grid_with_one_far_outlier_matches_torchvision(far, dtype):
    # 256 ordinary boxes (enough for the grid strategy) and points far out on one axis: the cell count must
    # stay bounded on both axes (one axis keeps a single cell), and spans beyond the double range fall back.
    if dtype == torch.float32 and far > 3.4e38:
        far = 3.4e38
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(256, 2, generator=g, dtype=torch.float64) * 300
    boxes = torch.cat([
        torch.cat([xy, xy + 10 + 40 * torch.rand(256, 2, generator=g, dtype=torch.float64)], 1),
        torch.tensor([[0.0, -far, 0.0, -far], [far, 5.0, far, 5.0]], dtype=torch.float64),
    ]).to(dtype)
    scores = torch.rand(258, generator=g).to(dtype)
    expected = tvo.nms(boxes, scores, 0.5)
    assert torch.equal(ops.nms(boxes, scores, 0.5), expected)
    assert torch.equal(ops.batched_nms(boxes, scores, torch.zeros(258, dtype=torch.int64), 0.5), expected)
