"""CUDA tests across the ops: every op registered for CUDA, non-default streams, CPU and CUDA tensors mixed,
out-of-range batch indices (in a child process: a kernel fault must not take down the CUDA context of the
tests after it). What the comparisons mean: cuda_helpers.py.
"""

import os
import subprocess
import sys

import pytest
import torch
from torch.utils._pytree import tree_map
from torchvision.models.detection.image_list import ImageList

import pydet_ops as ops
from conftest import uniform_boxes
from cuda_helpers import (
    DEVICE_OPS,
    FORMATS,
    INF,
    IOU_OPS,
    MSRA_NAMES,
    NAN,
    RAW,
    _SKIP_REASON,
    _fixed_case,
    _images_on_device,
    _msra_grad,
    _nms_fixed,
    _randn,
    _runs_on_cuda,
    assert_bitwise,
    assert_grad_parity,
    dev,
    leaf,
    needs,
)
from roi_reference import awkward_rois
from test_anchors import _feature_maps as anchor_feature_maps
from test_anchors import _image_list as anchor_image_list
from test_box_coder import DEFAULT_CLIP
from test_box_coder import WEIGHTS as CODER_WEIGHTS
from test_box_coder import _boxes as coder_boxes
from test_box_coder import _deltas as coder_deltas
from test_box_iou import KINDS
from test_box_iou import OURS as IOU_OURS
from test_multi_scale_roi_align import IMAGE_SHAPES as MSRA_IMAGE_SHAPES
from test_multi_scale_roi_align import _boxes as msra_boxes
from test_multi_scale_roi_align import _features as msra_features
from test_multi_scale_roi_align import _leaves as msra_leaves
from test_multi_scale_roi_align import _raw_case as msra_raw_case
from test_roi_align import C as ALIGN_C
from test_roi_align import H as ALIGN_H
from test_roi_align import N as ALIGN_N
from test_roi_align import W as ALIGN_W
from test_roi_align import _map as align_map

pytestmark = pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or "")


# ---------------------------------------------------------------------------------------------------------
# Every op registered
# ---------------------------------------------------------------------------------------------------------


def test_every_op_runs_on_cuda():
    missing = [op for op in DEVICE_OPS if not _runs_on_cuda(op)]
    assert not missing, f"ops without a CUDA kernel: {missing}"


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


if __name__ == "__main__":
    if sys.argv[1:] == ["--out-of-range-batch-indices"]:
        _check_out_of_range_batch_indices()
        print("ok")
    else:
        sys.exit(f"usage: {sys.argv[0]} --out-of-range-batch-indices")
