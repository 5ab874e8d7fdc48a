"""CUDA tests of the IoU family, AnchorGenerator / grid_anchors and BoxCoder / encode_boxes / decode_boxes.
What the comparisons mean: cuda_helpers.py.
"""

import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator

import pydet_ops as ops
from conftest import CRAFTED_NAMES, assert_bitwise_equal, crafted_box_sets, ulp_close, uniform_boxes
from cuda_helpers import (
    DEVICE,
    FLOAT_DTYPES,
    HALF_DTYPES,
    INF,
    IOU_OPS,
    NAN,
    RAW,
    _SKIP_REASON,
    _images_on_device,
    _randn,
    assert_bitwise,
    assert_close_ulps,
    assert_on_device,
    dev,
    host,
    leaf,
    needs,
)
from reference import pairwise_reference
from test_anchors import CONFIGS as ANCHOR_CONFIGS
from test_anchors import _feature_maps as anchor_feature_maps
from test_anchors import _image_list as anchor_image_list
from test_anchors import _reference_anchors
from test_box_coder import DEFAULT_CLIP, _clip_deltas, _decode_reference, _encode_reference
from test_box_coder import WEIGHTS as CODER_WEIGHTS
from test_box_coder import _assert_float_parity as coder_float_parity
from test_box_coder import _assert_within_ulp as coder_within_ulp
from test_box_coder import _boxes as coder_boxes
from test_box_coder import _deltas as coder_deltas
from test_box_iou import KINDS, _separated_boxes
from test_box_iou import OURS as IOU_OURS
from test_box_iou import RAW as IOU_RAW
from test_box_iou import THEIRS as IOU_THEIRS
from test_box_iou import _opcheck_samples as iou_opcheck_samples

pytestmark = pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or "")


# ---------------------------------------------------------------------------------------------------------
# IoU family
# ---------------------------------------------------------------------------------------------------------


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
# AnchorGenerator and grid_anchors
# ---------------------------------------------------------------------------------------------------------


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
