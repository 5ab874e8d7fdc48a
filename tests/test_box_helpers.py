"""Elementwise helpers: box_area, box_convert, clip_boxes_to_image, remove_small_boxes vs torchvision.ops."""

import itertools

import pytest
import torch
import torchvision.ops as tvo
from hypothesis import given, settings
from hypothesis import strategies as st

import pydet_ops as ops
from conftest import assert_bitwise_equal, crafted_box_sets, uniform_boxes

FMTS = ("xyxy", "xywh", "cxcywh")
DTYPES = [
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
]
SHAPES = [(4,), (0, 4), (11, 4), (3, 7, 4), (2, 1, 5, 4)]


def _dtype_id(d):
    return str(d).replace("torch.", "")


def make_boxes(shape, dtype, seed=0):
    """xyxy boxes of the given shape; small whole numbers so that every dtype can hold them."""
    count = max(1, torch.Size(shape[:-1]).numel())
    boxes = uniform_boxes(count, seed=seed, img=60.0, lo=1.0, hi=40.0, integer=not dtype.is_floating_point)
    if dtype.is_floating_point:
        boxes = boxes.double()
    return boxes[: torch.Size(shape[:-1]).numel()].reshape(shape).to(dtype)


def assert_same(ours, theirs):
    assert ours.dtype == theirs.dtype, (ours.dtype, theirs.dtype)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)


# ---------------------------------------------------------------------------------------------------------
# box_area
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_box_area_matches_torchvision(fmt, dtype, shape):
    boxes = make_boxes(shape, dtype, seed=1)  # read as (x, y, w, h) / (cx, cy, w, h) for the other formats
    assert_same(ops.box_area(boxes, fmt=fmt), tvo.box_area(boxes, fmt=fmt))


@pytest.mark.parametrize("name", ["identical", "negative", "large", "inverted", "zero_size", "mixed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_area_crafted_matches_torchvision(name, dtype):
    boxes = crafted_box_sets(dtype)[name]
    area = ops.box_area(boxes)
    assert_same(area, tvo.box_area(boxes))
    if name == "inverted":
        assert (area[0::4] < 0).all() and (area[1::4] < 0).all() and (area[2::4] > 0).all()
    if name == "zero_size":
        assert (area == 0).all()


def test_box_area_nan_and_inf():
    boxes = uniform_boxes(6, seed=2)
    boxes[1, 0] = float("nan")
    boxes[2, 2] = float("inf")
    boxes[3] = torch.tensor([float("inf"), 0.0, float("inf"), 1.0])
    area = ops.box_area(boxes)
    assert_same(area, tvo.box_area(boxes))
    assert area[1].isnan() and area[2].isinf() and area[3].isnan()


# ---------------------------------------------------------------------------------------------------------
# box_convert
# ---------------------------------------------------------------------------------------------------------

ALL_PAIRS = list(itertools.product(FMTS, FMTS))


@pytest.mark.parametrize("in_fmt,out_fmt", ALL_PAIRS, ids=lambda f: f)
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_box_convert_matches_torchvision(in_fmt, out_fmt, dtype, shape):
    boxes = make_boxes(shape, dtype, seed=3)
    ours = ops.box_convert(boxes, in_fmt, out_fmt)
    assert_same(ours, tvo.box_convert(boxes, in_fmt, out_fmt))


@pytest.mark.parametrize("in_fmt,out_fmt", ALL_PAIRS, ids=lambda f: f)
def test_box_convert_random_floats_and_non_finite(in_fmt, out_fmt):
    boxes = uniform_boxes(50, seed=4)
    boxes[0, 0] = float("nan")
    boxes[1, 3] = float("inf")
    boxes[2, 2] = float("-inf")
    assert_same(ops.box_convert(boxes, in_fmt, out_fmt), tvo.box_convert(boxes, in_fmt, out_fmt))
    strided = torch.stack([boxes, boxes], dim=-1)[..., 1]  # non-contiguous view
    assert not strided.is_contiguous()
    assert_same(ops.box_convert(strided, in_fmt, out_fmt), tvo.box_convert(boxes, in_fmt, out_fmt))


@pytest.mark.parametrize("fmt", FMTS)
def test_box_convert_same_format_returns_a_copy(fmt):
    boxes = uniform_boxes(5, seed=5)
    out = ops.box_convert(boxes, fmt, fmt)
    assert torch.equal(out, boxes)
    assert out.data_ptr() != boxes.data_ptr()
    out[0, 0] = -1.0
    assert boxes[0, 0] != -1.0


@settings(max_examples=40, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(0, 30),
    fmt=st.sampled_from(FMTS),
)
def test_box_convert_round_trip(seed, n, fmt):
    boxes = uniform_boxes(n, seed=seed, img=1e3, lo=0.0, hi=500.0, dtype=torch.float64)
    there = ops.box_convert(boxes, "xyxy", fmt)
    back = ops.box_convert(there, fmt, "xyxy")
    torch.testing.assert_close(back, boxes, rtol=1e-12, atol=1e-9)
    assert_same(there, tvo.box_convert(boxes, "xyxy", fmt))


# ---------------------------------------------------------------------------------------------------------
# clip_boxes_to_image
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("size", [(30, 50), (50, 30), (1, 1), (0, 0), (100, 100)], ids=str)
def test_clip_boxes_matches_torchvision(dtype, shape, size):
    boxes = make_boxes(shape, dtype, seed=6)
    if dtype.is_signed or dtype.is_floating_point:
        boxes = boxes - 10  # some negative coordinates
    ours = ops.clip_boxes_to_image(boxes, size)
    assert_same(ours, tvo.clip_boxes_to_image(boxes, size))
    if ours.numel():
        height, width = size
        assert (ours[..., 0::2] >= 0).all() and (ours[..., 0::2] <= width).all()
        assert (ours[..., 1::2] >= 0).all() and (ours[..., 1::2] <= height).all()


def test_clip_boxes_nan_stays_nan_and_inf_is_clipped():
    boxes = uniform_boxes(5, seed=7) - 20
    boxes[0, 1] = float("nan")
    boxes[1, 2] = float("inf")
    boxes[2, 0] = float("-inf")
    ours = ops.clip_boxes_to_image(boxes, (40, 60))
    assert_same(ours, tvo.clip_boxes_to_image(boxes, (40, 60)))
    assert ours[0, 1].isnan()
    assert ours[1, 2] == 60 and ours[2, 0] == 0


def test_clip_boxes_non_contiguous_and_does_not_modify_input():
    boxes = uniform_boxes(8, seed=8, img=200.0)
    original = boxes.clone()
    strided = boxes.t().contiguous().t()
    ours = ops.clip_boxes_to_image(strided, (100, 120))
    assert_same(ours, tvo.clip_boxes_to_image(boxes, (100, 120)))
    assert torch.equal(boxes, original)


# ---------------------------------------------------------------------------------------------------------
# remove_small_boxes
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
# Tensor[N, 4] only: for a [..., N, 4] input torchvision returns indices along dim 0 alone, which address no
# box; pydet_ops raises instead (tests/test_bad_inputs.py, remove_small_boxes-boxes-3d).
@pytest.mark.parametrize("shape", [(0, 4), (11, 4), (40, 4)], ids=str)
@pytest.mark.parametrize("min_size", [0.0, 1.0, 5.5, 20.0, 1e9, -1.0])
def test_remove_small_boxes_matches_torchvision(dtype, shape, min_size):
    boxes = make_boxes(shape, dtype, seed=9)
    ours = ops.remove_small_boxes(boxes, min_size)
    assert_same(ours, tvo.remove_small_boxes(boxes, min_size))
    assert ours.dtype == torch.int64


def test_remove_small_boxes_nan_inverted_and_exact_size():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # kept
            [0.0, 0.0, 2.0, 10.0],  # too narrow
            [0.0, float("nan"), 10.0, 10.0],  # NaN height: removed
            [10.0, 0.0, 0.0, 10.0],  # inverted: negative width, removed
            [0.0, 0.0, 3.0, 3.0],  # exactly min_size: kept
            [0.0, 0.0, float("inf"), 5.0],  # infinite width: kept
        ]
    )
    ours = ops.remove_small_boxes(boxes, 3.0)
    assert_same(ours, tvo.remove_small_boxes(boxes, 3.0))
    assert ours.tolist() == [0, 4, 5]
    assert_bitwise_equal(ops.remove_small_boxes(boxes, float("nan")), tvo.remove_small_boxes(boxes, float("nan")))
    assert ops.remove_small_boxes(boxes, float("nan")).numel() == 0
