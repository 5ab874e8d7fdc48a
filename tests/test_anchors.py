"""AnchorGenerator, grid_anchors and single_level_anchors: exact parity with torchvision's AnchorGenerator,
float64 loop references, the per-(sizes, strides, dtype, device) cache, opcheck and bad input.

Tests of the kernels take the ``isa`` fixture and so run at every CPU instruction-set level the machine
supports.
"""

import math

import numpy as np
import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

import pydet_ops as ops
from conftest import assert_bitwise_equal

RAW = torch.ops.pydet_ops

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

FPN_SIZES = ((32,), (64,), (128,), (256,), (512,))
FPN_RATIOS = ((0.5, 1.0, 2.0),) * 5


def _image_list(n, height, width, dtype=torch.float32, sizes=None):
    """A padded batch of ``n`` images of ``height x width``; the unpadded sizes vary per image."""
    if sizes is None:
        sizes = [(max(1, height - 7 * i), max(1, width - 3 * i)) for i in range(n)]
    return ImageList(torch.zeros(n, 3, height, width, dtype=dtype), sizes)


def _feature_maps(shapes, n=1, dtype=torch.float32, channels=2):
    return [torch.zeros(n, channels, h, w, dtype=dtype) for h, w in shapes]


def _fpn_shapes(height, width, levels=5):
    # The strides of an FPN backbone (4, 8, ..., 64) with ceil division, as a ResNet would produce.
    return [(math.ceil(height / 2 ** (2 + i)), math.ceil(width / 2 ** (2 + i))) for i in range(levels)]


def _both(sizes, ratios):
    return ops.AnchorGenerator(sizes, ratios), TVAnchorGenerator(sizes, ratios)


def _assert_same_anchors(ours, theirs):
    assert isinstance(ours, list) and len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device
        assert torch.equal(a, b), (a - b).abs().max()


# (name, sizes, aspect_ratios, image (H, W), feature map shapes, batch size)
CONFIGS = [
    ("fpn-800x1216", FPN_SIZES, FPN_RATIOS, (800, 1216), _fpn_shapes(800, 1216), 2),
    ("fpn-non-divisible", FPN_SIZES, FPN_RATIOS, (333, 517), _fpn_shapes(333, 517), 1),
    ("single-level-3-sizes", ((128, 256, 512),), ((0.5, 1.0, 2.0),), (600, 1000), [(38, 63)], 2),
    ("flat-sizes-and-ratios", (32, 64, 128), (0.5, 1.0, 2.0), (256, 320), [(32, 40), (16, 20), (8, 10)], 1),
    (
        "mixed-anchors-per-level",
        ((16, 24), (48,), (96, 128, 160)),
        ((0.5, 1.0, 2.0), (1.0,), (0.25, 0.7, 1.3, 4.0)),
        (123, 271),
        [(31, 68), (16, 34), (4, 9)],
        3,
    ),
    ("non-square-not-divisible", ((20, 45.5),), ((0.33, 1.0, 3.1),), (97, 203), [(13, 7)], 2),
    ("one-by-one-maps", ((64,), (200,)), ((0.5, 1.0, 2.0),) * 2, (64, 96), [(1, 1), (1, 1)], 2),
    ("feature-larger-than-image", ((8,),), ((1.0,),), (10, 12), [(20, 30)], 1),
    ("many-images", ((32, 64),), ((0.5, 2.0),), (64, 64), [(8, 8)], 7),
]


@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_forward_equals_torchvision(isa, config):
    _, sizes, ratios, (height, width), shapes, n = config
    ours_gen, tv_gen = _both(sizes, ratios)
    images = _image_list(n, height, width)
    features = _feature_maps(shapes, n)
    ours = ours_gen(images, features)
    theirs = tv_gen(images, features)
    assert len(ours) == n
    _assert_same_anchors(ours, theirs)
    expected_rows = sum(h * w * k for (h, w), k in zip(shapes, tv_gen.num_anchors_per_location()))
    assert ours[0].shape == (expected_rows, 4)
    # A second call (served from the cache) gives the same anchors.
    _assert_same_anchors(ours_gen(images, features), theirs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[4], CONFIGS[6]], ids=[CONFIGS[i][0] for i in (1, 4, 6)])
def test_forward_every_dtype(isa, dtype, config):
    _, sizes, ratios, (height, width), shapes, n = config
    ours_gen, tv_gen = _both(sizes, ratios)
    # The image tensor's dtype does not matter, the feature maps' does.
    images = _image_list(n, height, width, dtype=torch.float32)
    features = _feature_maps(shapes, n, dtype=dtype)
    ours = ours_gen(images, features)
    theirs = tv_gen(images, features)
    assert ours[0].dtype == dtype
    _assert_same_anchors(ours, theirs)


def test_large_coordinates_in_reduced_precision():
    # Shifts well beyond the exactly representable integers of float16 (2048) and bfloat16 (256).
    sizes, ratios = ((37, 300),), ((0.6, 1.7),)
    images = _image_list(1, 6000, 9000)
    for dtype in (torch.float16, torch.bfloat16):
        ours_gen, tv_gen = _both(sizes, ratios)
        features = _feature_maps([(40, 50)], dtype=dtype)
        _assert_same_anchors(ours_gen(images, features), tv_gen(images, features))


def test_dtype_sequence_matches_torchvision():
    # Switching the feature maps' dtype back and forth (cell anchors exactly representable in every dtype
    # used, cached and fresh entries alike) gives torchvision's anchors at every call.
    sizes, ratios = ((23, 100, 200),), ((0.5, 1.0, 2.0),)  # every cell coordinate below 256
    ours_gen, tv_gen = _both(sizes, ratios)
    images = _image_list(2, 64, 80)
    for dtype in (torch.float32, torch.float16, torch.float32, torch.bfloat16, torch.float64, torch.float32):
        features = _feature_maps([(4, 5)], 2, dtype=dtype)
        out = ours_gen(images, features)
        assert out[0].dtype == dtype
        _assert_same_anchors(out, tv_gen(images, features))


# ---------------------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_generate_anchors_equals_torchvision(dtype):
    ours_gen, tv_gen = _both(FPN_SIZES, FPN_RATIOS)
    for scales, ratios in [
        ((32,), (0.5, 1.0, 2.0)),
        ((128, 256, 512), (0.5, 1.0, 2.0)),
        ((16, 45.5, 90.25), (0.1, 0.33, 1.0, 3.0, 7.5)),
        ([1], [1.0]),
    ]:
        ours = ours_gen.generate_anchors(list(scales), list(ratios), dtype=dtype)
        theirs = tv_gen.generate_anchors(list(scales), list(ratios), dtype=dtype)
        assert_bitwise_equal(ours, theirs)
        assert ours.shape == (len(scales) * len(ratios), 4)


@pytest.mark.parametrize(
    "sizes,ratios",
    [(FPN_SIZES, FPN_RATIOS), (((128, 256, 512),), ((0.5, 1.0, 2.0),)), ((16, 32), (1.0, 2.0))],
)
def test_cell_anchors_and_num_anchors_per_location(sizes, ratios):
    ours_gen, tv_gen = _both(sizes, ratios)
    assert ours_gen.num_anchors_per_location() == tv_gen.num_anchors_per_location()
    assert len(ours_gen.cell_anchors) == len(tv_gen.cell_anchors)
    for a, b in zip(ours_gen.cell_anchors, tv_gen.cell_anchors):
        assert_bitwise_equal(a, b)


def test_num_anchors_per_location_values():
    assert ops.AnchorGenerator(FPN_SIZES, FPN_RATIOS).num_anchors_per_location() == [3] * 5
    gen = ops.AnchorGenerator(((16, 24), (48,)), ((0.5, 1.0, 2.0), (0.25, 4.0)))
    assert gen.num_anchors_per_location() == [6, 2]
    assert ops.AnchorGenerator().num_anchors_per_location() == [9]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
def test_grid_anchors_method_equals_torchvision(isa, dtype):
    sizes = ((16, 24), (48,), (96, 128, 160))
    ratios = ((0.5, 1.0, 2.0), (1.0,), (0.25, 0.7, 1.3, 4.0))
    ours_gen, tv_gen = _both(sizes, ratios)
    ours_gen.set_cell_anchors(dtype, torch.device("cpu"))
    tv_gen.set_cell_anchors(dtype, torch.device("cpu"))
    grid_sizes = [[31, 68], [16, 34], [1, 9]]
    strides = [[torch.tensor(4), torch.tensor(3)], [torch.tensor(8), torch.tensor(7)], [torch.tensor(123), 30]]
    ours = ours_gen.grid_anchors(grid_sizes, strides)
    theirs = tv_gen.grid_anchors(grid_sizes, strides)
    assert len(ours) == 3
    _assert_same_anchors(ours, theirs)
    # torch.Size grid sizes (what forward passes) work as well.
    ours = ours_gen.grid_anchors([torch.Size(g) for g in grid_sizes], strides)
    _assert_same_anchors(ours, theirs)


def test_module_function_grid_anchors_with_offset(isa):
    cells = [torch.tensor([[-2.0, -3.0, 2.0, 3.0], [-5.5, -1.0, 5.5, 1.0]]), torch.tensor([[-8.0, -8.0, 8.0, 8.0]])]
    grid_sizes = [(3, 4), (2, 1)]
    strides = [(5, 6), (10, 12)]
    for offset in (0.0, 2.5, -1.25):
        out = ops.grid_anchors(cells, grid_sizes, strides, offset=offset)
        expected = []
        for cell, (gh, gw), (sy, sx) in zip(cells, grid_sizes, strides):
            for y in range(gh):
                for x in range(gw):
                    shift_x, shift_y = x * sx + offset, y * sy + offset
                    for c in cell.tolist():
                        expected.append([shift_x + c[0], shift_y + c[1], shift_x + c[2], shift_y + c[3]])
        assert_bitwise_equal(out, torch.tensor(expected, dtype=torch.float32))


def test_set_cell_anchors_and_assignment_follow_torchvision():
    ours_gen, tv_gen = _both(((32, 64),), ((0.5, 1.0),))
    images = _image_list(1, 128, 128)
    features = _feature_maps([(8, 8)])
    _assert_same_anchors(ours_gen(images, features), tv_gen(images, features))
    # Replacing the cell anchors invalidates whatever was cached for the old ones.
    new_cells = [torch.tensor([[-1.0, -2.0, 3.0, 4.0]])]
    ours_gen.cell_anchors = [c.clone() for c in new_cells]
    tv_gen.cell_anchors = [c.clone() for c in new_cells]
    ours = ours_gen(images, features)
    _assert_same_anchors(ours, tv_gen(images, features))
    assert ours[0].shape == (64, 4)
    ours_gen.set_cell_anchors(torch.float64, torch.device("cpu"))
    assert ours_gen.cell_anchors[0].dtype == torch.float64


# ---------------------------------------------------------------------------------------------------------
# Per-image tensors and the cache
# ---------------------------------------------------------------------------------------------------------


def test_per_image_tensors_are_distinct_and_cache_is_not_poisoned():
    ours_gen, tv_gen = _both(FPN_SIZES[:2], FPN_RATIOS[:2])
    images = _image_list(3, 64, 64)
    features = _feature_maps([(16, 16), (8, 8)], 3)
    reference = tv_gen(images, features)
    first = ours_gen(images, features)
    assert len({id(t) for t in first}) == 3
    assert len({t.data_ptr() for t in first}) == 3
    first[0].add_(1000.0)
    first[1].zero_()
    assert torch.equal(first[2], reference[2])  # the images do not share storage
    second = ours_gen(images, features)
    _assert_same_anchors(second, reference)
    for t in second:
        assert all(t.data_ptr() != f.data_ptr() for f in first)
    # Also for the float64 entry.
    f64 = _feature_maps([(16, 16), (8, 8)], 3, dtype=torch.float64)
    out = ours_gen(images, f64)
    out[0].mul_(-1)
    _assert_same_anchors(ours_gen(images, f64), tv_gen(images, f64))


def test_cache_keyed_by_dtype():
    sizes, ratios = FPN_SIZES[:3], FPN_RATIOS[:3]
    ours_gen = ops.AnchorGenerator(sizes, ratios)
    images = _image_list(2, 96, 128)
    shapes = [(24, 32), (12, 16), (6, 8)]
    f32 = ours_gen(images, _feature_maps(shapes, 2, dtype=torch.float32))
    f64 = ours_gen(images, _feature_maps(shapes, 2, dtype=torch.float64))
    assert f32[0].dtype == torch.float32 and f64[0].dtype == torch.float64
    _assert_same_anchors(f64, TVAnchorGenerator(sizes, ratios)(images, _feature_maps(shapes, 2, torch.float64)))
    f32_again = ours_gen(images, _feature_maps(shapes, 2, dtype=torch.float32))
    _assert_same_anchors(f32_again, TVAnchorGenerator(sizes, ratios)(images, _feature_maps(shapes, 2)))
    assert torch.equal(f32_again[0].double(), f64[0])


def test_cache_keyed_by_grid_size_and_stride():
    ours_gen = ops.AnchorGenerator(((32, 64),), ((0.5, 1.0, 2.0),))
    tv_gen = TVAnchorGenerator(((32, 64),), ((0.5, 1.0, 2.0),))
    calls = [
        ((160, 160), (10, 10)),
        ((320, 320), (10, 10)),  # same grid, other stride
        ((160, 160), (20, 20)),  # same image, other grid
        ((160, 320), (10, 10)),
        ((160, 160), (10, 10)),  # back to the first
    ]
    results = []
    for (h, w), shape in calls:
        images = _image_list(1, h, w)
        features = _feature_maps([shape])
        out = ours_gen(images, features)
        _assert_same_anchors(out, tv_gen(images, features))
        results.append(out[0])
    assert not torch.equal(results[0], results[1])
    assert results[0].shape != results[2].shape
    assert not torch.equal(results[0], results[3])
    assert torch.equal(results[0], results[4])


def test_cache_eviction_keeps_results_correct():
    ours_gen, tv_gen = _both(((16,),), ((1.0, 2.0),))
    sizes = [(32 + 4 * i, 40 + 4 * i) for i in range(20)]
    for _ in range(2):
        for h, w in sizes:
            images = _image_list(1, h, w)
            features = _feature_maps([(h // 4, w // 4)])
            _assert_same_anchors(ours_gen(images, features), tv_gen(images, features))


# ---------------------------------------------------------------------------------------------------------
# Float64 reference
# ---------------------------------------------------------------------------------------------------------


def _reference_anchors(sizes, ratios, image_hw, shapes):
    """torchvision's anchors written out with Python loops in float64."""
    rows = []
    for level_sizes, level_ratios, (fh, fw) in zip(sizes, ratios, shapes):
        stride_y, stride_x = image_hw[0] // fh, image_hw[1] // fw
        cells = []
        for r in level_ratios:  # aspect ratio major, size minor; ratio = height / width
            for s in level_sizes:
                half_w = s / math.sqrt(r) / 2
                half_h = s * math.sqrt(r) / 2
                cells.append((round(-half_w), round(-half_h), round(half_w), round(half_h)))
        for y in range(fh):
            for x in range(fw):
                for c in cells:
                    rows.append((x * stride_x + c[0], y * stride_y + c[1], x * stride_x + c[2], y * stride_y + c[3]))
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize(
    "sizes,ratios,image_hw,shapes",
    [
        (((32, 64), (128,)), ((0.5, 1.0, 2.0), (0.5, 1.0, 2.0)), (100, 150), [(12, 19), (6, 9)]),
        (((17, 90),), ((0.3, 3.0),), (71, 53), [(5, 3)]),
        (((40,),), ((1.0,),), (31, 29), [(1, 1)]),
    ],
)
def test_float64_loop_reference(isa, sizes, ratios, image_hw, shapes):
    gen = ops.AnchorGenerator(sizes, ratios)
    images = _image_list(2, *image_hw)
    for dtype in (torch.float64, torch.float32):
        out = gen(images, _feature_maps(shapes, 2, dtype=dtype))
        expected = _reference_anchors(sizes, ratios, image_hw, shapes)
        for t in out:
            assert_bitwise_equal(t, expected.to(dtype))


# ---------------------------------------------------------------------------------------------------------
# single_level_anchors
# ---------------------------------------------------------------------------------------------------------


def _single_level_loop(height, width, stride, scales, ratios):
    """The original Faster R-CNN anchors, one float32 scalar operation at a time."""
    f = np.float32
    rows = []
    for y in range(height):
        for x in range(width):
            cx = f(stride / 2 + x * stride)
            cy = f(stride / 2 + y * stride)
            for s in scales:  # scale major
                for r in ratios:
                    w = f(f(stride * s) * np.sqrt(f(r)))
                    h = f(f(stride * s) * np.sqrt(f(f(1) / f(r))))
                    rows.append((cx - w / f(2), cy - h / f(2), cx + w / f(2), cy + h / f(2)))
    return torch.from_numpy(np.array(rows, dtype=np.float32).reshape(-1, 4))


@pytest.mark.parametrize(
    "feature_size,stride,scales,ratios",
    [
        ((7, 9), 16, (8, 16, 32), (0.5, 1.0, 2.0)),
        ((3, 5), 10, (1.5, 7.0), (0.3, 1.0, 3.3)),
        ((1, 1), 32, (4,), (1.0,)),
        ((4, 2), 7, (2.5, 3.0, 11.0), (0.75,)),
    ],
)
def test_single_level_anchors_float32_loop(isa, feature_size, stride, scales, ratios):
    out = ops.single_level_anchors(feature_size, stride=stride, scales=scales, aspect_ratios=ratios)
    expected = _single_level_loop(*feature_size, stride, scales, ratios)
    assert out.dtype == torch.float32
    assert out.shape == (feature_size[0] * feature_size[1] * len(scales) * len(ratios), 4)
    torch.testing.assert_close(out, expected, rtol=2 * torch.finfo(torch.float32).eps, atol=1e-5)
    assert (out == expected).float().mean() > 0.99


def test_single_level_anchors_defaults():
    out = ops.single_level_anchors((50, 50))
    assert out.shape == (22500, 4) and out.dtype == torch.float32 and out.device.type == "cpu"
    # The first location is centred at (8, 8); its anchors are 128, 256 and 512 pixels (square ones).
    centres = (out[:, :2] + out[:, 2:]) / 2
    torch.testing.assert_close(centres[:9], torch.full((9, 2), 8.0))
    widths, heights = out[:9, 2] - out[:9, 0], out[:9, 3] - out[:9, 1]
    torch.testing.assert_close(widths * heights, torch.tensor([128.0, 256.0, 512.0]).repeat_interleave(3) ** 2)
    square = widths[1::3]
    torch.testing.assert_close(square, torch.tensor([128.0, 256.0, 512.0]))
    # Ratio is width / height.
    torch.testing.assert_close(widths[0::3] / heights[0::3], torch.full((3,), 0.5))
    torch.testing.assert_close(widths[2::3] / heights[2::3], torch.full((3,), 2.0))
    # Last location: (49, 49) centred at (792, 792); location-major order.
    torch.testing.assert_close(centres[-9:], torch.full((9, 2), 792.0))
    torch.testing.assert_close(centres[9], torch.tensor([24.0, 8.0]))  # (y=0, x=1)
    torch.testing.assert_close(centres[9 * 50], torch.tensor([8.0, 24.0]))  # (y=1, x=0)
    assert ops.single_level_anchors((38, 63)).shape == (38 * 63 * 9, 4)
    assert ops.single_level_anchors((0, 5)).shape == (0, 4)


def test_single_level_anchors_float64_formula():
    h, w, stride = 6, 4, 16
    out = ops.single_level_anchors((h, w), stride=stride, dtype=torch.float64)
    assert out.dtype == torch.float64
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    cx = (stride / 2 + xs * stride).reshape(-1, 1)
    cy = (stride / 2 + ys * stride).reshape(-1, 1)
    scale = torch.tensor([8.0, 16.0, 32.0], dtype=torch.float64).repeat_interleave(3)
    ratio = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64).repeat(3)
    bw = (stride * scale * ratio.sqrt()).reshape(1, -1)
    bh = (stride * scale * (1 / ratio).sqrt()).reshape(1, -1)
    expected = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1).reshape(-1, 4)
    # The cell sizes are computed in float32 first.
    torch.testing.assert_close(out, expected, rtol=2e-7, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_single_level_anchors_dtype_and_device(dtype):
    out = ops.single_level_anchors((5, 6), stride=8, dtype=dtype, device=torch.device("cpu"))
    assert out.dtype == dtype and out.device == torch.device("cpu") and out.shape == (270, 4)
    reference = ops.single_level_anchors((5, 6), stride=8)
    # The anchors are at most 181 pixels from their centre: within an ulp or two of that magnitude.
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out.float(), reference, rtol=eps, atol=256 * eps)
    if dtype == torch.float32:
        assert torch.equal(out, reference)
    elif dtype == torch.float64:
        torch.testing.assert_close(out, reference.double(), rtol=0, atol=1e-4)
    meta = ops.single_level_anchors((5, 6), stride=8, dtype=dtype, device="meta")
    assert meta.device.type == "meta" and meta.shape == (270, 4) and meta.dtype == dtype


def test_single_level_anchors_bad_input():
    with pytest.raises(ValueError, match="feature_size"):
        ops.single_level_anchors((-1, 4))
    with pytest.raises(ValueError, match="stride"):
        ops.single_level_anchors((4, 4), stride=0)
    with pytest.raises(ValueError, match="scales"):
        ops.single_level_anchors((4, 4), scales=(8, -16))
    with pytest.raises(ValueError, match="aspect_ratios"):
        ops.single_level_anchors((4, 4), aspect_ratios=(float("nan"),))


# ---------------------------------------------------------------------------------------------------------
# opcheck
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_opcheck_grid_anchors(dtype):
    g = torch.Generator().manual_seed(0)
    cells = (torch.randn(5, 4, generator=g, dtype=torch.float64) * 20).round().to(dtype)
    torch.library.opcheck(RAW.grid_anchors.default, (cells, [3, 2], [4, 5, 2, 3], [8, 8, 16, 16], 0.0))
    torch.library.opcheck(RAW.grid_anchors.default, (cells, [5], [1, 1], [32, 16], 4.5))
    torch.library.opcheck(RAW.grid_anchors.default, (cells[:2], [2, 0], [0, 3, 7, 7], [4, 4, 0, 0], 0.0))


def test_raw_grid_anchors_values():
    cells = torch.tensor([[-1.0, -2.0, 1.0, 2.0], [-3.0, -3.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    out = RAW.grid_anchors(cells, [2, 1], [1, 2, 2, 1], [10, 20, 5, 7], 0.5)
    expected = torch.tensor(
        [
            [-0.5, -1.5, 1.5, 2.5],
            [-2.5, -2.5, 3.5, 3.5],
            [19.5, -1.5, 21.5, 2.5],
            [17.5, -2.5, 23.5, 3.5],
            [0.5, 0.5, 0.5, 0.5],
            [0.5, 5.5, 0.5, 5.5],
        ]
    )
    assert_bitwise_equal(out, expected)


# ---------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------


def test_sizes_and_ratios_level_mismatch():
    with pytest.raises(ValueError, match=r"sizes.*aspect_ratios|aspect_ratios.*sizes") as info:
        ops.AnchorGenerator(((32,), (64,)), ((0.5, 1.0), (1.0,), (2.0,)))
    assert "sizes" in str(info.value) and "aspect_ratios" in str(info.value)


@pytest.mark.parametrize("levels,maps", [(5, 4), (5, 6), (1, 2), (3, 1)])
def test_feature_map_count_mismatch(levels, maps):
    gen = ops.AnchorGenerator(FPN_SIZES[:levels], FPN_RATIOS[:levels])
    images = _image_list(1, 64, 64)
    features = _feature_maps([(16 // 2**i, 16 // 2**i) for i in range(maps)])
    with pytest.raises(ValueError, match="feature maps") as info:
        gen(images, features)
    assert str(levels) in str(info.value)


@pytest.mark.parametrize(
    "sizes,ratios,what",
    [
        (((0,),), ((1.0,),), "sizes"),
        (((-32,),), ((1.0,),), "sizes"),
        (((float("nan"),),), ((1.0,),), "sizes"),
        (((float("inf"),),), ((1.0,),), "sizes"),
        (((32,),), ((0.0,),), "aspect_ratios"),
        (((32,),), ((-1.0,),), "aspect_ratios"),
        (((32,),), ((float("nan"),),), "aspect_ratios"),
        (((32,),), ((float("inf"),),), "aspect_ratios"),
        (((32,), (64, -1)), ((1.0,), (1.0,)), "sizes"),
    ],
)
def test_non_positive_or_non_finite_sizes_and_ratios(sizes, ratios, what):
    with pytest.raises(ValueError, match=what):
        ops.AnchorGenerator(sizes, ratios)


def _cells(n=3, dtype=torch.float32):
    return torch.arange(4 * n, dtype=dtype).reshape(n, 4)


@pytest.mark.parametrize(
    "args,match",
    [
        ((_cells(3), [2, 2], [2, 2, 2, 2], [4, 4, 4, 4], 0.0), r"anchors_per_level sums to 4.*3 rows"),
        ((_cells(3), [1], [2, 2], [4, 4], 0.0), r"anchors_per_level sums to 1"),
        ((_cells(3), [2, 1], [2, 2, 2], [4, 4, 4, 4], 0.0), r"grid_sizes"),
        ((_cells(3), [2, 1], [2, 2, 2, 2, 2, 2], [4, 4, 4, 4], 0.0), r"grid_sizes"),
        ((_cells(3), [3], [2, 2], [4], 0.0), r"strides"),
        ((_cells(3), [3], [-1, 2], [4, 4], 0.0), r"grid_sizes must be non-negative"),
        ((_cells(3), [3], [2, -2], [4, 4], 0.0), r"grid_sizes must be non-negative"),
        ((_cells(3), [3], [2, 2], [-4, 4], 0.0), r"strides must be non-negative"),
        ((_cells(3), [3], [2, 2], [4, -1], 0.0), r"strides must be non-negative"),
        ((_cells(3), [-1, 4], [2, 2, 2, 2], [4, 4, 4, 4], 0.0), r"anchors_per_level must be non-negative"),
        ((torch.zeros(12), [3], [2, 2], [4, 4], 0.0), r"cell_anchors must be a tensor of shape \[A, 4\]"),
        ((torch.zeros(1, 3, 4), [3], [2, 2], [4, 4], 0.0), r"cell_anchors must be a tensor of shape \[A, 4\]"),
        ((torch.zeros(3, 5), [3], [2, 2], [4, 4], 0.0), r"cell_anchors must be a tensor of shape \[A, 4\]"),
        ((_cells(3, torch.int64), [3], [2, 2], [4, 4], 0.0), r"cell_anchors must be a floating-point"),
        ((_cells(3, torch.int32), [3], [2, 2], [4, 4], 0.0), r"cell_anchors must be a floating-point"),
        ((_cells(3), [3], [2, 2], [4, 4], float("nan")), r"offset must be finite"),
    ],
    ids=[
        "sum-too-large",
        "sum-too-small",
        "grid-sizes-too-short",
        "grid-sizes-too-long",
        "strides-wrong-length",
        "negative-grid-height",
        "negative-grid-width",
        "negative-stride-y",
        "negative-stride-x",
        "negative-anchors-per-level",
        "cells-1d",
        "cells-3d",
        "cells-5-columns",
        "cells-int64",
        "cells-int32",
        "offset-nan",
    ],
)
def test_raw_grid_anchors_bad_input(args, match):
    with pytest.raises(RuntimeError, match=match):
        RAW.grid_anchors(*args)


def test_grid_anchors_function_bad_input():
    with pytest.raises(ValueError, match="levels"):
        ops.grid_anchors([_cells(2)], [(2, 2), (1, 1)], [(4, 4)])
    with pytest.raises(ValueError, match="at least one level"):
        ops.grid_anchors([], [], [])
    gen = ops.AnchorGenerator(FPN_SIZES[:2], FPN_RATIOS[:2])
    with pytest.raises(ValueError, match="grid sizes"):
        gen.grid_anchors([[4, 4]], [[4, 4]])
    with pytest.raises(ValueError, match="strides"):
        gen.grid_anchors([[4, 4], [2, 2]], [[4, 4]])


def test_lossy_dtype_never_degrades_later_calls():
    # A cell anchor at 2251 is not a float16 number (float16 steps by 2 between 2048 and 4096). torchvision
    # converts its cell anchors in place, so after a float16 call its float32 anchors say 2252; here every
    # dtype is converted from the cell anchors as built, cached or not (a documented difference).
    gen = ops.AnchorGenerator(((4502,),), ((1.0,),))
    images = _image_list(1, 64, 64)
    first = gen(images, _feature_maps([(1, 1)], 1, dtype=torch.float32))[0]
    half = gen(images, _feature_maps([(1, 1)], 1, dtype=torch.float16))[0]
    again = gen(images, _feature_maps([(1, 1)], 1, dtype=torch.float32))[0]
    fresh = gen(images, _feature_maps([(1, 2)], 1, dtype=torch.float32))[0]  # a cache miss
    assert first[0, 2].item() == 2251 and half[0, 2].item() == 2252
    assert torch.equal(first, again)
    assert torch.equal(fresh[:1], first)
