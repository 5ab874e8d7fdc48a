"""RoI ops on NCHW maps large enough to be converted to channels_last in several row bands per image while
the RoIs whose rows are ready are already being pooled (csrc/ops/cpu/banded_conversion.h).

The maps here are sized so that each image's conversion is cut into several bands (bands are about 1 MiB:
a 64-channel row of 256 float32 pixels is 64 KiB, so 16 rows per band) and so that the RoIs read each pixel
often enough for the conversion to happen at all. The RoIs end in every band, reach outside the map, and
include inverted and NaN boxes. Results must equal torchvision bit for bit, and one another for 1 to 4
threads (with one thread the conversion runs first and the pooling after; with more, interleaved).

Kernel tests take the ``isa`` fixture and so run at every CPU instruction-set level the machine supports.
"""

import pytest
import torch
import torchvision.ops as tvo

import pydet_ops as ops

N, C, H, W = 3, 64, 96, 256
THREADS = [1, 2, 3, 4]


def _map(seed=0, shape=(N, C, H, W)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _rois(count, seed, scale, height=H, width=W, nan_rows=(), log_size=-1.5):
    """[count, 5] RoIs on N images in image coordinates (1 / scale per map pixel): sides of e^log_size to
    e^(log_size + 5) map pixels, some reaching outside the map, some inverted; `nan_rows` get a NaN y2."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(count, 2, generator=g) * torch.tensor([width + 8.0, height + 8.0]) - 4.0
    wh = torch.exp(torch.rand(count, 2, generator=g) * 5.0 + log_size)
    wh[::17] *= -1.0  # inverted
    boxes = torch.cat([xy, xy + wh], dim=1) / scale
    index = torch.randint(0, N, (count, 1), generator=g).float()
    rois = torch.cat([index, boxes], dim=1)
    for row in nan_rows:
        rois[row, 4] = float("nan")
    return rois


def _with_threads(threads, fn):
    original = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        return fn()
    finally:
        torch.set_num_threads(original)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_roi_align_matches_torchvision_for_any_thread_count(isa, sampling_ratio, aligned):
    x = _map(1)
    rois = _rois(600, seed=2, scale=0.5, nan_rows=(5, 301))
    finite = torch.isfinite(rois).all(dim=1)
    expected = tvo.roi_align(x, rois[finite], 7, 0.5, sampling_ratio, aligned)
    first = None
    for threads in THREADS:
        out = _with_threads(threads, lambda: ops.roi_align(x, rois, 7, 0.5, sampling_ratio, aligned))
        assert out.is_contiguous()
        assert torch.equal(out[finite], expected), threads
        assert torch.equal(out[~finite], torch.zeros_like(out[~finite])), threads
        if first is None:
            first = out
        assert torch.equal(out, first), threads


def test_roi_pool_matches_torchvision_for_any_thread_count(isa):
    x = _map(3)
    rois = _rois(600, seed=4, scale=0.5, log_size=0.0)
    expected, expected_argmax = torch.ops.torchvision.roi_pool(x, rois, 0.5, 7, 7)
    for threads in THREADS:
        out, argmax = _with_threads(threads, lambda: torch.ops.pydet_ops.roi_pool(x, rois, 0.5, 7, 7))
        assert torch.equal(out, expected), threads
        assert torch.equal(argmax, expected_argmax), threads


def test_multi_scale_matches_torchvision_for_any_thread_count(isa):
    # Four FPN levels of a 384 x 1024 image; the two finest are converted in several bands per image.
    names = ["0", "1", "2", "3"]
    x = {name: _map(10 + i, (N, C, H >> i, W >> i)) for i, name in enumerate(names)}
    image_shapes = [(4 * H, 4 * W)] * N
    g = torch.Generator().manual_seed(20)
    boxes = []
    for _ in range(N):
        xy = torch.rand(400, 2, generator=g) * torch.tensor([4.0 * W, 4.0 * H])
        wh = torch.exp(torch.rand(400, 2, generator=g) * 5.5 + 1.0)
        boxes.append(torch.cat([xy, xy + wh], dim=1))
    expected = tvo.MultiScaleRoIAlign(names, 7, 2)(x, boxes, image_shapes)
    pooler = ops.MultiScaleRoIAlign(names, 7, 2)
    for threads in THREADS:
        out = _with_threads(threads, lambda: pooler(x, boxes, image_shapes))
        assert torch.equal(out, expected), threads


def test_roi_align_rois_in_one_band_only(isa):
    # Every RoI in the top rows of the last image: the other bands are converted but nothing waits on them.
    x = _map(5)
    g = torch.Generator().manual_seed(6)
    xy = torch.rand(400, 2, generator=g) * torch.tensor([240.0, 6.0])
    rois = torch.cat([torch.full((400, 1), N - 1.0), xy, xy + 3.0 + torch.rand(400, 2, generator=g) * 8], dim=1)
    expected = tvo.roi_align(x, rois, 7, 1.0, 2, True)
    for threads in THREADS:
        assert torch.equal(_with_threads(threads, lambda: ops.roi_align(x, rois, 7, 1.0, 2, True)), expected)
