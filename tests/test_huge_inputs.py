"""Huge inputs: NMS over 500,000 boxes, and the RoI ops on feature maps of more than 2^31 elements.

Each expected result comes from small independent computations, never from an O(N^2) or full-map reference:

* NMS: the boxes lie in 1000 tiles far apart, so no box overlaps a box of another tile and the greedy result
  over all boxes is the union of torchvision's result per tile, in the order (score descending, index
  ascending). Scores have many exact ties, inside tiles and across them.
* RoI ops: for each RoI, torchvision (and the float64 reference of ``roi_reference.py``) on a crop of the map
  around the RoI, the RoI shifted by the crop's origin. Crops keep a margin of pixels on every side that is
  not a map edge, and end at the edge where the RoI reaches it, so every sample sees the same border rules
  as on the whole map. RoI corners, bin sizes and sampling grids are chosen so that every sampling
  coordinate and bilinear weight is exact in float32 in both frames (multiples of 1/32 below 2^16, powers
  of two for the spatial scale and the adaptive grids): results agree bit for bit, not just closely.

Every RoI test asserts that its map has more than 2^31 elements and that the RoIs near the far corner read
only elements beyond offset 2^31. The maps are float16 / bfloat16 (4.4 to 4.6 GB); the gradient maps of the
backward tests are float32 (8.8 and 9.1 GB): the tests skip when the machine has less memory available.
Peak resident memory (VmHWM, reset before each test through /proc/self/clear_refs; the pytest process with
torch and torchvision imported holds about 0.7 GB of it) and run time were measured with 2 threads on a
2-core, 24 GiB machine shared with another CI job, running this file alone; they are given in each
docstring. The tests are marked ``huge``; the sanitizer run leaves them out.
"""

import gc
import math
import sys
import traceback

import pytest
import torch
import torchvision.ops as tvo
from torchvision.ops.boxes import _batched_nms_vanilla

import pydet_ops as ops
from conftest import SUPPORTED_ISAS, isa_level
from roi_reference import roi_align_reference, roi_pool_reference

pytestmark = pytest.mark.huge

RAW = torch.ops.pydet_ops
TWO_31 = 2**31
GIB = 2**30


def _require_available_memory(gib: float) -> None:
    """Skips the test when the machine has less than ``gib`` GiB of memory available (Linux only)."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return
    if available < gib * GIB:
        pytest.skip(f"needs about {gib} GiB of available memory, {available / GIB:.1f} GiB available")


@pytest.fixture(autouse=True)
def _release_memory():
    """After each test: drops what a failed test's frames still hold (pytest keeps the last traceback in
    sys.last_traceback, and with it the locals of every frame, possibly a 4 GB map) and pydet_ops' pool."""
    yield
    tb = getattr(sys, "last_traceback", None)
    if tb is not None:
        traceback.clear_frames(tb)
    gc.collect()
    ops.empty_cpu_cache()


# ---------------------------------------------------------------------------------------------------------
# NMS and batched NMS over 500,000 boxes
# ---------------------------------------------------------------------------------------------------------

N_TILES, PER_TILE = 1000, 500
TILE_COLUMNS, TILE_PITCH, TILE_EXTENT = 40, 1000.0, 300.0  # tiles 300 px wide, 700 px apart


def _tiled_boxes(seed, spread, size_lo, size_hi):
    """500 boxes in each of 1000 tiles, tiles interleaved in index order. Returns boxes, scores (30 % of
    them on a 1/256 lattice: exact ties inside tiles and across them) and ``members[t]``, the indices of
    tile t in ascending order."""
    g = torch.Generator().manual_seed(seed)
    n = N_TILES * PER_TILE
    tile_of = torch.randperm(n, generator=g) % N_TILES
    origin = torch.stack([tile_of % TILE_COLUMNS, tile_of // TILE_COLUMNS], dim=1).to(torch.float32) * TILE_PITCH
    xy = origin + torch.rand(n, 2, generator=g) * spread
    wh = size_lo + torch.rand(n, 2, generator=g) * (size_hi - size_lo)
    boxes = torch.cat([xy, xy + wh], dim=1)
    assert spread + size_hi <= TILE_EXTENT < TILE_PITCH
    assert bool((boxes[:, :2] >= origin).all()) and bool((boxes[:, 2:] <= origin + TILE_EXTENT).all())
    scores = torch.rand(n, generator=g)
    tied = torch.rand(n, generator=g) < 0.3
    scores[tied] = torch.floor(scores[tied] * 256) / 256
    members = torch.argsort(tile_of, stable=True).view(N_TILES, PER_TILE)
    assert bool((members[:, 1:] > members[:, :-1]).all())
    return boxes, scores, members


def _merged(kept_per_tile, scores):
    """The kept indices of all tiles, by descending score, ties by ascending index."""
    kept = torch.cat(kept_per_tile).sort().values
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]


def _assert_ties_matter(expected, scores, members):
    kept_scores = scores[expected]
    assert int((kept_scores[1:] == kept_scores[:-1]).sum()) > 1000  # tied runs in the expected order
    # ... and tied scores inside single tiles, where the tie-break decides which box suppresses which.
    tile_scores = scores[members].sort(dim=1).values
    assert int((tile_scores[:, 1:] == tile_scores[:, :-1]).any(dim=1).sum()) > N_TILES // 2


def test_nms_500k_boxes_in_separated_tiles():
    """nms over 500,000 boxes equals torchvision.ops.nms run on each of 1000 tiles, merged.

    Measured: about 2 s (1000 torchvision calls and one pydet_ops call per ISA level), peak resident memory
    0.8 GB.
    """
    boxes, scores, members = _tiled_boxes(seed=500, spread=150.0, size_lo=20.0, size_hi=100.0)
    threshold = 0.5
    expected = _merged([m[tvo.nms(boxes[m], scores[m], threshold)] for m in members], scores)
    assert 0.2 * boxes.shape[0] < expected.numel() < 0.8 * boxes.shape[0]
    _assert_ties_matter(expected, scores, members)
    for level in SUPPORTED_ISAS:
        with isa_level(level):
            keep = ops.nms(boxes, scores, threshold)
        assert keep.dtype == torch.int64
        assert torch.equal(keep, expected), level


def test_batched_nms_500k_boxes_80_classes_in_separated_tiles():
    """batched_nms over 500,000 boxes of 80 classes equals torchvision's per-class NMS on each tile, merged.

    The per-tile reference is torchvision's ``_batched_nms_vanilla`` (torchvision.ops.nms per class), which
    torchvision's own ``batched_nms`` uses for CPU inputs of more than 4000 boxes; its coordinate-offset path
    for smaller inputs shifts the boxes by class * (max coordinate + 1), which rounds float32 coordinates of
    this size and is not exact. Measured: 5 to 8 s (the 1000 per-tile torchvision calls loop over the
    classes in Python), peak resident memory 0.8 GB.
    """
    boxes, scores, members = _tiled_boxes(seed=501, spread=60.0, size_lo=60.0, size_hi=200.0)
    labels = torch.randint(0, 80, (boxes.shape[0],), generator=torch.Generator().manual_seed(502))
    threshold = 0.5
    expected = _merged([m[_batched_nms_vanilla(boxes[m], scores[m], labels[m], threshold)] for m in members], scores)
    # Dense tiles: boxes of one class and tile suppress each other often.
    assert 0.3 * boxes.shape[0] < expected.numel() < 0.9 * boxes.shape[0]
    _assert_ties_matter(expected, scores, members)
    for level in SUPPORTED_ISAS:
        with isa_level(level):
            keep = ops.batched_nms(boxes, scores, labels, threshold)
        assert keep.dtype == torch.int64
        assert torch.equal(keep, expected), level


# ---------------------------------------------------------------------------------------------------------
# RoI ops on maps of more than 2^31 elements
# ---------------------------------------------------------------------------------------------------------

POOLED = 7
# Bin sizes in feature-map pixels: multiples of 1/4 whose adaptive grid ceil(bin) is 1, 2 or 4.
BIN_SIZES = (0.75, 1.5, 2.0, 3.5, 4.0)
# NCHW [1, 1, 47000, 47000]: plane offsets pass 2^31 from row 45692 on. Channels_last [1, 3, 27500, 27500]:
# element offsets (y * W + x) * 3 + c pass 2^31 from row 26031 on.
NCHW_SHAPE, NCHW_SCALE = (1, 1, 47000, 47000), 0.5
CL_SHAPE, CL_SCALE = (1, 3, 27500, 27500), 0.25


def _first_row_beyond(shape, channels_last):
    """First row all of whose elements (of every channel) lie beyond offset 2^31."""
    _, c, _, w = shape
    row_elements = w * c if channels_last else w
    return TWO_31 // row_elements + 1


def _feature_rois(shape, channels_last, seed):
    """RoIs as (x1, y1, x2, y2) in feature-map pixels (multiples of 1/8, sides 7 bins of BIN_SIZES), with a
    tag: "far" (entirely in the rows beyond offset 2^31, near the far corner or anywhere along those rows,
    some crossing the bottom / right edges), "origin" (near the first element, some crossing the top / left
    edges) or "middle"."""
    _, _, h, w = shape
    far_row = _first_row_beyond(shape, channels_last)
    g = torch.Generator().manual_seed(seed)

    def pick(lo, hi):  # a multiple of 1/8 in [lo, hi]
        return lo + int(torch.randint(0, int((hi - lo) * 8) + 1, (1,), generator=g)) / 8

    def bins():
        return [BIN_SIZES[int(i)] for i in torch.randint(0, len(BIN_SIZES), (2,), generator=g)]

    def roi(x, y, bw, bh):
        return (x, y, x + POOLED * bw, y + POOLED * bh)

    rois = []
    for _ in range(4):  # near the far corner
        rois.append(("far", roi(pick(w - 1200, w - 40), pick(max(h - 1200, far_row + 8), h - 40), *bins())))
    for _ in range(2):  # anywhere along the far rows
        rois.append(("far", roi(pick(8, w - 40), pick(far_row + 8, h - 40), *bins())))
    rois += [
        ("far", roi(w - 3.25, h - 5.5, 1.5, 2.0)),  # crosses both far edges: samples beyond them read nothing
        ("far", roi(w - 5.75, h - 28.25, 0.75, 4.0)),  # ends within the last half pixel
        ("far", roi(w - 2.125, h - 2.125, 0.75, 0.75)),  # around the last element
        ("origin", roi(-2.5, -1.75, 1.5, 1.5)),  # crosses both near edges
        ("origin", roi(0.125, 0.375, 2.0, 0.75)),
        ("origin", roi(3.0, 5.5, 4.0, 3.5)),
        ("middle", roi(pick(w // 2, w // 2 + 100), pick(h // 3, h // 3 + 100), *bins())),
    ]
    return rois


def _crop_bounds(lo, hi, length):
    """Pixels [start, stop) of one axis that a crop keeps for a RoI spanning [lo, hi] on it: 3 pixels of
    margin before, 4 after (covering the -0.5 shift of aligned mode, the second bilinear tap and roi_pool's
    rounding), clipped at the map edges so that edge RoIs see the edge in the crop too."""
    return max(0, math.floor(lo) - 3), min(length, math.floor(hi) + 4)


def _crops(shape, feature_rois, scale):
    """Per RoI: (y0, y1, x0, x1) of its crop, its RoI row on the full map and on the crop (image coordinates:
    feature coordinates / scale, exact for a power-of-two scale)."""
    _, _, h, w = shape
    out = []
    for _, (x1, y1, x2, y2) in feature_rois:
        y0, y_end = _crop_bounds(y1, y2, h)
        x0, x_end = _crop_bounds(x1, x2, w)
        full = [0.0, x1 / scale, y1 / scale, x2 / scale, y2 / scale]
        local = [0.0, (x1 - x0) / scale, (y1 - y0) / scale, (x2 - x0) / scale, (y2 - y0) / scale]
        out.append(((y0, y_end, x0, x_end), full, local))
    return out


def _lowest_offset_read(shape, channels_last, feature_roi):
    """Lowest element offset a RoI's samples can read (the map's strides: NCHW or channels_last)."""
    _, c, _, w = shape
    x1, y1 = feature_roi[0], feature_roi[1]
    y, x = max(0, math.floor(y1 - 0.5)), max(0, math.floor(x1 - 0.5))
    return (y * w + x) * c if channels_last else y * w + x


def _filled_map(shape, dtype, channels_last, crops, seed):
    """A map in ``dtype`` and layout, filled without a full-size temporary: a seeded random block of 61 rows
    repeated down the map, then a fresh seeded random patch over every RoI's crop."""
    n, c, h, w = shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.empty(shape, dtype=dtype, memory_format=fmt)
    assert n == 1 and x.numel() > TWO_31
    # Rows of the storage: [H, W * C] (channels_last) or [C * H, W] (NCHW).
    rows = x[0].permute(1, 2, 0).reshape(h, w * c) if channels_last else x[0].view(c * h, w)
    assert rows.data_ptr() == x.data_ptr()
    g = torch.Generator().manual_seed(seed)
    block = torch.randn(61, rows.shape[1], generator=g).to(dtype)
    for r0 in range(0, rows.shape[0], block.shape[0]):
        r1 = min(rows.shape[0], r0 + block.shape[0])
        rows[r0:r1].copy_(block[: r1 - r0])
    for (y0, y1, x0, x1), _, _ in crops:
        x[:, :, y0:y1, x0:x1].copy_(torch.randn(n, c, y1 - y0, x1 - x0, generator=g).to(dtype))
    return x


def _forward_case(shape, dtype, channels_last, scale, seed, with_pool=True):
    """Fills the map, runs pydet_ops' roi_align (two settings) and roi_pool on it under every ISA level and
    torchvision / the float64 references on each RoI's crop. Returns only small tensors: the map is freed
    when this returns, before the caller asserts anything."""
    feature_rois = _feature_rois(shape, channels_last, seed)
    crops = _crops(shape, feature_rois, scale)
    x = _filled_map(shape, dtype, channels_last, crops, seed + 1)
    rois = torch.tensor([full for _, full, _ in crops], dtype=torch.float32)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    result = {
        "numel": x.numel(),
        "tags": [tag for tag, _ in feature_rois],
        "lowest_offsets": [_lowest_offset_read(shape, channels_last, r) for _, r in feature_rois],
        "ours": {},
        "expected": {},
    }
    settings = [(-1, True), (2, False)]  # (sampling_ratio, aligned)
    for level in SUPPORTED_ISAS:
        with isa_level(level):
            for sampling_ratio, aligned in settings:
                out = ops.roi_align(x, rois, POOLED, scale, sampling_ratio, aligned)
                assert out.dtype == dtype and out.is_contiguous(memory_format=fmt)
                result["ours"][("align", sampling_ratio, aligned, level)] = out
            if not with_pool:
                # argmax is an int32 index into one H x W plane: larger planes are refused.
                with pytest.raises(RuntimeError, match=r"roi_pool: input planes of more than 2\^31 - 1 cells"):
                    RAW.roi_pool(x, rois, scale, POOLED, POOLED)
                continue
            out, argmax = RAW.roi_pool(x, rois, scale, POOLED, POOLED)
            assert out.dtype == dtype and out.is_contiguous(memory_format=fmt)
            assert argmax.dtype == torch.int32 and argmax.is_contiguous(memory_format=fmt)
            result["ours"][("pool", level)] = (out, argmax)
    w = shape[3]
    for (y0, y1, x0, x1), _, local in crops:
        crop = x[:, :, y0:y1, x0:x1].float()
        roi = torch.tensor([local], dtype=torch.float32)
        for sampling_ratio, aligned in settings:
            theirs = tvo.roi_align(crop, roi, POOLED, scale, sampling_ratio, aligned)
            reference = roi_align_reference(crop, roi, POOLED, scale, sampling_ratio, aligned)
            torch.testing.assert_close(theirs, reference.float(), rtol=1e-5, atol=1e-5)
            result["expected"].setdefault(("align", sampling_ratio, aligned), []).append(theirs)
        if not with_pool:
            continue
        theirs, local_argmax = torch.ops.torchvision.roi_pool(crop, roi, scale, POOLED, POOLED)
        local_argmax = local_argmax.long()
        # The float64 reference agrees with torchvision's float64 computation (float32 bin bounds can differ
        # from float64 ones, e.g. ceil(7 * (29 / 7)) is 29 in float32 and 30 in float64).
        reference, reference_argmax = roi_pool_reference(crop, roi, POOLED, scale)
        wide, wide_argmax = torch.ops.torchvision.roi_pool(crop.double(), roi.double(), scale, POOLED, POOLED)
        assert torch.equal(wide, reference) and torch.equal(wide_argmax.long(), reference_argmax)
        # The argmax as an index into the full map's H * W plane (-1 for an empty bin).
        crop_w = x1 - x0
        plane = (local_argmax // crop_w + y0) * w + local_argmax % crop_w + x0
        result["expected"].setdefault("pool", []).append((theirs, torch.where(local_argmax < 0, -1, plane)))
    return result


def _assert_exercises_far_offsets(result):
    assert result["numel"] > TWO_31
    for tag, lowest in zip(result["tags"], result["lowest_offsets"]):
        if tag == "far":
            assert lowest > TWO_31
        elif tag == "origin":
            assert lowest < 2**20


def _assert_values_match(result, dtype):
    """Half-type maps are read as they are and computed in float32 (README): each result is torchvision's
    float32 result on the float32 crop, rounded to the map's type, exactly."""
    for key, out in result["ours"].items():
        if key[0] == "align":
            expected = torch.cat(result["expected"][key[:3]])
            assert torch.equal(out.float(), expected.to(dtype).float()), key
            assert int(torch.count_nonzero(expected)) > 0.75 * expected.numel()
        else:
            expected = torch.cat([values for values, _ in result["expected"]["pool"]])
            assert torch.equal(out[0].float(), expected.to(dtype).float()), key


def _assert_argmax_matches(result, rois):
    """roi_pool's argmax for the RoIs ``rois`` (indices): torchvision's on the crop, as a full-plane index."""
    for key, out in result["ours"].items():
        if key[0] == "pool":
            for k in rois:
                expected = result["expected"]["pool"][k][1]
                assert torch.equal(out[1][k : k + 1].long(), expected), (key, k)


def test_roi_align_nchw_bfloat16_map_beyond_2_31():
    """roi_align on a bfloat16 NCHW map [1, 1, 47000, 47000] (2.2e9 elements, 4.4 GB); roi_pool refuses the
    map (one plane has more than 2^31 - 1 cells, beyond its int32 argmax). Measured: 8 to 27 s (nearly all of
    it the first touch and filling of the map), peak resident memory 5.1 GB.
    """
    _require_available_memory(6)
    result = _forward_case(NCHW_SHAPE, torch.bfloat16, False, NCHW_SCALE, seed=47, with_pool=False)
    _assert_exercises_far_offsets(result)
    _assert_values_match(result, torch.bfloat16)


def test_roi_align_and_roi_pool_channels_last_float16_map_beyond_2_31():
    """roi_align and roi_pool on a float16 channels_last map [1, 3, 27500, 27500] (2.3e9 elements, 4.5 GB).

    Measured: 7 to 9 s, peak resident memory 5.2 GB.
    """
    _require_available_memory(6)
    result = _forward_case(CL_SHAPE, torch.float16, True, CL_SCALE, seed=27)
    _assert_exercises_far_offsets(result)
    _assert_values_match(result, torch.float16)
    _assert_argmax_matches(result, range(len(result["tags"])))


def _disjoint(crops):
    boxes = [b for b, _, _ in crops]
    for i, (ay0, ay1, ax0, ax1) in enumerate(boxes):
        for by0, by1, bx0, bx1 in boxes[i + 1 :]:
            if ay0 < by1 and by0 < ay1 and ax0 < bx1 and bx0 < ax1:
                return False
    return True


def _backward_rois(shape, channels_last, seed):
    rois = _feature_rois(shape, channels_last, seed)
    # Near the far corner, crossing both far edges, crossing both near edges.
    return [rois[0], rois[6], rois[9]]


def _roi_align_backward_case(seed):
    """Returns, per ISA level, the crops of pydet_ops' gradient map and its number of non-zero cells, and the
    expected crops from torchvision's backward on each crop; the 8.8 GB gradient map is freed on return."""
    shape, scale, sampling_ratio, aligned = NCHW_SHAPE, NCHW_SCALE, -1, True
    feature_rois = _backward_rois(shape, False, seed)
    crops = _crops(shape, feature_rois, scale)
    assert _disjoint(crops)
    rois = torch.tensor([full for _, full, _ in crops], dtype=torch.float32)
    grad = torch.randn(len(crops), 1, POOLED, POOLED, generator=torch.Generator().manual_seed(seed + 1))
    expected = []
    for k, ((y0, y1, x0, x1), _, local) in enumerate(crops):
        leaf = torch.zeros(1, 1, y1 - y0, x1 - x0, requires_grad=True)
        tvo.roi_align(leaf, torch.tensor([local]), POOLED, scale, sampling_ratio, aligned).backward(grad[k : k + 1])
        expected.append(leaf.grad)
    ours = {}
    for level in SUPPORTED_ISAS:
        with isa_level(level):
            grad_map = RAW._roi_align_backward(grad, rois, scale, POOLED, POOLED, *shape, sampling_ratio, aligned)
        assert grad_map.dtype == torch.float32 and grad_map.shape == shape and grad_map.is_contiguous()
        assert grad_map.numel() > TWO_31
        ours[level] = (
            [grad_map[:, :, y0:y1, x0:x1].clone() for (y0, y1, x0, x1), _, _ in crops],
            int(torch.count_nonzero(grad_map)),
        )
        del grad_map
        ops.empty_cpu_cache()
    lowest = [_lowest_offset_read(shape, False, r) for _, r in feature_rois]
    return ours, expected, lowest


def test_roi_align_backward_gradient_map_beyond_2_31():
    """The backward of roi_align into a [1, 1, 47000, 47000] gradient map (2.2e9 cells), for RoIs at the far
    corner, across the far edges and across the near edges.

    The backward op is called directly with a float32 output gradient: it needs no feature map, and the
    gradient map is float32 (8.8 GB). Through autograd on a half map the peak would be the map (4.4 GB) plus
    the float32 accumulation map (8.8 GB) plus the half result (4.4 GB), 17.6 GB, and even the direct call
    with a half gradient peaks at 13.2 GB: over this suite's 12 GB budget, so the half-type backward is not
    run on a huge map (test_roi_align.py covers it on small ones). Measured: 25 to 45 s, nearly all of it
    the first touch of the 8.8 GB gradient map (about 1 s per call after that), peak resident memory 9.4 GB.
    """
    _require_available_memory(11)
    ours, expected, lowest = _roi_align_backward_case(seed=470)
    assert lowest[0] > TWO_31 and lowest[1] > TWO_31
    nonzero = sum(int(torch.count_nonzero(e)) for e in expected)
    assert nonzero > 3 * 20
    for level, (crops, count) in ours.items():
        for k, (got, want) in enumerate(zip(crops, expected)):
            assert torch.equal(got, want), (level, k)
        assert count == nonzero, level  # nothing written outside the RoIs' crops


def _roi_pool_backward_case(seed):
    """The backward of roi_pool into a float32 channels_last [1, 3, 27500, 27500] gradient map (9.1 GB).
    The argmax is the one roi_pool returns for these RoIs (torchvision's on each RoI's crop, mapped to the
    full plane, as test_roi_align_and_roi_pool_channels_last_float16_map_beyond_2_31 checks it), so no
    feature map is allocated."""
    shape, scale = CL_SHAPE, CL_SCALE
    _, c, h, w = shape
    feature_rois = _backward_rois(shape, True, seed)
    crops = _crops(shape, feature_rois, scale)
    assert _disjoint(crops)
    g = torch.Generator().manual_seed(seed + 1)
    rois = torch.tensor([full for _, full, _ in crops], dtype=torch.float32)
    grad = torch.randn(len(crops), c, POOLED, POOLED, generator=g).contiguous(memory_format=torch.channels_last)
    argmax = torch.empty(len(crops), c, POOLED, POOLED, dtype=torch.int32).contiguous(
        memory_format=torch.channels_last
    )
    expected = []
    for k, ((y0, y1, x0, x1), _, local) in enumerate(crops):
        crop = torch.randn(1, c, y1 - y0, x1 - x0, generator=g).to(torch.float16).float()
        roi = torch.tensor([local])
        _, local_argmax = torch.ops.torchvision.roi_pool(crop, roi, scale, POOLED, POOLED)
        local_argmax = local_argmax.long()
        plane = (local_argmax // (x1 - x0) + y0) * w + local_argmax % (x1 - x0) + x0
        argmax[k : k + 1] = torch.where(local_argmax < 0, -1, plane).to(torch.int32)
        leaf = crop.clone().requires_grad_(True)
        tvo.roi_pool(leaf, roi, POOLED, scale).backward(grad[k : k + 1])
        expected.append(leaf.grad)
    assert int(argmax[0].min()) * c > TWO_31  # far-corner cells lie beyond element 2^31 of the map
    ours = {}
    for level in SUPPORTED_ISAS:
        with isa_level(level):
            grad_map = RAW._roi_pool_backward(grad, rois, argmax, scale, POOLED, POOLED, *shape)
        assert grad_map.dtype == torch.float32 and grad_map.shape == shape
        assert grad_map.is_contiguous(memory_format=torch.channels_last) and grad_map.numel() > TWO_31
        ours[level] = (
            [grad_map[:, :, y0:y1, x0:x1].clone() for (y0, y1, x0, x1), _, _ in crops],
            int(torch.count_nonzero(grad_map)),
        )
        del grad_map
        ops.empty_cpu_cache()
    return ours, expected


def test_roi_pool_backward_channels_last_gradient_map_beyond_2_31():
    """The backward of roi_pool into a channels_last [1, 3, 27500, 27500] gradient map (2.3e9 cells), where
    a far-corner maximum at plane index i lands at element offset 3 * i + c > 2^31. float32 gradients, for
    the memory reasons given in test_roi_align_backward_gradient_map_beyond_2_31. Measured: 8 s after the
    previous test, 16 s alone (the first touch of the 9.1 GB gradient map), peak resident memory 9.6 GB.
    """
    _require_available_memory(11)
    ours, expected = _roi_pool_backward_case(seed=275)
    nonzero = sum(int(torch.count_nonzero(e)) for e in expected)
    assert nonzero > 3 * 20
    for level, (crops, count) in ours.items():
        for k, (got, want) in enumerate(zip(crops, expected)):
            assert torch.equal(got, want), (level, k)
        assert count == nonzero, level
