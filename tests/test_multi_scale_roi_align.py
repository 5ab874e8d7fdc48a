"""MultiScaleRoIAlign: bitwise parity with torchvision.ops.MultiScaleRoIAlign (output and the gradient of every
feature map), level clamping, feature-map selection, scales, opcheck / gradcheck of the raw op, determinism.

Kernel tests take the ``isa`` fixture and so run at every CPU instruction-set level the machine supports.
"""

import pytest
import torch
import torchvision.ops as tvo

import pydet_ops as ops

RAW = torch.ops.pydet_ops
FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}

N, C = 2, 19
# FPN levels 2..5 of images up to 128 x 160: strides 4, 8, 16, 32.
LEVEL_SIZES = [(32, 40), (16, 20), (8, 10), (4, 5)]
IMAGE_SHAPES = [(128, 150), (100, 160)]


def _features(seed=0, dtype=torch.float32, names=("0", "1", "2", "3"), sizes=LEVEL_SIZES, extra=True):
    g = torch.Generator().manual_seed(seed)
    x = {}
    for name, (h, w) in zip(names, sizes):
        x[name] = torch.randn(N, C, h, w, generator=g, dtype=torch.float64).to(dtype)
    if extra:
        x["pool"] = torch.randn(N, C, 2, 3, generator=g, dtype=torch.float64).to(dtype)
    return x


def _boxes(seed=0, per_size=6, dtype=torch.float32):
    """Per image: tiny boxes (below the finest level), medium ones, and huge ones (beyond the coarsest), some
    reaching outside the image."""
    g = torch.Generator().manual_seed(seed)
    boxes = []
    for _ in range(N):
        xy = torch.rand(4 * per_size, 2, generator=g, dtype=torch.float64) * 140 - 10
        wh = torch.cat(
            [
                0.5 + torch.rand(per_size, 2, generator=g, dtype=torch.float64) * 8,
                20 + torch.rand(per_size, 2, generator=g, dtype=torch.float64) * 180,
                230 + torch.rand(per_size, 2, generator=g, dtype=torch.float64) * 200,
                900 + torch.rand(per_size, 2, generator=g, dtype=torch.float64) * 1500,
            ]
        )
        b = torch.cat([xy, xy + wh], dim=1)
        boxes.append(b[torch.randperm(b.shape[0], generator=g)].to(dtype))
    return boxes


def _leaves(x, fmt):
    if not isinstance(fmt, dict):
        fmt = {k: fmt for k in x}
    return {k: v.detach().clone().contiguous(memory_format=fmt[k]).requires_grad_() for k, v in x.items()}


def _both(names, output_size, sampling_ratio, x, boxes, fmt, image_shapes=IMAGE_SHAPES, **kwargs):
    ours = ops.MultiScaleRoIAlign(names, output_size, sampling_ratio, **kwargs)
    theirs = tvo.MultiScaleRoIAlign(names, output_size, sampling_ratio, **kwargs)
    ours_x, theirs_x = _leaves(x, fmt), _leaves(x, torch.contiguous_format)
    out = ours(ours_x, boxes, image_shapes)
    expected = theirs(theirs_x, boxes, image_shapes)
    grad = torch.randn(expected.shape, generator=torch.Generator().manual_seed(99), dtype=expected.dtype)
    out.backward(grad)
    expected.backward(grad)
    return ours, theirs, out, expected, ours_x, theirs_x


def _assert_same(out, expected, ours_x, theirs_x, names):
    assert out.shape == expected.shape and out.dtype == expected.dtype
    assert torch.equal(out, expected)
    for k in ours_x:
        if k in names:
            assert ours_x[k].grad.dtype == ours_x[k].dtype
            assert torch.equal(ours_x[k].grad, theirs_x[k].grad), k
        else:
            assert ours_x[k].grad is None and theirs_x[k].grad is None


# ---------------------------------------------------------------------------------------------------------
# Parity with torchvision
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("output_size", [7, (3, 5)], ids=["int", "tuple"])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_four_levels_match_torchvision(isa, sampling_ratio, output_size, fmt):
    names = ["0", "1", "2", "3"]
    x, boxes = _features(seed=sampling_ratio), _boxes(seed=sampling_ratio)
    ours, theirs, out, expected, ours_x, theirs_x = _both(names, output_size, sampling_ratio, x, boxes, fmt)
    _assert_same(out, expected, ours_x, theirs_x, names)
    assert out.is_contiguous(memory_format=fmt)
    assert ours.scales == theirs.scales == [0.25, 0.125, 0.0625, 0.03125]
    # Every level receives boxes, including the clamped ones at both ends.
    levels = theirs.map_levels(boxes)
    assert set(levels.tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_one_level_matches_torchvision(isa, fmt):
    x, boxes = _features(seed=3), _boxes(seed=4)
    for names in (["0"], ["2"]):
        ours, theirs, out, expected, ours_x, theirs_x = _both(names, (4, 3), 2, x, boxes, fmt)
        _assert_same(out, expected, ours_x, theirs_x, names)
        assert out.is_contiguous(memory_format=fmt)
        assert ours.scales == theirs.scales


@pytest.mark.parametrize(
    "names", [["1", "2"], ["0", "1", "2"], ["1", "3"], ["3", "0"]], ids=["middle", "finest-three", "gap", "unordered"]
)
def test_featmap_names_subset_matches_torchvision(isa, names):
    """Only the named maps are used, in x's order; a level with no map ('gap') pools its boxes to 0."""
    x, boxes = _features(seed=5), _boxes(seed=6)
    ours, theirs, out, expected, ours_x, theirs_x = _both(names, 5, 0, x, boxes, torch.channels_last)
    _assert_same(out, expected, ours_x, theirs_x, names)
    assert ours.scales == theirs.scales


def test_mixed_formats_float64_and_custom_canonical_level(isa):
    names = ["0", "1", "2", "3"]
    x, boxes = _features(seed=7, dtype=torch.float64), _boxes(seed=8, dtype=torch.float64)
    cl, nchw = torch.channels_last, torch.contiguous_format
    fmt = {"0": cl, "1": nchw, "2": cl, "3": nchw, "pool": nchw}
    for kwargs in ({}, {"canonical_scale": 112, "canonical_level": 3}):
        ours, theirs, out, expected, ours_x, theirs_x = _both(names, 3, 2, x, boxes, fmt, **kwargs)
        _assert_same(out, expected, ours_x, theirs_x, names)


def test_scales_are_kept_after_the_first_call(isa):
    names = ["0", "1", "2", "3"]
    x, boxes = _features(seed=9), _boxes(seed=10)
    ours = ops.MultiScaleRoIAlign(names, 3, 2)
    theirs = tvo.MultiScaleRoIAlign(names, 3, 2)
    assert ours.scales is None and theirs.scales is None
    ours(x, boxes, IMAGE_SHAPES)
    theirs(x, boxes, IMAGE_SHAPES)
    assert ours.scales == theirs.scales
    # Images twice as large would give other scales; the first ones are kept, as torchvision does.
    later = [(2 * h, 2 * w) for h, w in IMAGE_SHAPES]
    assert torch.equal(ours(x, boxes, later), theirs(x, boxes, later))
    assert ours.scales == theirs.scales == [0.25, 0.125, 0.0625, 0.03125]


def test_reprs_match_torchvision():
    assert repr(ops.RoIAlign(7, 0.25, 2)) == repr(tvo.RoIAlign(7, 0.25, 2))
    assert repr(ops.RoIAlign((3, 5), 0.5, -1, True)) == repr(tvo.RoIAlign((3, 5), 0.5, -1, True))
    assert repr(ops.RoIPool((3, 5), 0.5)) == repr(tvo.RoIPool((3, 5), 0.5))


@pytest.mark.parametrize("output_size", [7, (3, 5)])
def test_multi_scale_str_matches_torchvision(output_size):
    ours = ops.MultiScaleRoIAlign(["0", "1"], output_size, 2)
    theirs = tvo.MultiScaleRoIAlign(["0", "1"], output_size, 2)
    assert str(ours) == str(theirs)


@pytest.mark.parametrize("names", [["0", "1", "2", "3"], ["0", "1"]], ids=["four-levels", "two-levels"])
def test_boxes_without_an_area_pool_to_zero(isa, names):
    """A box with a NaN or negative area has no level: it pools to 0 and passes no gradient."""
    x = _leaves(_features(seed=15), torch.channels_last)
    nan = float("nan")
    good = torch.tensor([[10.0, 12.0, 60.0, 70.0], [3.0, 4.0, 9.0, 8.0]])
    bad = torch.tensor([[60.0, 12.0, 10.0, 70.0], [10.0, 70.0, 60.0, 12.0], [nan, 1.0, 5.0, 5.0], [1.0, 1.0, 5.0, nan]])
    boxes = [torch.cat([good[:1], bad, good[1:]]), bad.flip(0)]
    pooler = ops.MultiScaleRoIAlign(names, 3, 2)
    out = pooler(x, boxes, IMAGE_SHAPES)
    assert torch.count_nonzero(out[1:5]) == 0 and torch.count_nonzero(out[6:]) == 0
    expected_x = _leaves(_features(seed=15), torch.channels_last)
    expected = ops.MultiScaleRoIAlign(names, 3, 2)(expected_x, [good, torch.zeros(0, 4)], IMAGE_SHAPES)
    assert torch.equal(out[[0, 5]], expected)
    out.sum().backward()
    expected.sum().backward()
    for name in names:
        assert torch.equal(x[name].grad, expected_x[name].grad)


# ---------------------------------------------------------------------------------------------------------
# Empty input, determinism
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("names", [["0", "1", "2", "3"], ["1"]], ids=["four-levels", "one-level"])
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_no_boxes(isa, fmt, names):
    x = _leaves(_features(seed=11), fmt)
    out = ops.MultiScaleRoIAlign(names, (2, 3), 2)(x, [torch.zeros(0, 4) for _ in range(N)], IMAGE_SHAPES)
    assert out.shape == (0, C, 2, 3)
    out.sum().backward()
    for name in names:
        assert x[name].grad.shape == x[name].shape
        assert torch.count_nonzero(x[name].grad) == 0


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_backward_is_deterministic(isa, fmt):
    names = ["0", "1", "2", "3"]
    x = _features(seed=12)
    # Many overlapping boxes per level.
    g = torch.Generator().manual_seed(13)
    boxes = []
    for _ in range(N):
        base = torch.tensor([[10.0, 12.0, 18.0, 22.0], [30.0, 20.0, 90.0, 100.0], [5.0, 8.0, 140.0, 120.0]])
        jittered = base.repeat(60, 1) + torch.randn(180, 4, generator=g)
        boxes.append(torch.cat([jittered, torch.tensor([[0.0, 0.0, 1000.0, 1200.0]]).repeat(20, 1)]))
    grad = torch.randn(sum(b.shape[0] for b in boxes), C, 7, 7, generator=g)
    pooler = ops.MultiScaleRoIAlign(names, 7, 2)

    def run():
        leaves = _leaves(x, fmt)
        pooler(leaves, boxes, IMAGE_SHAPES).backward(grad)
        return [leaves[k].grad for k in names]

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first = run()
        for _ in range(2):
            assert all(torch.equal(a, b) for a, b in zip(run(), first))
        torch.set_num_threads(1)
        assert all(torch.equal(a, b) for a, b in zip(run(), first))
    finally:
        torch.set_num_threads(threads)
    theirs_x = _leaves(x, torch.contiguous_format)
    tvo.MultiScaleRoIAlign(names, 7, 2)(theirs_x, boxes, IMAGE_SHAPES).backward(grad)
    assert all(torch.equal(a, theirs_x[k].grad) for a, k in zip(first, names))


# ---------------------------------------------------------------------------------------------------------
# The raw op: opcheck, gradcheck
# ---------------------------------------------------------------------------------------------------------


def _raw_case(dtype=torch.float64):
    g = torch.Generator().manual_seed(14)
    feats = [torch.randn(2, 3, 8, 10, generator=g, dtype=dtype), torch.randn(2, 3, 4, 5, generator=g, dtype=dtype)]
    rois = torch.tensor(
        [[0, 1.5, 2.0, 9.3, 12.2], [1, 3.1, 0.4, 30.7, 28.9], [1, -2.0, 4.5, 6.0, 7.5], [0, 10.0, 3.0, 38.2, 30.1]],
        dtype=dtype,
    )
    # canonical_scale 16 at level 3: the small boxes go to level 2 (scale 1/4), the large to level 3.
    return feats, rois, [0.25, 0.125], 16, 3


def test_raw_op_opcheck(isa):
    feats, rois, scales, cs, cl = _raw_case()
    for dtype in (torch.float32, torch.float64):
        for fmt in FORMATS.values():
            for requires_grad in (False, True):
                f = [t.to(dtype).contiguous(memory_format=fmt).clone().requires_grad_(requires_grad) for t in feats]
                torch.library.opcheck(RAW.multi_scale_roi_align.default, (f, rois.to(dtype), scales, 2, 3, 2, cs, cl))
    grad = torch.randn(rois.shape[0], 3, 2, 3, dtype=torch.float64)
    sizes = [s for t in feats for s in t.shape]
    torch.library.opcheck(RAW._multi_scale_roi_align_backward.default, (grad, rois, scales, 2, 3, 2, cs, cl, sizes))


def test_raw_op_gradcheck(isa):
    feats, rois, scales, cs, cl = _raw_case()
    levels = tvo.poolers.LevelMapper(k_min=2, k_max=3, canonical_scale=cs, canonical_level=cl)([rois[:, 1:]])
    assert set(levels.tolist()) == {0, 1}
    leaves = [t.clone().requires_grad_() for t in feats]
    fn = lambda a, b: RAW.multi_scale_roi_align([a, b], rois, scales, 2, 3, 2, cs, cl)  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(leaves))
    assert torch.autograd.gradgradcheck(fn, tuple(leaves))
