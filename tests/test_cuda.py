"""The CUDA kernels: every op on device "cuda" against our own CPU kernels, torchvision's CUDA ops and the
float64 references, plus what only a GPU has (streams, CUDA graphs, autocast, atomics, 64-bit offsets).

Three kinds of expected result, each with the tolerance its arithmetic allows:

* our CPU kernel on the same inputs. The CUDA kernels share the per-element math with the CPU kernels
  (``csrc/common``) and are compiled without FMA contraction, so where both evaluate the same operations in
  the same order the float32 results are identical bit for bit: the IoU family except CIoU, the RoI ops'
  forward passes, box coding (float32 and the half types) and anchors. CIoU calls ``atan``, whose device and
  host versions differ by an ulp or so. NMS indices are always identical. Backward passes of the RoI ops
  accumulate with atomics on the GPU, which reorders sums: they agree within a tolerance relative to the
  gradient's largest magnitude.
* torchvision's CUDA ops (the drop-in contract). torchvision's kernels are compiled with FMA contraction,
  so the RoI ops agree within a few ulps. Its NMS compares IoUs with a float32 threshold: NMS inputs are
  whole-number boxes (every IoU exact whatever the contraction) and thresholds for which that comparison
  decides as the double one does; scores are distinct, since torchvision sorts them unstably.
* the float64 references of ``reference.py`` and ``roi_reference.py``.

The module skips as a whole when torch sees no CUDA device or when pydet_ops was built without CUDA kernels;
a test whose op has no CUDA kernel skips on its own, and ``test_every_op_runs_on_cuda`` fails so that such a
gap shows. Inputs are built on the CPU from seeded generators and copied to the device, so every run sees the
same values. The test of out-of-range batch indices runs in a child process: a kernel fault there must not
take down the CUDA context of the tests after it. The map of more than 2^31 elements is marked ``huge``.
"""

import contextlib
import math
import os
import subprocess
import sys

import pytest
import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision)
import torchvision.ops as tvo
from torch.utils._pytree import tree_map
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

import pydet_ops as ops
from conftest import (
    CRAFTED_NAMES,
    assert_bitwise_equal,
    clustered_boxes,
    crafted_box_sets,
    distinct_scores,
    tied_scores,
    ulp_close,
    uniform_boxes,
)
from reference import as_index_tensor, pairwise_reference, reference_batched_nms, reference_nms
from roi_reference import (
    awkward_rois,
    clustered_rois,
    roi_align_reference,
    roi_align_reference_backward,
    roi_pool_reference,
    roi_pool_reference_backward,
)
from test_anchors import CONFIGS as ANCHOR_CONFIGS
from test_anchors import _feature_maps as anchor_feature_maps
from test_anchors import _image_list as anchor_image_list
from test_anchors import _reference_anchors
from test_box_coder import DEFAULT_CLIP
from test_box_coder import WEIGHTS as CODER_WEIGHTS
from test_box_coder import _assert_float_parity as coder_float_parity
from test_box_coder import _assert_within_ulp as coder_within_ulp
from test_box_coder import _boxes as coder_boxes
from test_box_coder import _clip_deltas, _decode_reference, _encode_reference
from test_box_coder import _deltas as coder_deltas
from test_box_iou import KINDS
from test_box_iou import OURS as IOU_OURS
from test_box_iou import RAW as IOU_RAW
from test_box_iou import THEIRS as IOU_THEIRS
from test_box_iou import _opcheck_samples as iou_opcheck_samples
from test_box_iou import _separated_boxes
from test_huge_inputs import POOLED as HUGE_POOLED
from test_huge_inputs import TWO_31, _crops, _disjoint, _feature_rois, _lowest_offset_read
from test_multi_scale_roi_align import IMAGE_SHAPES as MSRA_IMAGE_SHAPES
from test_multi_scale_roi_align import _boxes as msra_boxes
from test_multi_scale_roi_align import _features as msra_features
from test_multi_scale_roi_align import _leaves as msra_leaves
from test_multi_scale_roi_align import _raw_case as msra_raw_case
from test_nms import _per_class_torchvision, assert_same_indices, dense_boxes
from test_roi_align import C as ALIGN_C
from test_roi_align import H as ALIGN_H
from test_roi_align import N as ALIGN_N
from test_roi_align import W as ALIGN_W
from test_roi_align import _gradcheck_case as align_gradcheck_case
from test_roi_align import _map as align_map
from test_roi_align import _torchvision_safe
from test_roi_pool import _gradcheck_case as pool_gradcheck_case

RAW = torch.ops.pydet_ops
TV = torch.ops.torchvision
DEVICE = torch.device("cuda")

FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
HALF_DTYPES = (torch.float16, torch.bfloat16)
NAN, INF = math.nan, math.inf

# ---------------------------------------------------------------------------------------------------------
# Availability and skips
# ---------------------------------------------------------------------------------------------------------

# Every op the package registers, by the name the dispatcher knows it under.
DEVICE_OPS = (
    "nms",
    "batched_nms",
    "nms_fixed",
    "batched_nms_fixed",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "complete_box_iou",
    "roi_align",
    "_roi_align_backward",
    "roi_pool",
    "_roi_pool_backward",
    "multi_scale_roi_align",
    "_multi_scale_roi_align_backward",
    "grid_anchors",
    "encode_boxes",
    "decode_boxes",
)


def _has_kernel(op: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"pydet_ops::{op}", key)


def _runs_on_cuda(op: str) -> bool:
    # A device-generic (composite) registration serves CUDA tensors as well as a CUDA kernel does.
    return any(_has_kernel(op, key) for key in ("CUDA", "CompositeExplicitAutograd", "CompositeImplicitAutograd"))


def _module_skip_reason():
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    if not any(_has_kernel(op, "CUDA") for op in DEVICE_OPS):
        return "pydet_ops was built without CUDA kernels (build with FORCE_CUDA=1 on a machine with nvcc)"
    return None


_SKIP_REASON = _module_skip_reason()
pytestmark = pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or "")


def needs(*op_names):
    """Skips a test whose ops do not all run on CUDA in this build (test_every_op_runs_on_cuda reports it)."""
    if _SKIP_REASON is not None:  # (the module's reason, rather than every op's)
        return pytest.mark.skipif(True, reason=_SKIP_REASON)
    missing = [f"pydet_ops::{op}" for op in op_names if not _runs_on_cuda(op)]
    return pytest.mark.skipif(bool(missing), reason=f"no CUDA kernel for {', '.join(missing)}")


def _compile_skip_reason():
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported on this platform / Python version"
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return "this torch has no Triton integration, which torch.compile needs for CUDA graphs of CUDA code"
    if not has_triton():
        return "torch.compile's inductor backend needs Triton for CUDA, which is not available here"
    return None


def test_every_op_runs_on_cuda():
    missing = [op for op in DEVICE_OPS if not _runs_on_cuda(op)]
    assert not missing, f"ops without a CUDA kernel: {missing}"


# ---------------------------------------------------------------------------------------------------------
# Shared helpers: transfers and comparisons
# ---------------------------------------------------------------------------------------------------------


def dev(tree):
    """Every tensor of a (nested) structure copied to the CUDA device."""
    return tree_map(lambda t: t.to(DEVICE) if isinstance(t, torch.Tensor) else t, tree)


def host(t):
    return t.detach().cpu()


def assert_on_device(*tensors):
    for t in tensors:
        assert t.device.type == DEVICE.type, t.device


def assert_bitwise(actual, expected):
    """``actual`` (on the device) equals ``expected`` bit for bit: dtype, shape, values, NaN where NaN."""
    assert_on_device(actual)
    assert_bitwise_equal(host(actual), host(expected))


def assert_close_ulps(actual, expected, ulps):
    """Same dtype, shape and NaN / inf pattern; finite values within ``ulps`` units of ``expected``'s dtype,
    relative to each value and to the largest finite magnitude of ``expected`` (sums evaluated in another
    order are off by a few ulps of their largest terms, not of their result)."""
    a, e = host(actual), host(expected)
    assert a.dtype == e.dtype and a.shape == e.shape, (a.dtype, e.dtype, a.shape, e.shape)
    if e.numel() == 0:
        return
    eps = torch.finfo(e.dtype).eps
    finite = e[e.isfinite()].double()
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    torch.testing.assert_close(a.double(), e.double(), rtol=ulps * eps, atol=ulps * eps * scale, equal_nan=True)


def assert_forward_parity(actual, expected):
    """A CUDA forward result against the CPU kernel's: float32 bit for bit (same operations in the same
    order); other dtypes within 2 ulps."""
    assert_on_device(actual)
    if expected.dtype == torch.float32:
        assert_bitwise(actual, expected)
    else:
        assert_close_ulps(actual, expected, ulps=2)


def assert_grad_parity(actual, expected):
    """Gradients summed with atomics (any order) against a sequential sum."""
    assert_on_device(actual)
    assert_close_ulps(actual, expected, ulps=16 if expected.dtype in HALF_DTYPES else 64)


def assert_same_keep(actual, expected):
    """Kept indices: int64 on the device, identical to ``expected``."""
    assert_on_device(actual)
    assert_same_indices(host(actual), host(expected).to(torch.int64))


def assert_format(t, fmt):
    assert t.is_contiguous(memory_format=fmt), (t.shape, t.stride())


def leaf(x, fmt=torch.contiguous_format, device=None):
    """A fresh leaf copy of ``x`` (on ``device``, default the CUDA device) in memory format ``fmt``."""
    t = x.detach().to(DEVICE if device is None else device)
    return t.clone().contiguous(memory_format=fmt).requires_grad_()


def _gen(seed):
    return torch.Generator().manual_seed(int(seed))


def _randn(*shape, seed, dtype=torch.float32):
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64).to(dtype)


# gradcheck calls backward twice and compares: atomics may sum in another order the second time.
NONDET_TOL = 1e-12


@contextlib.contextmanager
def deterministic_algorithms():
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn_only)


def _nms_fixed(*args):
    # The Python wrapper, or the raw op where a build predates it.
    fn = getattr(ops, "nms_fixed", None) or RAW.nms_fixed
    return fn(*args)


def _batched_nms_fixed(*args):
    fn = getattr(ops, "batched_nms_fixed", None) or RAW.batched_nms_fixed
    return fn(*args)


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
    samples = [
        (clustered_boxes(40, 4, seed=1), distinct_scores(40, seed=2), 0.5),
        (clustered_boxes(300, 6, seed=3, dtype=torch.float64), distinct_scores(300, seed=4, dtype=torch.float64), 0.3),
        (torch.empty(0, 4), torch.empty(0), 0.5),
    ]
    for args in samples:
        torch.library.opcheck(RAW.nms.default, dev(args))
        idxs = torch.randint(0, 3, (args[0].shape[0],), generator=_gen(5))
        torch.library.opcheck(RAW.batched_nms.default, dev((args[0], args[1], idxs, args[2])))


# ---------------------------------------------------------------------------------------------------------
# nms_fixed and batched_nms_fixed: fixed-size output, no host synchronisation, CUDA graphs, torch.compile
# ---------------------------------------------------------------------------------------------------------


def _fixed_case(n, seed, kind="clustered", dtype=torch.float32):
    """(boxes, scores, idxs) of ``n`` boxes; "clustered" keeps few boxes, "spread" keeps most."""
    if kind == "clustered":
        boxes = clustered_boxes(n, max(1, n // 30), seed=seed, img=600.0, dtype=dtype)
    else:
        boxes = uniform_boxes(n, seed=seed, img=20.0 * max(1.0, n**0.5), lo=4.0, hi=40.0, dtype=dtype)
    scores = tied_scores(n, seed=seed + 1, levels=40, dtype=dtype)
    idxs = torch.randint(0, 4, (n,), generator=_gen(seed + 2))
    return boxes, scores, idxs


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


# ---------------------------------------------------------------------------------------------------------
# IoU family
# ---------------------------------------------------------------------------------------------------------

IOU_OPS = ("box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou")


def _with_non_finite_rows(boxes):
    b = boxes.clone()
    b[1, 1] = NAN
    b[2, 2] = INF
    b[3, 0] = -INF
    b[4] = torch.tensor([-INF, -INF, INF, INF])
    return b


def _pairwise_sets(dtype):
    """(name, boxes1, boxes2) pairs: random sets of several sizes, the crafted sets against themselves and
    others, and rows with NaN / inf coordinates."""
    sets = [
        ("random-small", uniform_boxes(7, seed=1), uniform_boxes(13, seed=2)),
        ("random-wide", uniform_boxes(37, seed=3), uniform_boxes(1000, seed=4)),
        ("random-tall", uniform_boxes(301, seed=5), uniform_boxes(17, seed=6)),
        ("non-finite", _with_non_finite_rows(uniform_boxes(9, seed=7)),
         _with_non_finite_rows(uniform_boxes(6, seed=8))),
    ]
    others = uniform_boxes(9, seed=11, img=120.0, lo=1.0, hi=80.0)
    for name in CRAFTED_NAMES:
        boxes = crafted_box_sets(torch.float64)[name]
        sets.append((name, boxes, boxes))
        sets.append((name + "-vs-others", boxes, others))
    return [(name, a.to(dtype), b.to(dtype)) for name, a, b in sets]


def _assert_iou_parity(kind, actual, expected):
    """CUDA against the CPU kernel: bit for bit except CIoU (a device ``atan``)."""
    assert_on_device(actual)
    if kind == "ciou":
        ulp_close(host(actual), host(expected), ulps=16)
    else:
        assert_bitwise(actual, expected)


@needs(*IOU_OPS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_pairwise_matches_cpu(kind, dtype):
    for name, b1, b2 in _pairwise_sets(dtype):
        ours = IOU_OURS[kind](dev(b1), dev(b2))
        expected = IOU_OURS[kind](b1, b2)
        assert ours.dtype == (torch.float64 if dtype == torch.float64 else torch.float32), name
        _assert_iou_parity(kind, ours, expected)


@needs(*IOU_OPS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_pairwise_matches_torchvision(kind, dtype):
    if dtype in HALF_DTYPES:
        # torchvision subtracts half-type coordinates before upcasting: whole numbers below 256 keep every
        # such difference exact, so both compute from the same values.
        sets = [("integer", uniform_boxes(40, seed=21, img=100.0, lo=1.0, hi=100.0, integer=True),
                 uniform_boxes(23, seed=22, img=100.0, lo=1.0, hi=100.0, integer=True))]
        sets = [(name, a.to(dtype), b.to(dtype)) for name, a, b in sets]
    else:
        sets = _pairwise_sets(dtype)
    for name, b1, b2 in sets:
        ours = IOU_OURS[kind](dev(b1), dev(b2))
        theirs = IOU_THEIRS[kind](dev(b1), dev(b2))
        assert_on_device(ours)
        if dtype == torch.float64:
            ulp_close(host(ours), host(theirs), ulps=8)
        elif kind == "ciou":
            ulp_close(host(ours), host(theirs), ulps=16)
        else:
            assert_bitwise(ours, theirs)


@needs(*IOU_OPS)
@pytest.mark.parametrize("kind", KINDS)
def test_pairwise_float64_matches_reference(kind):
    sets = [(name, a, b) for name, a, b in _pairwise_sets(torch.float64) if name != "non-finite"]
    for scale in (1.0, 100.0, 1e5):
        sets.append(("scaled", uniform_boxes(30, seed=31, img=scale, lo=scale / 100, hi=scale / 2, dtype=torch.float64),
                     uniform_boxes(20, seed=32, img=scale, lo=scale / 100, hi=scale / 2, dtype=torch.float64)))
    for name, b1, b2 in sets:
        ours = IOU_OURS[kind](dev(b1), dev(b2))
        torch.testing.assert_close(host(ours), pairwise_reference(kind, b1, b2), rtol=1e-12, atol=1e-12,
                                   equal_nan=True, msg=name)


@needs(*IOU_OPS)
@pytest.mark.parametrize("kind", KINDS)
def test_pairwise_batched_integer_mixed_and_formats_match_cpu(kind):
    cases = [
        (uniform_boxes(10, seed=41).reshape(2, 1, 5, 4), uniform_boxes(21, seed=42).reshape(3, 7, 4)),
        (uniform_boxes(15, seed=43, dtype=torch.float64).reshape(3, 5, 4), uniform_boxes(4, seed=44)),
        (uniform_boxes(30, seed=45, img=400.0, integer=True).to(torch.int32),
         uniform_boxes(19, seed=46, img=400.0, integer=True).to(torch.int64)),
        (uniform_boxes(12, seed=47).half(), uniform_boxes(8, seed=48)),
        (uniform_boxes(12, seed=49).bfloat16(), uniform_boxes(8, seed=50, dtype=torch.float64)),
        (uniform_boxes(12, seed=51)[:, [0, 2, 1, 3]].t().contiguous().t()[:, [0, 2, 1, 3]], uniform_boxes(8, seed=52)),
    ]
    for b1, b2 in cases:
        ours = IOU_OURS[kind](dev(b1), dev(b2))
        expected = IOU_OURS[kind](b1, b2)
        _assert_iou_parity(kind, ours, expected)
    if kind == "iou":
        for fmt in ("xywh", "cxcywh"):
            b1, b2 = uniform_boxes(11, seed=53), uniform_boxes(6, seed=54)
            _assert_iou_parity(kind, ops.box_iou(dev(b1), dev(b2), fmt=fmt), ops.box_iou(b1, b2, fmt=fmt))


@needs(*IOU_OPS)
@pytest.mark.parametrize("kind", KINDS)
def test_pairwise_empty_inputs(kind):
    for shape1, shape2 in [((0, 4), (5, 4)), ((5, 4), (0, 4)), ((0, 4), (0, 4)), ((2, 0, 4), (3, 4))]:
        out = IOU_OURS[kind](torch.zeros(shape1, device=DEVICE), torch.zeros(shape2, device=DEVICE))
        assert_on_device(out)
        assert out.shape == IOU_OURS[kind](torch.zeros(shape1), torch.zeros(shape2)).shape


@needs(*IOU_OPS)
@pytest.mark.parametrize("kind", KINDS)
def test_pairwise_gradients_on_cuda(kind):
    # CIoU treats alpha as a constant (as torchvision does): its gradient is exact only for squares.
    square = kind == "ciou"
    b1 = dev(_separated_boxes(3, seed=66, square=square)).requires_grad_()
    b2 = dev(_separated_boxes(4, seed=67, square=square)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: IOU_OURS[kind](a, b), (b1, b2))
    # The gradients of the general case equal torchvision's.
    base1 = uniform_boxes(7, seed=61, img=60.0, lo=5.0, hi=50.0, dtype=torch.float64)
    base2 = uniform_boxes(9, seed=62, img=60.0, lo=5.0, hi=50.0, dtype=torch.float64)
    weights = dev(_randn(7, 9, seed=63, dtype=torch.float64))
    grads = []
    for fn in (IOU_OURS[kind], IOU_THEIRS[kind]):
        a, b = leaf(base1), leaf(base2)
        (fn(a, b) * weights).sum().backward()
        grads.append((a.grad, b.grad))
    for ours, theirs in zip(*grads):
        assert_on_device(ours)
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


@needs(*IOU_OPS)
@pytest.mark.parametrize("kind", KINDS)
def test_pairwise_opcheck_on_cuda(kind):
    for args in iou_opcheck_samples(kind):
        torch.library.opcheck(IOU_RAW[kind].default, dev(args))


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
# MultiScaleRoIAlign
# ---------------------------------------------------------------------------------------------------------

MSRA_NAMES = ["0", "1", "2", "3"]


def _run_msra(device, names, output_size, sampling_ratio, x, boxes, fmt, grad, module=None, **kwargs):
    pooler = (module or ops.MultiScaleRoIAlign)(names, output_size, sampling_ratio, **kwargs)
    leaves = msra_leaves({k: v.to(device) for k, v in x.items()}, fmt)
    out = pooler(leaves, [b.to(device) for b in boxes], MSRA_IMAGE_SHAPES)
    out.backward(grad.to(device))
    return out, {k: leaves[k].grad for k in names}


def _msra_grad(boxes, channels, output_size, seed, dtype):
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    return _randn(sum(b.shape[0] for b in boxes), channels, ph, pw, seed=seed, dtype=dtype)


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
# AnchorGenerator and grid_anchors
# ---------------------------------------------------------------------------------------------------------


def _images_on_device(images):
    return ImageList(images.tensors.to(DEVICE), images.image_sizes)


@needs("grid_anchors")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("config", ANCHOR_CONFIGS, ids=[c[0] for c in ANCHOR_CONFIGS])
def test_anchor_generator_matches_torchvision_and_cpu(config, dtype):
    _, sizes, ratios, (height, width), shapes, n = config
    images = anchor_image_list(n, height, width)
    features = anchor_feature_maps(shapes, n, dtype=dtype)
    # A fresh torchvision generator per dtype: it converts its cell anchors in place.
    ours = ops.AnchorGenerator(sizes, ratios)(_images_on_device(images), dev(features))
    theirs = TVAnchorGenerator(sizes, ratios)(_images_on_device(images), dev(features))
    expected = ops.AnchorGenerator(sizes, ratios)(images, features)
    assert len(ours) == len(theirs) == len(expected) == n
    for a, b, c in zip(ours, theirs, expected):
        assert a.dtype == dtype
        assert_bitwise(a, b)
        assert_bitwise(a, c)


@needs("grid_anchors")
def test_anchor_generator_float64_reference_and_device_cache():
    sizes, ratios = ((32, 64), (128,)), ((0.5, 1.0, 2.0), (0.5, 1.0, 2.0))
    image_hw, shapes = (100, 150), [(12, 19), (6, 9)]
    gen = ops.AnchorGenerator(sizes, ratios)
    images = anchor_image_list(2, *image_hw)
    expected = _reference_anchors(sizes, ratios, image_hw, shapes)
    # The same generator on the CPU, on CUDA and on the CPU again: anchors on the feature maps' device each
    # time (the cache is keyed by device), with the reference's values.
    for device in ("cpu", DEVICE, "cpu", DEVICE):
        for dtype in (torch.float64, torch.float32):
            features = [f.to(device) for f in anchor_feature_maps(shapes, 2, dtype=dtype)]
            images_here = images if device == "cpu" else _images_on_device(images)
            for t in gen(images_here, features):
                assert t.device == features[0].device
                assert_bitwise_equal(host(t), expected.to(dtype))


@needs("grid_anchors")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_grid_anchors_raw_op_matches_cpu(dtype):
    cells = (_randn(7, 4, seed=121, dtype=torch.float64) * 40).round().to(dtype)
    cases = [
        ([3, 4], [40, 60, 20, 30], [8, 8, 16, 16], 0.0),
        ([7], [1, 1], [32, 16], 4.5),
        ([2, 5], [0, 3, 25, 1], [4, 4, 3, 7], 0.5),
        ([4, 3], [300, 500, 5, 7], [2, 2, 700, 900], 0.0),  # coordinates beyond the half types' whole numbers
    ]
    for per_level, grid_sizes, strides, offset in cases:
        c = cells[: sum(per_level)]
        out = RAW.grid_anchors(dev(c), per_level, grid_sizes, strides, offset)
        assert_bitwise(out, RAW.grid_anchors(c, per_level, grid_sizes, strides, offset))
    torch.library.opcheck(RAW.grid_anchors.default, (dev(cells[:5]), [2, 3], [4, 5, 2, 3], [8, 8, 16, 16], 0.5))
    single = ops.single_level_anchors((5, 6), stride=8, dtype=dtype, device=DEVICE)
    assert_bitwise(single, ops.single_level_anchors((5, 6), stride=8, dtype=dtype))
    empty = RAW.grid_anchors(dev(cells[:2]), [2], [0, 3], [4, 4], 0.0)
    assert_on_device(empty)
    assert empty.shape == (0, 4) and empty.dtype == dtype


# ---------------------------------------------------------------------------------------------------------
# BoxCoder, encode_boxes, decode_boxes
# ---------------------------------------------------------------------------------------------------------


def _assert_coder_matches_cpu(actual, expected):
    """Box coding shares its operations and its float exp / log with the CPU kernel: identical bits for
    float32 and the half types; float64 uses the device math library's exp and log."""
    assert_on_device(actual)
    if expected.dtype == torch.float64:
        assert_close_ulps(actual, expected, ulps=4)
    else:
        assert_bitwise(actual, expected)


def _assert_coder_matches_torchvision(actual, expected):
    """torchvision's coder calls the device's own exp and log (within 2 ulps in float32, and possibly off for
    every occurrence of a repeated delta), then rounds: values within tolerance, no share of exact ones."""
    assert_on_device(actual)
    a, e = host(actual), host(expected)
    if e.dtype in HALF_DTYPES:
        coder_within_ulp(a, e, ulps=1, min_exact=0.0)
    else:
        coder_float_parity(a, e, min_exact=0.0)


@needs("encode_boxes", "decode_boxes")
@pytest.mark.parametrize("k", [1, 91])
@pytest.mark.parametrize("weights", CODER_WEIGHTS, ids=str)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_box_coder_matches_cpu_and_torchvision(dtype, weights, k):
    n = 1000 if k == 1 else 60
    boxes = coder_boxes(n, seed=131, dtype=dtype)
    codes = coder_deltas(n, k, seed=132, dtype=dtype)
    decoded = ops.BoxCoder(weights).decode_single(dev(codes), dev(boxes))
    assert decoded.shape == (n, 4 * k) and decoded.dtype == dtype
    _assert_coder_matches_cpu(decoded, ops.BoxCoder(weights).decode_single(codes, boxes))
    _assert_coder_matches_torchvision(decoded, TVBoxCoder(weights).decode_single(dev(codes), dev(boxes)))
    reference = coder_boxes(n, seed=133, dtype=dtype)
    encoded = ops.BoxCoder(weights).encode_single(dev(reference), dev(boxes))
    assert encoded.dtype == dtype
    _assert_coder_matches_cpu(encoded, ops.BoxCoder(weights).encode_single(reference, boxes))
    _assert_coder_matches_torchvision(encoded, TVBoxCoder(weights).encode_single(dev(reference), dev(boxes)))


@needs("encode_boxes", "decode_boxes")
def test_box_coder_lists_of_images_and_mixed_dtypes_match_cpu():
    counts = [7, 0, 40, 13]
    boxes = [coder_boxes(c, seed=140 + i) for i, c in enumerate(counts)]
    codes = coder_deltas(sum(counts), 3, seed=145)
    coder = ops.BoxCoder(CODER_WEIGHTS[1])
    _assert_coder_matches_cpu(coder.decode(dev(codes), dev(boxes)), coder.decode(codes, boxes))
    proposals = [coder_boxes(c, seed=150 + i) for i, c in enumerate(counts)]
    for ours, expected in zip(coder.encode(dev(boxes), dev(proposals)), coder.encode(boxes, proposals)):
        _assert_coder_matches_cpu(ours, expected)
    # Boxes of another dtype than the codes, and non-contiguous inputs.
    b64, c32 = coder_boxes(50, seed=155, dtype=torch.float64), coder_deltas(50, 2, seed=156)
    _assert_coder_matches_cpu(ops.decode_boxes(dev(c32), dev(b64), CODER_WEIGHTS[2]),
                              ops.decode_boxes(c32, b64, CODER_WEIGHTS[2]))
    strided = dev(coder_deltas(50, 4, seed=157))[:, 4:12]
    assert not strided.is_contiguous()
    _assert_coder_matches_cpu(ops.decode_boxes(strided, dev(b64).float(), CODER_WEIGHTS[0]),
                              ops.decode_boxes(host(strided), b64.float(), CODER_WEIGHTS[0]))


@needs("encode_boxes", "decode_boxes")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("clip", [DEFAULT_CLIP, 0.5, -1.0, math.inf], ids=lambda c: f"clip={c:.3g}")
def test_box_coder_clip_nan_inf_and_degenerate_boxes(dtype, clip):
    dw = _clip_deltas(clip if math.isfinite(clip) else 3.0, dtype)
    m = dw.shape[0]
    codes = torch.stack([torch.full((m, m), 0.25, dtype=dtype), torch.full((m, m), -0.5, dtype=dtype),
                         dw[:, None].expand(m, m), dw[None, :].expand(m, m)], dim=-1).reshape(m * m, 4)
    codes = torch.cat([codes, torch.tensor([[INF, 0, 0, 0], [0, -INF, 0, 0], [NAN, 0, 0, 0]], dtype=dtype)])
    boxes = coder_boxes(codes.shape[0], seed=161, dtype=dtype, img=100.0, lo=1.0, hi=50.0)
    boxes[:4] = torch.tensor([[5.0, 5.0, 5.0, 9.0], [1.0, 2.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0], [NAN, 1, 2, 3]],
                             dtype=dtype)
    for weights in [(1.0, 1.0, 1.0, 1.0), (2.0, 1.0, 0.5, 3.0)]:
        ours = ops.BoxCoder(weights, bbox_xform_clip=clip).decode_single(dev(codes), dev(boxes))
        _assert_coder_matches_cpu(ours, ops.BoxCoder(weights, bbox_xform_clip=clip).decode_single(codes, boxes))
        theirs = TVBoxCoder(weights, bbox_xform_clip=clip).decode_single(dev(codes), dev(boxes))
        _assert_coder_matches_torchvision(ours, theirs)
    # Zero-size and inverted reference boxes and proposals: inf, -inf and NaN deltas.
    reference = torch.tensor([[0, 0, 10, 10], [5, 5, 5, 8], [3, 3, 9, 3], [10, 10, 0, 0], [0, 0, 4, 4], [1, 1, 2, 2]],
                             dtype=dtype)
    proposals = torch.tensor([[0, 0, 0, 10], [1, 1, 4, 4], [2, 2, 8, 9], [0, 0, 10, 10], [4, 4, 0, 0], [1, 1, 1, 1]],
                             dtype=dtype)
    for weights in CODER_WEIGHTS:
        ours = ops.BoxCoder(weights).encode_single(dev(reference), dev(proposals))
        _assert_coder_matches_cpu(ours, ops.BoxCoder(weights).encode_single(reference, proposals))
        _assert_coder_matches_torchvision(ours, TVBoxCoder(weights).encode_single(dev(reference), dev(proposals)))


@needs("encode_boxes", "decode_boxes")
@pytest.mark.parametrize("weights", CODER_WEIGHTS + [(0.1, 1 / 3, 0.7, 1.3)], ids=str)
def test_box_coder_float64_matches_reference(weights):
    boxes = coder_boxes(200, seed=171).double()
    reference = coder_boxes(200, seed=172).double()
    codes = coder_deltas(200, 3, seed=173, scale=1.5).double()
    codes[::7, 2] = 20.0  # clamped
    decoded = ops.decode_boxes(dev(codes), dev(boxes), weights)
    torch.testing.assert_close(host(decoded), _decode_reference(codes, boxes, weights), rtol=1e-13, atol=1e-10)
    encoded = ops.encode_boxes(dev(reference), dev(boxes), weights)
    torch.testing.assert_close(host(encoded), _encode_reference(reference, boxes, weights), rtol=1e-13, atol=1e-12)


@needs("encode_boxes", "decode_boxes")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_box_coder_empty_inputs_and_opcheck_on_cuda(dtype):
    coder = ops.BoxCoder(CODER_WEIGHTS[1])
    empty = torch.zeros(0, 4, dtype=dtype, device=DEVICE)
    for k in (1, 91):
        out = coder.decode_single(torch.zeros(0, 4 * k, dtype=dtype, device=DEVICE), empty)
        assert_on_device(out)
        assert out.shape == (0, 4 * k) and out.dtype == dtype
    no_deltas = torch.zeros(5, 0, dtype=dtype, device=DEVICE)
    assert coder.decode_single(no_deltas, dev(coder_boxes(5, dtype=dtype))).shape == (5, 0)
    assert coder.encode_single(empty, empty).shape == (0, 4)
    codes = dev(coder_deltas(5, 3, seed=181, dtype=dtype))
    boxes, reference = dev(coder_boxes(5, seed=182, dtype=dtype)), dev(coder_boxes(5, seed=183, dtype=dtype))
    torch.library.opcheck(RAW.decode_boxes.default, (codes, boxes, [2.0, 1.0, 0.5, 3.0], 0.1))
    torch.library.opcheck(RAW.encode_boxes.default, (reference, boxes, [2.0, 1.0, 0.5, 3.0]))
    if dtype == torch.float64:
        c, b = codes.clone().requires_grad_(), boxes.clone().requires_grad_()
        torch.library.opcheck(RAW.decode_boxes.default, (c, b, [10.0, 10.0, 5.0, 5.0], DEFAULT_CLIP))
        torch.library.opcheck(RAW.encode_boxes.default, (reference.clone().requires_grad_(), boxes, [1.0] * 4))


# ---------------------------------------------------------------------------------------------------------
# Non-default streams
# ---------------------------------------------------------------------------------------------------------

# Keeps a stream busy for tens of milliseconds: work issued there afterwards runs only then, so a kernel
# launched on another stream than the current one would run before its inputs are written.
BUSY_CYCLES = 50_000_000


def _stream_case(name):
    """(inputs, compute, tolerant): ``compute(*inputs)`` returns a dict of result tensors; the names in
    ``tolerant`` are gradients summed with atomics (compared within a tolerance)."""
    if name in ("nms", "batched_nms", "nms_fixed"):
        boxes, scores, idxs = dev(_fixed_case(4000, seed=191))

        def compute(b, s, i):
            if name == "nms":
                return {"keep": ops.nms(b, s, 0.5)}
            if name == "batched_nms":
                return {"keep": ops.batched_nms(b, s, i, 0.5)}
            keep, count = _nms_fixed(b, s, 0.5, 300)
            return {"keep": keep, "count": count}

        return (boxes, scores, idxs), compute, ()
    if name == "box_iou_family":
        b1, b2 = dev((uniform_boxes(300, seed=192), uniform_boxes(500, seed=193)))
        return (b1, b2), lambda a, b: {kind: IOU_OURS[kind](a, b) for kind in KINDS}, ()
    if name in ("roi_align", "roi_pool"):
        x = dev(align_map(seed=194)).contiguous(memory_format=torch.channels_last)
        rois = dev(awkward_rois(ALIGN_N, ALIGN_H, ALIGN_W, 0.5, seed=195))
        grad = dev(_randn(rois.shape[0], ALIGN_C, 3, 3, seed=196))

        def compute(x, rois, grad):
            xin = x.detach().clone().requires_grad_()
            if name == "roi_align":
                out = ops.roi_align(xin, rois, 3, 0.5, 2, True)
            else:
                out = ops.roi_pool(xin, rois, 3, 0.5)
            out.backward(grad)
            return {"out": out, "grad": xin.grad}

        return (x, rois, grad), compute, ("grad",)
    if name == "multi_scale_roi_align":
        x, boxes = dev(msra_features(seed=197)), dev(msra_boxes(seed=198))
        grad = dev(_msra_grad(boxes, x["0"].shape[1], 5, seed=199, dtype=torch.float32))

        def compute(x, boxes, grad):
            leaves = msra_leaves(x, torch.channels_last)
            out = ops.MultiScaleRoIAlign(MSRA_NAMES, 5, 2)(leaves, boxes, MSRA_IMAGE_SHAPES)
            out.backward(grad)
            return {"out": out, **{f"grad{k}": leaves[k].grad for k in MSRA_NAMES}}

        return (x, boxes, grad), compute, tuple(f"grad{k}" for k in MSRA_NAMES)
    if name == "anchors":
        features = dev(anchor_feature_maps([(25, 38), (13, 19)], 2))
        images = _images_on_device(anchor_image_list(2, 100, 150))

        def compute(images_tensor, features):
            # A fresh generator: nothing comes from a cache filled on the other stream.
            gen = ops.AnchorGenerator(((32, 64), (128,)), ((0.5, 1.0, 2.0),) * 2)
            anchors = gen(ImageList(images_tensor, images.image_sizes), features)
            return {f"image{i}": a for i, a in enumerate(anchors)}

        return (images.tensors, features), compute, ()
    if name == "box_coder":
        codes, boxes = dev((coder_deltas(500, 4, seed=200), coder_boxes(500, seed=201)))
        reference = dev(coder_boxes(500, seed=202))

        def compute(codes, boxes, reference):
            coder = ops.BoxCoder(CODER_WEIGHTS[1])
            return {"decoded": coder.decode_single(codes, boxes), "encoded": coder.encode_single(reference, boxes)}

        return (codes, boxes, reference), compute, ()
    raise ValueError(name)


STREAM_CASES = ["nms", "batched_nms", "nms_fixed", "box_iou_family", "roi_align", "roi_pool",
                "multi_scale_roi_align", "anchors", "box_coder"]
STREAM_OPS = {
    "nms": ("nms",),
    "batched_nms": ("batched_nms",),
    "nms_fixed": ("nms_fixed",),
    "box_iou_family": IOU_OPS,
    "roi_align": ("roi_align", "_roi_align_backward"),
    "roi_pool": ("roi_pool", "_roi_pool_backward"),
    "multi_scale_roi_align": ("multi_scale_roi_align", "_multi_scale_roi_align_backward"),
    "anchors": ("grid_anchors",),
    "box_coder": ("encode_boxes", "decode_boxes"),
}


def _restaged(t):
    """A copy of ``t`` made on the current stream, first filled with garbage (NaN / -7)."""
    if not isinstance(t, torch.Tensor):
        return t
    filler = NAN if t.is_floating_point() else -7
    return torch.full_like(t, filler).copy_(t)


@pytest.mark.parametrize("name", STREAM_CASES)
def test_ops_on_a_non_default_stream_match_the_default_stream(name):
    missing = [op for op in STREAM_OPS[name] if not _runs_on_cuda(op)]
    if missing:
        pytest.skip(f"no CUDA kernel for {missing}")
    inputs, compute, tolerant = _stream_case(name)
    expected = compute(*inputs)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    assert side != torch.cuda.current_stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(BUSY_CYCLES)
        # The inputs are (re)written on the side stream, after the busy wait.
        staged = tree_map(_restaged, inputs)
        got = compute(*staged)
    side.synchronize()
    assert got.keys() == expected.keys()
    for key in expected:
        if key in tolerant:
            assert_grad_parity(got[key], expected[key])
        else:
            assert_bitwise(got[key], expected[key])


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


# ---------------------------------------------------------------------------------------------------------
# Bad input on CUDA
# ---------------------------------------------------------------------------------------------------------


def _names(*names):
    """A regex matching a message that names every one of ``names`` (in any order)."""
    return "".join(f"(?=[\\s\\S]*{name})" for name in names)


def _device_mix_cases():
    """{id: (call, names the error must mention, ops the call needs)}: one tensor argument on the CPU, the
    others on CUDA (built when called: nothing touches the device at collection)."""
    b, s, i = _fixed_case(20, seed=221)
    x = align_map(seed=222)
    rois = awkward_rois(ALIGN_N, ALIGN_H, ALIGN_W, 1.0, seed=223)
    grad = torch.zeros(rois.shape[0], ALIGN_C, 3, 3)
    _, argmax = RAW.roi_pool(x, rois, 1.0, 3, 3)
    feats = msra_features(seed=224)
    codes, boxes = coder_deltas(5, seed=225), coder_boxes(5, seed=226)
    shape = (ALIGN_N, ALIGN_C, ALIGN_H, ALIGN_W)
    d = dev
    return {
        "nms": (lambda: ops.nms(d(b), s, 0.5), ("boxes", "scores"), ("nms",)),
        "raw-nms": (lambda: RAW.nms(b, d(s), 0.5), ("boxes", "scores"), ("nms",)),
        "batched_nms": (lambda: ops.batched_nms(d(b), d(s), i, 0.5), ("boxes", "idxs"), ("batched_nms",)),
        "raw-batched_nms": (lambda: RAW.batched_nms(d(b), d(s), i, 0.5), ("boxes", "idxs"), ("batched_nms",)),
        "nms_fixed": (lambda: _nms_fixed(d(b), s, 0.5, 10), ("boxes", "scores"), ("nms_fixed",)),
        "raw-nms_fixed": (lambda: RAW.nms_fixed(d(b), s, 0.5, 10), ("boxes", "scores"), ("nms_fixed",)),
        "raw-batched_nms_fixed": (
            lambda: RAW.batched_nms_fixed(d(b), d(s), i, 0.5, 10), ("boxes", "idxs"), ("batched_nms_fixed",)
        ),
        "box_iou": (lambda: ops.box_iou(d(b), b), ("boxes1", "boxes2"), ("box_iou",)),
        "raw-complete_box_iou": (
            lambda: RAW.complete_box_iou(b, d(b), 1e-7), ("boxes1", "boxes2"), ("complete_box_iou",)
        ),
        "roi_align": (lambda: ops.roi_align(d(x), rois, 3), ("input", "rois"), ("roi_align",)),
        "raw-roi_align": (lambda: RAW.roi_align(x, d(rois), 1.0, 3, 3, 2, False), ("input", "rois"), ("roi_align",)),
        "raw-roi_align_backward": (
            lambda: RAW._roi_align_backward(d(grad), rois, 1.0, 3, 3, *shape, 2, False),
            ("grad", "rois"),
            ("_roi_align_backward",),
        ),
        "roi_pool": (lambda: ops.roi_pool(d(x), rois, 3), ("input", "rois"), ("roi_pool",)),
        "raw-roi_pool": (lambda: RAW.roi_pool(x, d(rois), 1.0, 3, 3), ("input", "rois"), ("roi_pool",)),
        "raw-roi_pool_backward": (
            lambda: RAW._roi_pool_backward(d(grad), d(rois), argmax, 1.0, 3, 3, *shape),
            ("grad", "argmax"),
            ("_roi_pool_backward",),
        ),
        "MultiScaleRoIAlign": (
            lambda: ops.MultiScaleRoIAlign(MSRA_NAMES, 3, 2)(d(feats), msra_boxes(seed=227), MSRA_IMAGE_SHAPES),
            (r"x\['0'\]", "boxes"),
            ("multi_scale_roi_align",),
        ),
        "raw-multi_scale_roi_align": (
            lambda: RAW.multi_scale_roi_align([feats["0"], feats["1"]], d(torch.tensor([[0.0, 1, 1, 9, 9]])),
                                              [0.25, 0.125], 3, 3, 2, 224, 4),
            ("features", "rois"),
            ("multi_scale_roi_align",),
        ),
        "encode_boxes": (
            lambda: ops.encode_boxes(d(boxes), boxes, (1.0, 1.0, 1.0, 1.0)),
            ("reference_boxes", "proposals"),
            ("encode_boxes",),
        ),
        "raw-encode_boxes": (
            lambda: RAW.encode_boxes(boxes, d(boxes), [1.0] * 4), ("reference_boxes", "proposals"), ("encode_boxes",)
        ),
        "decode_boxes": (
            lambda: ops.decode_boxes(codes, d(boxes), (1.0, 1.0, 1.0, 1.0)), ("rel_codes", "boxes"), ("decode_boxes",)
        ),
        "raw-decode_boxes": (
            lambda: RAW.decode_boxes(d(codes), boxes, [1.0] * 4, DEFAULT_CLIP), ("rel_codes", "boxes"),
            ("decode_boxes",),
        ),
        "grid_anchors": (
            lambda: ops.grid_anchors([d(boxes), boxes], [(2, 2), (1, 1)], [(4, 4), (8, 8)]), ("cell_anchors",),
            ("grid_anchors",),
        ),
    }


DEVICE_MIX_IDS = ["nms", "raw-nms", "batched_nms", "raw-batched_nms", "nms_fixed", "raw-nms_fixed",
                  "raw-batched_nms_fixed", "box_iou", "raw-complete_box_iou", "roi_align", "raw-roi_align",
                  "raw-roi_align_backward", "roi_pool", "raw-roi_pool", "raw-roi_pool_backward", "MultiScaleRoIAlign",
                  "raw-multi_scale_roi_align", "encode_boxes", "raw-encode_boxes", "decode_boxes", "raw-decode_boxes",
                  "grid_anchors"]


@pytest.mark.parametrize("case_id", DEVICE_MIX_IDS)
def test_cpu_and_cuda_tensors_mixed_raise_naming_the_arguments(case_id):
    call, names, op_names = _device_mix_cases()[case_id]
    missing = [op for op in op_names if not _runs_on_cuda(op)]
    if missing:
        pytest.skip(f"no CUDA kernel for {missing}")
    with pytest.raises((RuntimeError, ValueError), match=_names(*names)):
        call()
    torch.cuda.synchronize()  # nothing was left running, and the context is healthy


def _check_out_of_range_batch_indices():
    """The checks of test_out_of_range_batch_index_pools_to_zero (run in a child process).

    On CUDA a batch index outside [0, N) is not checked on the host (that would synchronise with the device
    for every call): such a RoI pools to zero, receives no gradient and leaves the other RoIs untouched."""
    x = dev(align_map(seed=231))
    good = torch.tensor([[0.0, 1.0, 1.0, 9.0, 7.0], [2.0, 2.5, 0.5, 12.0, 10.5], [1.0, 0.0, 3.0, 6.0, 11.0]])
    bad_indices = [float(ALIGN_N), -1.0, -1.5, NAN, INF, -INF, 1e10, 2.0**31]
    bad = torch.tensor([[v, 1.0, 1.0, 9.0, 7.0] for v in bad_indices])
    rois = torch.cat([good[:1], bad[:4], good[1:2], bad[4:], good[2:]])
    is_bad = torch.isin(torch.arange(rois.shape[0]), torch.tensor([1, 2, 3, 4, 6, 7, 8, 9]))
    rois, good_rois = dev(rois), dev(rois[~is_bad])
    for fmt in FORMATS.values():
        for aligned in (False, True):
            xin, good_in = leaf(x, fmt), leaf(x, fmt)
            out = ops.roi_align(xin, rois, 3, 1.0, 2, aligned)
            expected = ops.roi_align(good_in, good_rois, 3, 1.0, 2, aligned)
            assert int(torch.count_nonzero(out[is_bad])) == 0, "roi_align"
            assert torch.equal(out[~is_bad], expected), "roi_align"
            out.sum().backward()
            expected.sum().backward()
            assert_grad_parity(xin.grad, good_in.grad)
        xin, good_in = leaf(x, fmt), leaf(x, fmt)
        values, argmax = RAW.roi_pool(xin, rois, 1.0, 3, 3)
        expected_values, expected_argmax = RAW.roi_pool(good_in, good_rois, 1.0, 3, 3)
        assert int(torch.count_nonzero(values[is_bad])) == 0 and bool((argmax[is_bad] == -1).all()), "roi_pool"
        assert torch.equal(values[~is_bad], expected_values) and torch.equal(argmax[~is_bad], expected_argmax)
        values.sum().backward()
        expected_values.sum().backward()
        assert_grad_parity(xin.grad, good_in.grad)
        # The backward ops called directly with the out-of-range RoIs.
        grad = dev(_randn(rois.shape[0], ALIGN_C, 3, 3, seed=232)).contiguous(memory_format=fmt)
        shape = (ALIGN_N, ALIGN_C, ALIGN_H, ALIGN_W)
        assert_grad_parity(RAW._roi_align_backward(grad, rois, 1.0, 3, 3, *shape, 2, False),
                           RAW._roi_align_backward(grad[~is_bad], good_rois, 1.0, 3, 3, *shape, 2, False))
        assert_grad_parity(RAW._roi_pool_backward(grad, rois, argmax, 1.0, 3, 3, *shape),
                           RAW._roi_pool_backward(grad[~is_bad], good_rois, argmax[~is_bad], 1.0, 3, 3, *shape))
    feats, _, scales, cs, cl = msra_raw_case(torch.float32)
    feats = dev(feats)
    rois = dev(torch.tensor([[0.0, 1.5, 2.0, 9.3, 12.2], [2.0, 3.1, 0.4, 30.7, 28.9], [-1.0, 1.0, 1.0, 5.0, 5.0],
                             [NAN, 10.0, 3.0, 38.2, 30.1], [1.0, 10.0, 3.0, 38.2, 30.1]]))
    out = RAW.multi_scale_roi_align(feats, rois, scales, 2, 3, 2, cs, cl)
    assert int(torch.count_nonzero(out[1:4])) == 0, "multi_scale_roi_align"
    assert torch.equal(out[[0, 4]], RAW.multi_scale_roi_align(feats, rois[[0, 4]], scales, 2, 3, 2, cs, cl))
    # A device-side fault would surface here.
    torch.cuda.synchronize()


@needs("roi_align", "_roi_align_backward", "roi_pool", "_roi_pool_backward", "multi_scale_roi_align")
def test_out_of_range_batch_index_pools_to_zero():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, here, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--out-of-range-batch-indices"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"child process failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    assert "ok" in proc.stdout


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


if __name__ == "__main__":
    if sys.argv[1:] == ["--out-of-range-batch-indices"]:
        _check_out_of_range_batch_indices()
        print("ok")
    else:
        sys.exit(f"usage: {sys.argv[0]} --out-of-range-batch-indices")
