"""Concurrency and leaks: every op called from 8 Python threads at once (with torch.set_num_threads changing
between calls) gives the serial results bit for bit, and 10k calls of every op, forward and backward, keep
resident memory flat."""

import gc
import os
import threading

import pytest
import torch

import pydet_ops
from conftest import assert_bitwise_equal, uniform_boxes


def _inputs():
    g = torch.Generator().manual_seed(0)
    boxes = uniform_boxes(300, seed=1)
    scores = torch.rand(300, generator=g)
    labels = torch.randint(0, 5, (300,), generator=g)
    x = torch.randn(2, 16, 24, 28, generator=g)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    rois = torch.cat([torch.randint(0, 2, (40, 1), generator=g).float(), uniform_boxes(40, seed=2, img=90.0)], 1)
    feats = {"0": torch.randn(1, 8, 32, 32, generator=g), "1": torch.randn(1, 8, 16, 16, generator=g)}
    codes = torch.randn(300, 8, generator=g)
    return boxes, scores, labels, x, x_cl, rois, feats, codes


def _calls():
    """(name, fn) pairs; each fn returns a tuple of tensors (forward results and gradients)."""
    boxes, scores, labels, x, x_cl, rois, feats, codes = _inputs()
    pooler = pydet_ops.MultiScaleRoIAlign(["0", "1"], 5, 2)
    anchors = pydet_ops.AnchorGenerator(((16,), (32,)), ((0.5, 1.0, 2.0),) * 2)
    coder = pydet_ops.BoxCoder((10.0, 10.0, 5.0, 5.0))

    class Images:
        tensors = torch.zeros(1, 3, 128, 128)
        image_sizes = [(128, 128)]

    def with_grad(op, inp):
        t = inp.clone().requires_grad_()
        out = op(t)
        out = out[0] if isinstance(out, tuple) else out
        (g,) = torch.autograd.grad(out.square().sum(), t)
        return out.detach(), g

    return [
        ("nms", lambda: (pydet_ops.nms(boxes, scores, 0.5),)),
        ("batched_nms", lambda: (pydet_ops.batched_nms(boxes, scores, labels, 0.5),)),
        ("nms_fixed", lambda: pydet_ops.nms_fixed(boxes, scores, 0.5, 64)),
        ("batched_nms_fixed", lambda: pydet_ops.batched_nms_fixed(boxes, scores, labels, 0.5, 64)),
        ("box_iou", lambda: (pydet_ops.box_iou(boxes, boxes[:50]),)),
        ("complete_box_iou", lambda: (pydet_ops.complete_box_iou(boxes, boxes[:50]),)),
        ("roi_align", lambda: with_grad(lambda t: pydet_ops.roi_align(t, rois, 7, 0.5, 2), x)),
        ("roi_align_cl", lambda: with_grad(lambda t: pydet_ops.roi_align(t, rois, 7, 0.5, 0, True), x_cl)),
        ("roi_pool", lambda: with_grad(lambda t: pydet_ops.roi_pool(t, rois, 5, 0.5), x)),
        (
            "MultiScaleRoIAlign",
            lambda: (pooler(feats, [boxes[:20] * 0.2], [(128, 128)]),),
        ),
        ("AnchorGenerator", lambda: tuple(anchors(Images, [feats["0"], feats["1"]]))),
        ("BoxCoder", lambda: (coder.decode_single(codes, boxes), coder.encode_single(boxes + 1.0, boxes))),
    ]


CALLS = _calls()


@pytest.mark.parametrize("name,fn", CALLS, ids=[c[0] for c in CALLS])
def test_eight_threads_match_serial(name, fn):
    expected = fn()
    results = [[] for _ in range(8)]
    errors = []
    original_threads = torch.get_num_threads()

    def worker(i):
        try:
            for k in range(6):
                if i == 0:  # one thread keeps changing the intra-op thread count under the others
                    torch.set_num_threads(1 + k % 2)
                results[i].append(fn())
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        torch.set_num_threads(original_threads)
    assert not errors, errors
    for per_thread in results:
        assert len(per_thread) == 6
        for got in per_thread:
            for a, e in zip(got, expected):
                assert_bitwise_equal(a, e)


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="resident memory is read from /proc")
@pytest.mark.parametrize("name,fn", CALLS, ids=[c[0] for c in CALLS])
def test_ten_thousand_calls_keep_memory_flat(name, fn):
    # Warm up (allocator pools, caches, lazily created state), then 10k calls; the resident memory after
    # must not have grown by more than a few megabytes (a leak of even 1 KiB per call would show 10 MB).
    for _ in range(300):
        fn()
    gc.collect()
    before = _rss_bytes()
    for _ in range(10000):
        fn()
    gc.collect()
    grown = _rss_bytes() - before
    assert grown < 4 * 2**20, f"{name}: resident memory grew by {grown / 2**20:.1f} MiB over 10k calls"
