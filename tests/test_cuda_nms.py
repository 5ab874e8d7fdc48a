"""CUDA tests of nms and batched_nms, and of nms_fixed and batched_nms_fixed (no host synchronisation, CUDA
graphs, torch.compile). What the comparisons mean: cuda_helpers.py.
"""

import pytest
import torch
import torchvision.ops as tvo

import pydet_ops as ops
from conftest import (
    CRAFTED_NAMES,
    clustered_boxes,
    crafted_box_sets,
    distinct_scores,
    nms_opcheck_samples,
    tied_scores,
    uniform_boxes,
)
from cuda_helpers import (
    DEVICE,
    FLOAT_DTYPES,
    INF,
    NAN,
    RAW,
    _SKIP_REASON,
    _batched_nms_fixed,
    _compile_skip_reason,
    _fixed_case,
    _gen,
    _nms_fixed,
    assert_bitwise,
    assert_on_device,
    assert_same_keep,
    dev,
    needs,
)
from reference import as_index_tensor, reference_batched_nms, reference_nms
from test_nms import _per_class_torchvision, dense_boxes

pytestmark = pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or "")


# ---------------------------------------------------------------------------------------------------------
# nms and batched_nms
# ---------------------------------------------------------------------------------------------------------

NMS_THRESHOLDS = [0.0, 0.3, 0.5, 0.7, 1.0]


def _assert_nms_matches_cpu(boxes, scores, thresholds, idxs=None):
    b, s = dev(boxes), dev(scores)
    i = None if idxs is None else dev(idxs)
    for threshold in thresholds:
        if idxs is None:
            assert_same_keep(ops.nms(b, s, threshold), ops.nms(boxes, scores, threshold))
        else:
            assert_same_keep(ops.batched_nms(b, s, i, threshold), ops.batched_nms(boxes, scores, idxs, threshold))


@needs("nms")
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("n", [0, 1, 2, 100, 1000, 5000])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_nms_matches_cpu(dtype, n, ties):
    boxes = dense_boxes(n, seed=n + 11, dtype=dtype)
    if ties:
        scores = tied_scores(n, seed=n + 12, levels=5, dtype=dtype)
    else:
        scores = distinct_scores(n, seed=n + 12, dtype=dtype)
    _assert_nms_matches_cpu(boxes, scores, NMS_THRESHOLDS)


@needs("nms")
@pytest.mark.parametrize("n,clusters", [(2000, 20), (6000, 600), (12000, 50)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_nms_clustered_rpn_like_matches_cpu(dtype, n, clusters):
    boxes = clustered_boxes(n, clusters, seed=n + clusters, dtype=dtype)
    scores = distinct_scores(n, seed=n + clusters + 1, dtype=dtype)
    _assert_nms_matches_cpu(boxes, scores, [0.0, 0.5, 0.7, 0.95])


def _far_apart_copies(boxes64, copies):
    """``copies`` copies of float64 boxes shifted apart along x so that no two copies overlap."""
    finite = boxes64[boxes64.isfinite()]
    span = float(finite.abs().max()) * 2 + 10.0 if finite.numel() else 10.0
    shifts = torch.arange(copies, dtype=torch.float64).repeat_interleave(boxes64.shape[0])[:, None] * 2 * span
    return boxes64.repeat(copies, 1) + shifts * torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)


@needs("nms")
@pytest.mark.parametrize("name", CRAFTED_NAMES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_nms_crafted_matches_cpu(dtype, name):
    boxes64 = crafted_box_sets(torch.float64)[name]
    thresholds = [0.0, 0.5, 1.0, NAN, -0.5]
    # The set alone, and enough far-apart copies of it for the strategies used on long inputs.
    for copies in (1, -(-3000 // boxes64.shape[0])):
        boxes = _far_apart_copies(boxes64, copies).to(dtype)
        scores = distinct_scores(boxes.shape[0], seed=7 + copies, dtype=dtype)
        _assert_nms_matches_cpu(boxes, scores, thresholds)


def _non_finite_case(n, seed, dtype):
    """Clustered boxes with tied scores, then: NaN coordinates, +inf / -inf coordinates, inverted boxes, and
    NaN, +inf and -inf scores, each on a few random rows."""
    boxes = clustered_boxes(n, max(1, n // 25), seed=seed, img=300.0, dtype=torch.float64)
    scores = tied_scores(n, seed=seed + 1, levels=6, dtype=torch.float64)
    g = _gen(seed + 2)
    k = max(1, n // 30)
    rows = torch.randperm(n, generator=g)
    cols = torch.randint(0, 4, (n,), generator=g)
    nan_rows, pinf_rows, ninf_rows, inv_rows = rows[:k], rows[k : 2 * k], rows[2 * k : 3 * k], rows[3 * k : 4 * k]
    boxes[nan_rows, cols[nan_rows]] = NAN
    boxes[pinf_rows, 2 + cols[pinf_rows] % 2] = INF
    boxes[ninf_rows, cols[ninf_rows] % 2] = -INF
    boxes[inv_rows] = boxes[inv_rows][:, [2, 3, 0, 1]]
    rows = torch.randperm(n, generator=g)
    scores[rows[:k]] = NAN
    scores[rows[k : 2 * k]] = INF
    scores[rows[2 * k : 3 * k]] = -INF
    return boxes.to(dtype), scores.to(dtype)


@needs("nms", "batched_nms")
@pytest.mark.parametrize("n", [8, 60, 700, 3000])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_nms_nan_inf_boxes_and_scores_match_cpu(dtype, n):
    boxes, scores = _non_finite_case(n, seed=n, dtype=dtype)
    thresholds = [0.0, 0.5, 0.9, NAN, -0.5]
    _assert_nms_matches_cpu(boxes, scores, thresholds)
    idxs = torch.randint(0, 3, (n,), generator=_gen(n + 5))
    _assert_nms_matches_cpu(boxes, scores, thresholds, idxs=idxs)


@needs("nms", "batched_nms")
@pytest.mark.parametrize("n,span", [(300, 20), (5000, 200)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_nms_integer_lattice_thresholds_match_cpu(dtype, n, span):
    # Whole-number boxes give IoUs that are simple fractions, many exactly at the thresholds below; the
    # comparison against the (double) threshold must be made as on the CPU, e.g. a float32 IoU of 1/3 rounds
    # above the double 1/3 and is suppressed.
    g = _gen(n)
    xy = torch.randint(0, span, (n, 2), generator=g)
    wh = torch.randint(0, 7, (n, 2), generator=g)
    boxes = torch.cat([xy, xy + wh], dim=1).to(dtype)
    scores = torch.randint(0, 50, (n,), generator=g).to(dtype)
    idxs = torch.randint(0, 4, (n,), generator=g)
    thresholds = [0.0, 0.25, 1 / 3, 0.5, 2 / 3, 0.7, 1.0]
    _assert_nms_matches_cpu(boxes, scores, thresholds)
    _assert_nms_matches_cpu(boxes, scores, thresholds, idxs=idxs)


@needs("nms")
@pytest.mark.parametrize("seed,n", [(0, 10), (1, 80), (2, 300), (3, 600)])
def test_nms_float64_matches_reference(seed, n):
    boxes = clustered_boxes(n, max(2, n // 30), seed=seed, img=200.0, dtype=torch.float64)
    scores = tied_scores(n, seed=seed + 1, levels=5, dtype=torch.float64)
    for threshold in (0.0, 0.4, 0.9):
        expected = as_index_tensor(reference_nms(boxes, scores, threshold))
        assert_same_keep(ops.nms(dev(boxes), dev(scores), threshold), expected)


# (dtype, n): whole-number boxes (exact in float16 below 2048) and distinct scores (distinct in float16
# below 2048 boxes), so that torchvision's unstable sort and float32 threshold make no difference.
NMS_TV_CASES = [
    (torch.float32, 10),
    (torch.float32, 1000),
    (torch.float32, 20000),
    (torch.float64, 1000),
    (torch.float64, 20000),
    (torch.float16, 10),
    (torch.float16, 1000),
]


@needs("nms")
@pytest.mark.parametrize("dtype,n", NMS_TV_CASES, ids=[f"{d}-{n}" for d, n in NMS_TV_CASES])
def test_nms_matches_torchvision(dtype, n):
    boxes = uniform_boxes(n, seed=n, img=20.0 * max(1.0, n**0.5), lo=4.0, hi=60.0, integer=True, dtype=dtype)
    scores = distinct_scores(n, seed=n + 1, dtype=dtype)
    b, s = dev(boxes), dev(scores)
    # float64: torchvision compares with a float32 threshold, which only 0, 0.5 and 1 survive unchanged.
    thresholds = [0.0, 0.5, 1.0] if dtype == torch.float64 else [0.0, 0.5, 0.7, 1.0]
    for threshold in thresholds:
        ours = ops.nms(b, s, threshold)
        assert_same_keep(ours, tvo.nms(b, s, threshold))
        assert_same_keep(ours, ops.nms(boxes, scores, threshold))


def _separated_clusters(n, grid, seed):
    """``n`` boxes in ``grid x grid`` clusters 200 px apart (boxes of different clusters never overlap) with
    uniform float32 scores (a few thousand exact ties at this size)."""
    g = _gen(seed)
    cluster_of = torch.randint(0, grid * grid, (n,), generator=g)
    centres = torch.stack([cluster_of % grid, cluster_of // grid], dim=1).to(torch.float32) * 200.0
    centre = centres + torch.randn(n, 2, generator=g) * 4.0
    half = 10.0 + torch.rand(n, 2, generator=g) * 20.0
    return torch.cat([centre - half, centre + half], dim=1), torch.rand(n, generator=g)


# 200k boxes: the N x N / 64 suppression bitmask of a straightforward kernel (torchvision's) would be 5 GB;
# a kernel with bounded memory stays far below this.
NMS_200K_PEAK_BYTES = 1 << 30


@needs("nms", "batched_nms")
def test_nms_200k_boxes_bounded_memory_matches_cpu():
    n = 200_000
    boxes, scores = _separated_clusters(n, grid=48, seed=200)
    idxs = torch.randint(0, 80, (n,), generator=_gen(201))
    b, s, i = dev((boxes, scores, idxs))
    for threshold in (0.5, 0.7):
        expected = ops.nms(boxes, scores, threshold)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        keep = ops.nms(b, s, threshold)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        assert peak < NMS_200K_PEAK_BYTES, f"nms on {n} boxes used {peak / 2**20:.0f} MiB of device memory"
        assert 0 < expected.numel() < n
        assert_same_keep(keep, expected)
        assert_same_keep(ops.batched_nms(b, s, i, threshold), ops.batched_nms(boxes, scores, idxs, threshold))


@needs("batched_nms")
@pytest.mark.parametrize("idx_dtype", [torch.int64, torch.int32, torch.uint8], ids=str)
@pytest.mark.parametrize("num_classes", [1, 3, 80])
@pytest.mark.parametrize("n", [0, 1, 10, 1000, 20000])
def test_batched_nms_matches_cpu(n, num_classes, idx_dtype):
    boxes = clustered_boxes(n, max(1, n // 40), seed=n + 21, img=100.0 * max(1.0, n**0.5))
    scores = tied_scores(n, seed=n + 22, levels=50)
    idxs = torch.randint(0, num_classes, (n,), generator=_gen(n + 23)).to(idx_dtype)
    _assert_nms_matches_cpu(boxes, scores, [0.0, 0.5, 0.8], idxs=idxs)


@needs("batched_nms")
@pytest.mark.parametrize("class_ids", [[-5, 0, 3], [2**40, -(2**40), 7], [-(2**63), 2**63 - 1, 0, -1]], ids=str)
@pytest.mark.parametrize("n", [30, 3000])
def test_batched_nms_negative_and_huge_class_ids_match_cpu(n, class_ids):
    boxes = clustered_boxes(n, max(2, n // 40), seed=n, img=200.0)
    scores = distinct_scores(n, seed=n + 1)
    which = torch.randint(0, len(class_ids), (n,), generator=_gen(n + 2))
    idxs = torch.tensor(class_ids, dtype=torch.int64)[which]
    _assert_nms_matches_cpu(boxes, scores, [0.2, 0.6], idxs=idxs)
    # The ids only name groups.
    for threshold in (0.2, 0.6):
        assert_same_keep(ops.batched_nms(*dev((boxes, scores, idxs)), threshold),
                         ops.batched_nms(*dev((boxes, scores, which)), threshold))


@needs("batched_nms")
@pytest.mark.parametrize("seed", range(3))
def test_batched_nms_float64_matches_reference(seed):
    n = (40, 250, 500)[seed]
    boxes = clustered_boxes(n, 6, seed=seed, img=200.0, dtype=torch.float64)
    scores = tied_scores(n, seed=seed + 1, levels=20, dtype=torch.float64)
    idxs = torch.tensor([-(2**40), -1, 0, 5, 2**40])[torch.randint(0, 5, (n,), generator=_gen(seed + 2))]
    for threshold in (0.0, 0.5, 0.9):
        expected = as_index_tensor(reference_batched_nms(boxes, scores, idxs, threshold))
        assert_same_keep(ops.batched_nms(*dev((boxes, scores, idxs)), threshold), expected)


@needs("batched_nms")
@pytest.mark.parametrize("n", [2000, 20000])
def test_batched_nms_80_classes_matches_torchvision(n):
    # Whole-number boxes: torchvision's coordinate-offset path (the smaller n) is exact as well. Distinct
    # scores: its final re-sort by score then gives our order.
    boxes = uniform_boxes(n, seed=n, img=20.0 * n**0.5, lo=4.0, hi=60.0, integer=True)
    scores = distinct_scores(n, seed=n + 1)
    idxs = torch.randint(0, 80, (n,), generator=_gen(n + 2))
    b, s, i = dev((boxes, scores, idxs))
    for threshold in (0.0, 0.5, 0.7):
        ours = ops.batched_nms(b, s, i, threshold)
        assert_same_keep(ours, tvo.batched_nms(b, s, i, threshold))
        assert_same_keep(ours, as_index_tensor(_per_class_torchvision(b, s, i, threshold)))
        assert_same_keep(ours, ops.batched_nms(boxes, scores, idxs, threshold))


@needs("nms", "batched_nms")
def test_nms_empty_and_single_inputs():
    for dtype in FLOAT_DTYPES:
        no_boxes = torch.empty(0, 4, dtype=dtype, device=DEVICE)
        no_scores = torch.empty(0, dtype=dtype, device=DEVICE)
        for empty in (ops.nms(no_boxes, no_scores, 0.5),
                      ops.batched_nms(no_boxes, no_scores, torch.empty(0, dtype=torch.int64, device=DEVICE), 0.5)):
            assert_on_device(empty)
            assert empty.dtype == torch.int64 and empty.shape == (0,)
        one = ops.nms(torch.tensor([[NAN, 0, 1, 1]], dtype=dtype, device=DEVICE),
                      torch.tensor([NAN], dtype=dtype, device=DEVICE), 0.5)
        assert_same_keep(one, torch.tensor([0]))


@needs("nms", "batched_nms")
def test_nms_non_contiguous_inputs_match_cpu():
    n = 3000
    boxes = clustered_boxes(n, 40, seed=31)
    scores = distinct_scores(n, seed=32)
    idxs = torch.randint(0, 5, (n,), generator=_gen(33))
    b, s, i = dev((boxes, scores, idxs))
    column_major = b.t().contiguous().t()
    strided_scores = torch.stack([s, s], dim=1)[:, 1]
    strided_idxs = torch.stack([i, i], dim=1)[:, 0]
    assert not (column_major.is_contiguous() or strided_scores.is_contiguous() or strided_idxs.is_contiguous())
    assert_same_keep(ops.nms(column_major, strided_scores, 0.5), ops.nms(boxes, scores, 0.5))
    assert_same_keep(ops.batched_nms(column_major, strided_scores, strided_idxs, 0.5),
                     ops.batched_nms(boxes, scores, idxs, 0.5))


@needs("nms", "batched_nms")
def test_nms_opcheck_on_cuda():
    for args in nms_opcheck_samples():
        torch.library.opcheck(RAW.nms.default, dev(args))
        idxs = torch.randint(0, 3, (args[0].shape[0],), generator=_gen(5))
        torch.library.opcheck(RAW.batched_nms.default, dev((args[0], args[1], idxs, args[2])))


# ---------------------------------------------------------------------------------------------------------
# nms_fixed and batched_nms_fixed: fixed-size output, no host synchronisation, CUDA graphs, torch.compile
# ---------------------------------------------------------------------------------------------------------


def _assert_fixed_result(keep, count, expected_full, max_output):
    """(keep, count) of a fixed-size call against the full kept list of the variable-size op."""
    assert_on_device(keep, count)
    assert keep.dtype == count.dtype == torch.int64
    assert keep.shape == (max_output,) and count.shape == ()
    kept = min(expected_full.numel(), max_output)
    assert int(count) == kept
    assert_same_keep(keep[:kept], expected_full[:max_output])
    assert bool((keep[kept:] == -1).all())


def _max_output(spec, kept, n):
    return {"zero": 0, "one": 1, "below": max(1, kept // 2), "exact": kept, "above": kept + 1, "beyond_n": n + 17}[spec]


@needs("nms", "nms_fixed")
@pytest.mark.parametrize("spec", ["zero", "one", "below", "exact", "above", "beyond_n"])
@pytest.mark.parametrize("n,kind", [(0, "clustered"), (1, "spread"), (700, "clustered"), (5000, "spread")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
def test_nms_fixed_pads_the_nms_result(dtype, n, kind, spec):
    boxes, scores, _ = _fixed_case(n, seed=n + 41, kind=kind, dtype=dtype)
    b, s = dev((boxes, scores))
    for threshold in (0.3, 0.7):
        full = ops.nms(b, s, threshold)
        max_output = _max_output(spec, full.numel(), n)
        keep, count = _nms_fixed(b, s, threshold, max_output)
        _assert_fixed_result(keep, count, full, max_output)
        # ... and the CPU op's result, padding included.
        cpu_keep, cpu_count = _nms_fixed(boxes, scores, threshold, max_output)
        assert_same_keep(keep, cpu_keep)
        assert int(count) == int(cpu_count)


@needs("batched_nms", "batched_nms_fixed")
@pytest.mark.parametrize("spec", ["zero", "one", "below", "exact", "above", "beyond_n"])
@pytest.mark.parametrize("n,kind", [(0, "clustered"), (1, "spread"), (700, "clustered"), (5000, "spread")])
def test_batched_nms_fixed_pads_the_batched_nms_result(n, kind, spec):
    boxes, scores, idxs = _fixed_case(n, seed=n + 43, kind=kind)
    b, s, i = dev((boxes, scores, idxs))
    for threshold in (0.3, 0.7):
        full = ops.batched_nms(b, s, i, threshold)
        max_output = _max_output(spec, full.numel(), n)
        keep, count = _batched_nms_fixed(b, s, i, threshold, max_output)
        _assert_fixed_result(keep, count, full, max_output)
        cpu_keep, cpu_count = _batched_nms_fixed(boxes, scores, idxs, threshold, max_output)
        assert_same_keep(keep, cpu_keep)
        assert int(count) == int(cpu_count)


@needs("nms_fixed", "batched_nms_fixed")
def test_nms_fixed_makes_no_host_synchronisation():
    boxes, scores, idxs = dev(_fixed_case(4000, seed=45))
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising CUDA call raises
    try:
        keep, count = _nms_fixed(boxes, scores, 0.5, 300)
        batched_keep, batched_count = _batched_nms_fixed(boxes, scores, idxs, 0.5, 300)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    _assert_fixed_result(keep, count, ops.nms(boxes, scores, 0.5), 300)
    _assert_fixed_result(batched_keep, batched_count, ops.batched_nms(boxes, scores, idxs, 0.5), 300)


# Inputs of one size for graphs and compiled code: heavily clustered (fewer kept than MAX_OUTPUT), spread out
# (more kept than MAX_OUTPUT), with NaN scores and coordinates, and all scores tied.
GRAPH_N, GRAPH_MAX_OUTPUT, GRAPH_THRESHOLD = 3000, 1000, 0.5


def _graph_inputs():
    cases = [_fixed_case(GRAPH_N, seed=51, kind="clustered"), _fixed_case(GRAPH_N, seed=52, kind="spread")]
    boxes, scores, idxs = _fixed_case(GRAPH_N, seed=53, kind="spread")
    boxes, scores = boxes.clone(), scores.clone()
    boxes[::97, 1] = NAN
    scores[::89] = NAN
    cases.append((boxes, scores, idxs))
    boxes, _, idxs = _fixed_case(GRAPH_N, seed=54, kind="clustered")
    cases.append((boxes, torch.full((GRAPH_N,), 0.25), idxs))
    return [dev(c) for c in cases]


@needs("nms", "batched_nms", "nms_fixed", "batched_nms_fixed")
@pytest.mark.parametrize("batched", [False, True], ids=["nms_fixed", "batched_nms_fixed"])
def test_nms_fixed_cuda_graph_replay_matches_eager(batched):
    def call(boxes, scores, idxs):
        if batched:
            return _batched_nms_fixed(boxes, scores, idxs, GRAPH_THRESHOLD, GRAPH_MAX_OUTPUT)
        return _nms_fixed(boxes, scores, GRAPH_THRESHOLD, GRAPH_MAX_OUTPUT)

    def full(boxes, scores, idxs):
        if batched:
            return ops.batched_nms(boxes, scores, idxs, GRAPH_THRESHOLD)
        return ops.nms(boxes, scores, GRAPH_THRESHOLD)

    inputs = _graph_inputs()
    kept_counts = [full(*args).numel() for args in inputs]
    assert min(kept_counts) < GRAPH_MAX_OUTPUT < max(kept_counts)
    static = [t.clone() for t in inputs[0]]
    # Warm-up on a side stream, as graph capture requires (lazy initialisation, workspace allocation).
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            call(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        keep, count = call(*static)
    # Replay on each input in turn (the captured one last), copied into the captured tensors.
    for boxes, scores, idxs in inputs[1:] + inputs[:1]:
        for target, source in zip(static, (boxes, scores, idxs)):
            target.copy_(source)
        graph.replay()
        expected_keep, expected_count = call(boxes, scores, idxs)
        assert_same_keep(keep, expected_keep)
        assert int(count) == int(expected_count)
        _assert_fixed_result(keep, count, full(boxes, scores, idxs), GRAPH_MAX_OUTPUT)


@needs("nms", "nms_fixed")
def test_nms_fixed_under_torch_compile_reduce_overhead():
    reason = _compile_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    from torch._dynamo.utils import counters

    def select(boxes, scores):
        keep, count = _nms_fixed(boxes, scores, GRAPH_THRESHOLD, GRAPH_MAX_OUTPUT)
        valid = (keep >= 0).unsqueeze(1).to(boxes.dtype)
        return keep, count, boxes.index_select(0, keep.clamp(min=0)) * valid

    # Finite inputs only: the selected boxes are compared for equality.
    inputs = [(b, s) for b, s, _ in _graph_inputs() if bool(b.isfinite().all()) and bool(s.isfinite().all())]
    torch._dynamo.reset()
    counters.clear()
    try:
        compiled = torch.compile(select, mode="reduce-overhead", fullgraph=True)
        # The first calls warm up and record the CUDA graph, the later ones replay it.
        for boxes, scores in inputs * 3:
            got = [t.clone() for t in compiled(boxes, scores)]
            expected = select(boxes, scores)
            for g, e in zip(got, expected):
                assert_bitwise(g, e)
        # reduce-overhead falls back to running without CUDA graphs (silently) when an op synchronises or
        # has a data-dependent output size: nms_fixed must need neither.
        assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
    finally:
        torch._dynamo.reset()


@needs("nms_fixed", "batched_nms_fixed")
def test_nms_fixed_opcheck_on_cuda():
    boxes, scores, idxs = _fixed_case(300, seed=61)
    for max_output in (0, 50, 400):
        torch.library.opcheck(RAW.nms_fixed.default, dev((boxes, scores, 0.5, max_output)))
        torch.library.opcheck(RAW.batched_nms_fixed.default, dev((boxes, scores, idxs, 0.5, max_output)))
