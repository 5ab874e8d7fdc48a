"""The CPU memory plumbing under the kernels: NCHW <-> channels_last conversion (tiled, per-ISA register
transposes) and the pool that large results and temporaries come from."""

import os
import subprocess
import sys

import pytest
import torch

import pydet_ops
from conftest import assert_bitwise_equal

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

# (N, C, H, W): whole 16x16 squares, ragged edges on both axes, a single channel, thin maps.
SHAPES = [(1, 16, 16, 16), (2, 37, 23, 29), (1, 70, 65, 3), (1, 1, 40, 40), (3, 64, 1, 130), (1, 129, 17, 18)]


def _dense_rois(n_images, h, w, count=300, seed=0):
    # Many RoIs over the whole map: the NCHW kernels convert the map to channels_last first.
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(count, 2, generator=g) * torch.tensor([w, h]) * 0.7
    wh = 1 + torch.rand(count, 2, generator=g) * torch.tensor([w, h]) * 0.5
    ids = torch.randint(0, n_images, (count, 1), generator=g).float()
    return torch.cat([ids, xy, xy + wh], dim=1)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nchw_results_equal_channels_last_results(isa, shape, dtype):
    # NCHW input goes through the layout conversion, channels_last input does not: same bits forward and
    # backward (where the gradient is accumulated channels_last and converted back).
    n, c, h, w = shape
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g).to(dtype)
    rois = _dense_rois(n, h, w).to(dtype if dtype == torch.float64 else torch.float32)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    for op in (
        lambda t: pydet_ops.roi_align(t, rois, (5, 4), 0.9, 2, True),
        lambda t: pydet_ops.roi_pool(t, rois, (3, 5), 0.9),
    ):
        a = x.clone().requires_grad_()
        b = x_cl.clone().requires_grad_()
        out_a, out_b = op(a), op(b)
        assert out_a.is_contiguous() and out_b.is_contiguous(memory_format=torch.channels_last)
        assert_bitwise_equal(out_a.contiguous(), out_b.contiguous())
        grad = torch.randn(out_a.shape, generator=g).to(dtype)
        out_a.backward(grad)
        out_b.backward(grad.contiguous(memory_format=torch.channels_last))
        assert a.grad.is_contiguous()
        assert_bitwise_equal(a.grad, b.grad.contiguous())


def test_pooled_results_are_ordinary_tensors():
    x = torch.randn(1, 64, 128, 128)
    rois = _dense_rois(1, 128, 128, count=2000)
    out = pydet_ops.roi_align(x, rois, 7, 1.0, 2)  # 2000 * 64 * 49 * 4 bytes: a pooled result
    expected = out.clone()
    del out
    again = pydet_ops.roi_align(x, rois, 7, 1.0, 2)  # may reuse the memory just returned
    assert_bitwise_equal(again, expected)
    again.resize_(10, 10)  # storage is resizable, as for any tensor
    again.add_(1)
    again.resize_(4000, 64, 7, 7)
    assert again.shape == (4000, 64, 7, 7)


def test_cache_holds_idle_memory_until_emptied():
    pydet_ops.empty_cpu_cache()
    assert pydet_ops.cpu_cache_bytes() == 0
    x = torch.randn(1, 64, 128, 128)
    out = pydet_ops.roi_align(x, _dense_rois(1, 128, 128, count=2000), 7, 1.0, 2)
    nbytes = out.numel() * out.element_size()
    del out
    assert pydet_ops.cpu_cache_bytes() >= nbytes
    pydet_ops.empty_cpu_cache()
    assert pydet_ops.cpu_cache_bytes() == 0


def test_cache_limit_from_environment():
    code = (
        "import torch, pydet_ops\n"
        "x = torch.randn(1, 64, 128, 128)\n"
        "rois = torch.tensor([[0, 1.0, 1.0, 100.0, 100.0]]).repeat(2000, 1)\n"
        "out = pydet_ops.roi_align(x, rois, 7, 1.0, 2)\n"
        "del out\n"
        "print(pydet_ops.cpu_cache_bytes())\n"
    )
    for value, check in (("0", lambda b: b == 0), ("1024", lambda b: b > 0)):
        env = dict(os.environ, PYDET_OPS_CPU_CACHE_MB=value)
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert check(int(res.stdout.strip().splitlines()[-1])), (value, res.stdout)
    env = dict(os.environ, PYDET_OPS_CPU_CACHE_MB="lots")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "PYDET_OPS_CPU_CACHE_MB" in res.stderr
