"""Plain float64 references for RoI align and RoI pool, written from the documented semantics, plus RoI
generators shared by the RoI test modules.

RoI align (Mask R-CNN), for a RoI (b, x1, y1, x2, y2) and a map of H x W pixels:

* corners are scaled by ``spatial_scale``; a RoI with a NaN or infinite scaled corner pools to zero; with ``aligned`` they are shifted by -0.5 pixel, otherwise a RoI
  narrower (shorter) than one pixel is widened (heightened) to one pixel;
* the RoI is cut into ``ph x pw`` equal bins; each bin is sampled on a ``grid_h x grid_w`` grid of bin-cell
  centres, ``grid = sampling_ratio`` when positive, ``ceil(roi size / pooled size)`` otherwise;
* a sample at (y, x) outside ``[-1, H] x [-1, W]`` contributes nothing; otherwise negative coordinates are
  clamped to 0, and a coordinate at or beyond the last pixel reads the last pixel only;
* the bin value is the sum of the bilinear samples divided by ``max(grid_h * grid_w, 1)``.

Bilinear weights and the validity rule are products of one rule per axis, so the reference builds, per RoI,
one ``[ph, H]`` row-weight matrix and one ``[pw, W]`` column-weight matrix and pools with two matrix
products; the backward pass is the transpose.

RoI pool (Fast R-CNN): corners scaled and rounded half away from zero to whole pixels, the snapped RoI (at
least 1 x 1) cut into bins ``[floor(p * bin), ceil((p + 1) * bin))`` clipped to the map, the maximum of each
bin (first occurrence in row-major order for the argmax), 0 and argmax -1 for an empty bin.
"""

import math
from typing import List, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    "as_rois",
    "awkward_rois",
    "clustered_rois",
    "roi_align_reference",
    "roi_align_reference_backward",
    "roi_pool_reference",
    "roi_pool_reference_backward",
]


def _pair(output_size) -> Tuple[int, int]:
    if isinstance(output_size, int):
        return output_size, output_size
    h, w = output_size
    return int(h), int(w)


def as_rois(boxes: Union[Tensor, Sequence[Tensor]]) -> Tensor:
    """``Tensor[K, 5]`` RoIs from either accepted form (a list holds one ``Tensor[L, 4]`` per image)."""
    if isinstance(boxes, Tensor):
        return boxes
    rows = []
    for i, b in enumerate(boxes):
        rows.append(torch.cat([torch.full((b.shape[0], 1), float(i), dtype=b.dtype), b], dim=1))
    return torch.cat(rows) if rows else torch.zeros(0, 5)


# ---------------------------------------------------------------------------------------------------------
# RoI align
# ---------------------------------------------------------------------------------------------------------


def _axis_taps(coord: float, size: int) -> List[Tuple[int, float]]:
    """(pixel, weight) pairs of a linear interpolation at ``coord`` along an axis of ``size`` pixels."""
    if not (-1.0 <= coord <= float(size)):  # also rejects NaN
        return []
    c = coord if coord > 0.0 else 0.0
    low = int(c)
    if low >= size - 1:
        return [(size - 1, 1.0)]
    frac = c - low
    return [(low, 1.0 - frac), (low + 1, frac)]


def _axis_weights(start: float, bin_size: float, pooled: int, grid: int, size: int) -> Tensor:
    """``[pooled, size]``: summed interpolation weights of every bin's samples along one axis."""
    m = torch.zeros(pooled, size, dtype=torch.float64)
    for p in range(pooled):
        for i in range(grid):
            coord = start + p * bin_size + (i + 0.5) * bin_size / grid
            for pixel, weight in _axis_taps(coord, size):
                m[p, pixel] += weight
    return m


def _align_geometry(roi, spatial_scale, ph, pw, sampling_ratio, aligned, height, width):
    """(image, row weights [ph, H], column weights [pw, W], divisor) of one RoI."""
    b, x1, y1, x2, y2 = (float(v) for v in roi)
    offset = 0.5 if aligned else 0.0
    start_w, start_h = x1 * spatial_scale - offset, y1 * spatial_scale - offset
    end_w, end_h = x2 * spatial_scale - offset, y2 * spatial_scale - offset
    if not all(math.isfinite(v) for v in (start_w, start_h, end_w, end_h)):
        # The README's rule: a RoI with a NaN or infinite coordinate pools to zero.
        return int(b), torch.zeros(ph, height, dtype=torch.float64), torch.zeros(pw, width, dtype=torch.float64), 1.0
    roi_w = end_w - start_w
    roi_h = end_h - start_h
    if not aligned:
        roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    bin_h, bin_w = roi_h / ph, roi_w / pw

    def grid(roi_size, pooled):
        if sampling_ratio > 0:
            return sampling_ratio
        if not math.isfinite(roi_size / pooled):
            return 0
        return max(math.ceil(roi_size / pooled), 0)

    grid_h, grid_w = grid(roi_h, ph), grid(roi_w, pw)
    rows = _axis_weights(start_h, bin_h, ph, grid_h, height)
    cols = _axis_weights(start_w, bin_w, pw, grid_w, width)
    return int(b), rows, cols, float(max(grid_h * grid_w, 1))


def roi_align_reference(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False) -> Tensor:
    """float64 ``Tensor[K, C, ph, pw]``, NCHW."""
    rois = as_rois(boxes).to(torch.float64)
    x = input.to(torch.float64)
    ph, pw = _pair(output_size)
    _, channels, height, width = x.shape
    out = torch.zeros(rois.shape[0], channels, ph, pw, dtype=torch.float64)
    for k, roi in enumerate(rois.tolist()):
        b, rows, cols, count = _align_geometry(roi, spatial_scale, ph, pw, sampling_ratio, aligned, height, width)
        out[k] = rows @ x[b] @ cols.T / count
    return out


def roi_align_reference_backward(
    grad, boxes, input_shape, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False
) -> Tensor:
    """float64 gradient of ``roi_align_reference`` with respect to its input, for the output gradient ``grad``."""
    rois = as_rois(boxes).to(torch.float64)
    g = grad.to(torch.float64)
    ph, pw = _pair(output_size)
    batch, channels, height, width = input_shape
    out = torch.zeros(batch, channels, height, width, dtype=torch.float64)
    for k, roi in enumerate(rois.tolist()):
        b, rows, cols, count = _align_geometry(roi, spatial_scale, ph, pw, sampling_ratio, aligned, height, width)
        out[b] += rows.T @ g[k] @ cols / count
    return out


# ---------------------------------------------------------------------------------------------------------
# RoI pool
# ---------------------------------------------------------------------------------------------------------


def _round_half_away(v: float) -> int:
    whole = math.floor(abs(v))
    if abs(v) - whole >= 0.5:
        whole += 1
    return int(math.copysign(whole, v))


def _pool_bins(start: int, roi_size: int, pooled: int, limit: int) -> List[Tuple[int, int]]:
    bin_size = roi_size / pooled
    bins = []
    for p in range(pooled):
        lo = math.floor(p * bin_size) + start
        hi = math.ceil((p + 1) * bin_size) + start
        bins.append((min(max(lo, 0), limit), min(max(hi, 0), limit)))
    return bins


def roi_pool_reference(input, boxes, output_size, spatial_scale=1.0) -> Tuple[Tensor, Tensor]:
    """(float64 ``Tensor[K, C, ph, pw]``, int64 argmax over the ``H * W`` plane, -1 for an empty bin).

    RoIs with a NaN coordinate pool to 0 with argmax -1.
    """
    rois = as_rois(boxes).to(torch.float64)
    x = input.to(torch.float64)
    ph, pw = _pair(output_size)
    _, channels, height, width = x.shape
    out = torch.zeros(rois.shape[0], channels, ph, pw, dtype=torch.float64)
    argmax = torch.full((rois.shape[0], channels, ph, pw), -1, dtype=torch.int64)
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        if any(math.isnan(v) for v in (x1, y1, x2, y2)):
            continue
        sw, sh = _round_half_away(x1 * spatial_scale), _round_half_away(y1 * spatial_scale)
        ew, eh = _round_half_away(x2 * spatial_scale), _round_half_away(y2 * spatial_scale)
        roi_w, roi_h = max(ew - sw + 1, 1), max(eh - sh + 1, 1)
        for i, (h0, h1) in enumerate(_pool_bins(sh, roi_h, ph, height)):
            for j, (w0, w1) in enumerate(_pool_bins(sw, roi_w, pw, width)):
                if h1 <= h0 or w1 <= w0:
                    continue
                region = x[int(b), :, h0:h1, w0:w1].reshape(channels, -1)
                pos = region.argmax(dim=1)  # first maximum in row-major order
                out[k, :, i, j] = region.gather(1, pos[:, None])[:, 0]
                argmax[k, :, i, j] = (h0 + pos // (w1 - w0)) * width + (w0 + pos % (w1 - w0))
    return out, argmax


def roi_pool_reference_backward(grad, boxes, argmax, input_shape) -> Tensor:
    """float64 gradient of RoI pool: each output gradient goes to its argmax pixel."""
    rois = as_rois(boxes)
    g = grad.to(torch.float64)
    batch, channels, height, width = input_shape
    out = torch.zeros(batch, channels, height * width, dtype=torch.float64)
    for k, b in enumerate(rois[:, 0].tolist()):
        idx = argmax[k].reshape(channels, -1).long()
        keep = idx >= 0
        for c in range(channels):
            out[int(b), c].index_add_(0, idx[c][keep[c]], g[k, c].reshape(-1)[keep[c]])
    return out.reshape(batch, channels, height, width)


# ---------------------------------------------------------------------------------------------------------
# RoI generators
# ---------------------------------------------------------------------------------------------------------


def awkward_rois(n_images: int, height: int, width: int, spatial_scale: float = 1.0, seed: int = 0,
                 per_kind: int = 3, dtype=torch.float32) -> Tensor:
    """``Tensor[K, 5]`` in image coordinates for a ``height x width`` map at ``spatial_scale``: RoIs inside,
    partly outside, fully outside, of zero width / height / both, smaller than a pixel, inverted, and one
    covering the whole map, each with a random image index, in random order."""
    g = torch.Generator().manual_seed(int(seed))
    H, W = height / spatial_scale, width / spatial_scale
    px = 1.0 / spatial_scale  # one map pixel in image units

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    def boxes(x1, y1, w, h):
        return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)

    n = per_kind
    kinds = [
        # inside
        boxes(rand(n) * W * 0.6, rand(n) * H * 0.6, px + rand(n) * W * 0.35, px + rand(n) * H * 0.35),
        # partly outside (straddling the top-left and bottom-right edges)
        boxes(-rand(n) * 6 * px, -rand(n) * 6 * px, 3 * px + rand(n) * W * 0.5, 3 * px + rand(n) * H * 0.5),
        boxes(W * (0.6 + 0.3 * rand(n)), H * (0.6 + 0.3 * rand(n)), W * 0.4 + rand(n) * 6 * px,
              H * 0.4 + rand(n) * 6 * px),
        # fully outside (beyond the far edges, and before the near ones)
        boxes(W + (2 + rand(n) * 4) * px, rand(n) * H, 1 + rand(n) * 5 * px, 1 + rand(n) * 5 * px),
        boxes(-(8 + rand(n) * 4) * px, -(8 + rand(n) * 4) * px, (1 + rand(n) * 4) * px, (1 + rand(n) * 4) * px),
        # zero width, zero height, a point
        boxes(rand(n) * W, rand(n) * H, torch.zeros(n, dtype=torch.float64), rand(n) * H * 0.5),
        boxes(rand(n) * W, rand(n) * H, rand(n) * W * 0.5, torch.zeros(n, dtype=torch.float64)),
        boxes(rand(n) * W, rand(n) * H, torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)),
        # smaller than one map pixel
        boxes(rand(n) * (W - px), rand(n) * (H - px), rand(n) * 0.9 * px, rand(n) * 0.9 * px),
        # inverted: x2 < x1, y2 < y1, both
        boxes(rand(n) * W, rand(n) * H, -rand(n) * W * 0.4, rand(n) * H * 0.4),
        boxes(rand(n) * W, rand(n) * H, rand(n) * W * 0.4, -rand(n) * H * 0.4),
        boxes(rand(n) * W, rand(n) * H, -rand(n) * W * 0.4, -rand(n) * H * 0.4),
        # the whole map and a bit more
        torch.tensor([[-0.5 * px, -0.5 * px, W + 0.5 * px, H + 0.5 * px]], dtype=torch.float64),
    ]
    xyxy = torch.cat(kinds)
    images = torch.randint(0, n_images, (xyxy.shape[0], 1), generator=g).to(torch.float64)
    rois = torch.cat([images, xyxy], dim=1)
    return rois[torch.randperm(rois.shape[0], generator=g)].to(dtype)


def clustered_rois(n: int, n_images: int, height: int, width: int, seed: int = 0, dtype=torch.float32) -> Tensor:
    """``Tensor[n, 5]``: many heavily overlapping RoIs (jittered copies of a few boxes) over the map."""
    g = torch.Generator().manual_seed(int(seed))
    centres = torch.rand(4, 2, generator=g, dtype=torch.float64) * torch.tensor([width, height])
    sizes = 3 + torch.rand(4, 2, generator=g, dtype=torch.float64) * torch.tensor([width, height]) * 0.5
    which = torch.randint(0, 4, (n,), generator=g)
    c = centres[which] + torch.randn(n, 2, generator=g, dtype=torch.float64) * 0.7
    half = sizes[which] / 2 * (1 + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64))
    images = torch.randint(0, n_images, (n, 1), generator=g).to(torch.float64)
    return torch.cat([images, c - half, c + half], dim=1).to(dtype)
