"""Autocast: the RoI ops pool float16 / bfloat16 maps directly (float32 accumulation), without the float32
copy of the map that torchvision's autocast path makes, and return the map's dtype as torchvision does.

The CUDA autocast kernels are the same code under the AutocastCUDA key (checked in
test_cuda_roi_multi_scale.py); here CPU autocast exercises them.
"""

import pytest
import torch
import torchvision.ops as tvo
from torch.utils._python_dispatch import TorchDispatchMode

import pydet_ops as ops

FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
ROIS = torch.tensor([[0, 1.0, 2.0, 20.0, 25.0], [1, 3.0, 3.0, 30.0, 17.0], [0, -4.0, 6.0, 12.5, 40.0]])


def _map(dtype, fmt, seed=0, shape=(2, 8, 32, 32)):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return x.contiguous(memory_format=FORMATS[fmt])


class OpLog(TorchDispatchMode):
    """The ops dispatched (top level only) and the dtypes of their tensor arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        flat = [a for a in args if isinstance(a, torch.Tensor)]
        flat += [t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
        self.calls.append((str(func), [t.dtype for t in flat]))
        return func(*args, **(kwargs or {}))


CALLS = {
    "roi_align": (lambda lib, x: lib.roi_align(x, ROIS, 7, 0.5, 2, True)),
    "roi_align_adaptive": (lambda lib, x: lib.roi_align(x, ROIS, (5, 3), 0.25, 0, False)),
    "roi_pool": (lambda lib, x: lib.roi_pool(x, ROIS, 4, 0.5)),
    "MultiScaleRoIAlign": (
        lambda lib, x: lib.MultiScaleRoIAlign(["a", "b"], 5, 2)(
            {"a": x, "b": x[:, :, ::2, ::2]}, [ROIS[:2, 1:] * 2, ROIS[2:, 1:].abs() * 2], [(128, 128), (128, 128)]
        )
    ),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("op", CALLS)
def test_autocast_pools_half_maps_directly(op, dtype, fmt):
    call = CALLS[op]
    x = _map(dtype, fmt).requires_grad_()
    with torch.autocast("cpu", dtype=dtype):
        out = call(ops, x)
    assert out.dtype == dtype
    # The same as calling the op outside autocast: the half map is pooled as it is.
    assert torch.equal(out, call(ops, x))
    # torchvision's autocast path: pool a float32 copy of the map, cast the result back. Float32 accumulation
    # from the same half values, rounded once: the same values.
    theirs = call(tvo, x.detach().float()).to(dtype)
    torch.testing.assert_close(out.float(), theirs.float(), rtol=0, atol=0)
    out.float().square().sum().backward()
    assert x.grad is not None and x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()


@pytest.mark.parametrize("op", CALLS)
def test_autocast_makes_no_float32_copy_of_the_map(op):
    x = _map(torch.bfloat16, "channels_last", seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16), OpLog() as log:
        CALLS[op](ops, x)
    pooled = [c for c in log.calls if c[0].startswith("pydet_ops.")]
    assert pooled, log.calls
    assert all(torch.bfloat16 in dtypes for _, dtypes in pooled), pooled
    copies = [c for c in log.calls if "_to_copy" in c[0] and torch.float32 not in c[1] and c[1]]
    assert not copies, copies


@pytest.mark.parametrize("op", CALLS)
def test_autocast_float32_maps_unchanged(op):
    x = _map(torch.float32, "nchw", seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = CALLS[op](ops, x)
        theirs = CALLS[op](tvo, x)
    assert out.dtype == torch.float32
    assert torch.equal(out, CALLS[op](ops, x))
    assert torch.equal(out, theirs)


def test_autocast_kernels_registered_for_cuda_and_cpu():
    for name in ("roi_align", "roi_pool", "multi_scale_roi_align"):
        for key in ("AutocastCUDA", "AutocastCPU"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"pydet_ops::{name}", key), (name, key)
