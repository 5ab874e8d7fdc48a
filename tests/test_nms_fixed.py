"""nms_fixed and batched_nms_fixed: NMS with an output of fixed size (keep padded with -1, count).

keep[:count] must be exactly nms(...)[:max_output] (batched_nms for the per-class variant), whatever the
data, dtype or ISA level; the shapes depend on max_output only, so the ops trace into a static graph.
The CUDA side (no host synchronisation, graph capture) is tested in test_cuda_nms.py.
"""

import pytest
import torch

import pydet_ops as ops
from conftest import clustered_boxes, crafted_box_sets, distinct_scores, tied_scores, uniform_boxes

NAN, INF = float("nan"), float("inf")


def assert_fixed(result, expected, max_output):
    keep, count = result
    kept = expected[:max_output]
    assert keep.dtype == torch.int64 and keep.shape == (max_output,)
    assert count.dtype == torch.int64 and count.dim() == 0 and count.device == keep.device
    assert int(count) == kept.numel()
    assert torch.equal(keep[: kept.numel()], kept), (keep, kept)
    assert bool((keep[kept.numel():] == -1).all())


@pytest.mark.parametrize("max_output", [0, 1, 7, 100, 5000])
@pytest.mark.parametrize("n", [0, 1, 50, 2000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_nms_fixed_is_nms_truncated_and_padded(isa, n, max_output, dtype):
    boxes = clustered_boxes(n, max(1, n // 20), seed=n, dtype=dtype) if n else torch.zeros(0, 4, dtype=dtype)
    scores = distinct_scores(n, seed=n + 1).to(dtype) if n else torch.zeros(0, dtype=dtype)
    for threshold in (0.0, 0.5, 0.7, 1.0):
        assert_fixed(ops.nms_fixed(boxes, scores, threshold, max_output), ops.nms(boxes, scores, threshold),
                     max_output)


@pytest.mark.parametrize("max_output", [0, 3, 40, 1000])
@pytest.mark.parametrize("classes", [1, 5, 80])
def test_batched_nms_fixed_is_batched_nms_truncated_and_padded(isa, classes, max_output):
    n = 1500
    boxes = uniform_boxes(n, seed=classes, img=300.0)
    scores = tied_scores(n, seed=classes + 1, levels=16)
    idxs = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(classes))
    for threshold in (0.3, 0.5):
        assert_fixed(ops.batched_nms_fixed(boxes, scores, idxs, threshold, max_output),
                     ops.batched_nms(boxes, scores, idxs, threshold), max_output)


@pytest.mark.parametrize("name", ["identical", "negative", "large", "inverted", "zero_size", "mixed"])
def test_crafted_boxes(isa, name):
    boxes = crafted_box_sets()[name].float()
    scores = tied_scores(boxes.shape[0], seed=9, levels=3)
    idxs = torch.arange(boxes.shape[0]) % 3
    for threshold in (0.0, 0.5, 1.0, NAN, -0.5):
        for max_output in (0, 2, boxes.shape[0] + 3):
            assert_fixed(ops.nms_fixed(boxes, scores, threshold, max_output), ops.nms(boxes, scores, threshold),
                         max_output)
            assert_fixed(ops.batched_nms_fixed(boxes, scores, idxs, threshold, max_output),
                         ops.batched_nms(boxes, scores, idxs, threshold), max_output)


def test_non_finite_boxes_and_scores(isa):
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, NAN, 10], [0, 0, 10, 10], [0, 0, INF, 10], [1, 1, 11, 11.0]])
    scores = torch.tensor([0.5, 0.9, NAN, 0.7, 0.5])
    assert_fixed(ops.nms_fixed(boxes, scores, 0.5, 4), ops.nms(boxes, scores, 0.5), 4)
    idxs = torch.tensor([0, 0, 1, 1, 0])
    assert_fixed(ops.batched_nms_fixed(boxes, scores, idxs, 0.5, 4), ops.batched_nms(boxes, scores, idxs, 0.5), 4)


def test_result_does_not_alias_and_is_writable():
    boxes = uniform_boxes(100, seed=3)
    scores = distinct_scores(100, seed=4)
    keep, count = ops.nms_fixed(boxes, scores, 0.5, 10)
    keep2, _ = ops.nms_fixed(boxes, scores, 0.5, 10)
    keep[0] = 12345
    assert keep2[0] != 12345


def test_opcheck():
    boxes = uniform_boxes(200, seed=5, img=300.0)
    scores = distinct_scores(200, seed=6)
    idxs = torch.arange(200) % 4
    torch.library.opcheck(torch.ops.pydet_ops.nms_fixed, (boxes, scores, 0.5, 50))
    torch.library.opcheck(torch.ops.pydet_ops.batched_nms_fixed, (boxes, scores, idxs, 0.5, 50))


def test_traces_with_static_shapes():
    """The output shapes do not depend on the data: a whole-graph compile needs no graph break."""
    boxes = uniform_boxes(300, seed=7, img=300.0)
    scores = distinct_scores(300, seed=8)
    idxs = torch.arange(300) % 5

    def select(b, s, i):
        keep, count = ops.batched_nms_fixed(b, s, i, 0.6, 64)
        valid = torch.arange(64) < count
        return torch.where(valid[:, None], b[keep.clamp(min=0)], torch.zeros(())), count

    compiled = torch.compile(select, fullgraph=True, backend="aot_eager")
    got_boxes, got_count = compiled(boxes, scores, idxs)
    want_boxes, want_count = select(boxes, scores, idxs)
    assert torch.equal(got_boxes, want_boxes) and torch.equal(got_count, want_count)

    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        keep, count = ops.nms_fixed(mode.from_tensor(boxes), mode.from_tensor(scores), 0.5, 17)
    assert keep.shape == (17,) and keep.dtype == torch.int64 and count.shape == () and count.dtype == torch.int64
