"""The CUDA kernels: every op on device "cuda" against our own CPU kernels, torchvision's CUDA ops and the
float64 references, plus what only a GPU has (streams, CUDA graphs, autocast, atomics, 64-bit offsets).

The tests are split by area, and this module holds what they share (skip logic, device transfers,
constants, comparison helpers and the inputs several of them build):

* ``test_cuda_nms.py``: nms, batched_nms, nms_fixed and batched_nms_fixed (CUDA graphs, torch.compile).
* ``test_cuda_boxes.py``: the IoU family, AnchorGenerator / grid_anchors, BoxCoder / encode / decode.
* ``test_cuda_roi.py``: roi_align, roi_pool and a map of more than 2^31 elements.
* ``test_cuda_roi_multi_scale.py``: MultiScaleRoIAlign, deterministic backward, autocast.
* ``test_cuda_misc.py``: every op registered, non-default streams, device mixes, out-of-range batch
  indices.

Three kinds of expected result, each with the tolerance its arithmetic allows:

* our CPU kernel on the same inputs. The CUDA kernels share the per-element math with the CPU kernels
  (``csrc/common``) and are compiled without FMA contraction, so where both evaluate the same operations in
  the same order the float32 results are identical bit for bit: the IoU family except CIoU, the RoI ops'
  forward passes, box coding (float32 and the half types) and anchors. CIoU calls ``atan``, whose device and
  host versions differ by an ulp or so. NMS indices are always identical. Backward passes of the RoI ops
  accumulate with atomics on the GPU, which reorders sums: they agree within a tolerance relative to the
  gradient's largest magnitude.
* torchvision's CUDA ops (the drop-in contract). torchvision's kernels are compiled with FMA contraction,
  so the RoI ops agree within a few ulps. Its NMS compares IoUs with a float32 threshold: NMS inputs are
  whole-number boxes (every IoU exact whatever the contraction) and thresholds for which that comparison
  decides as the double one does; scores are distinct, since torchvision sorts them unstably.
* the float64 references of ``reference.py`` and ``roi_reference.py``.

Each module skips as a whole (its ``pytestmark``) when torch sees no CUDA device or when pydet_ops was built
without CUDA kernels; a test whose op has no CUDA kernel skips on its own, and ``test_every_op_runs_on_cuda``
(test_cuda_misc.py) fails so that such a gap shows. Inputs are built on the CPU from seeded generators and
copied to the device, so every run sees the same values. The test of out-of-range batch indices runs in a
child process: a kernel fault there must not take down the CUDA context of the tests after it. The map of
more than 2^31 elements is marked ``huge``.
"""

import contextlib
import math

import pytest
import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision)
from torch.utils._pytree import tree_map
from torchvision.models.detection.image_list import ImageList

import pydet_ops as ops
from conftest import assert_bitwise_equal, clustered_boxes, tied_scores, uniform_boxes
from test_nms import assert_same_indices

RAW = torch.ops.pydet_ops
TV = torch.ops.torchvision
DEVICE = torch.device("cuda")

FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
HALF_DTYPES = (torch.float16, torch.bfloat16)
NAN, INF = math.nan, math.inf
IOU_OPS = ("box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou")
MSRA_NAMES = ["0", "1", "2", "3"]


# ---------------------------------------------------------------------------------------------------------
# Availability and skips
# ---------------------------------------------------------------------------------------------------------

# Every op the package registers, by the name the dispatcher knows it under.
DEVICE_OPS = (
    "nms",
    "batched_nms",
    "nms_fixed",
    "batched_nms_fixed",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "complete_box_iou",
    "roi_align",
    "_roi_align_backward",
    "roi_pool",
    "_roi_pool_backward",
    "multi_scale_roi_align",
    "_multi_scale_roi_align_backward",
    "grid_anchors",
    "encode_boxes",
    "decode_boxes",
)


def _has_kernel(op: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"pydet_ops::{op}", key)


def _runs_on_cuda(op: str) -> bool:
    # A device-generic (composite) registration serves CUDA tensors as well as a CUDA kernel does.
    return any(_has_kernel(op, key) for key in ("CUDA", "CompositeExplicitAutograd", "CompositeImplicitAutograd"))


def _module_skip_reason():
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    if not any(_has_kernel(op, "CUDA") for op in DEVICE_OPS):
        return "pydet_ops was built without CUDA kernels (build with FORCE_CUDA=1 on a machine with nvcc)"
    return None


_SKIP_REASON = _module_skip_reason()


def needs(*op_names):
    """Skips a test whose ops do not all run on CUDA in this build (test_every_op_runs_on_cuda reports it)."""
    if _SKIP_REASON is not None:  # (the module's reason, rather than every op's)
        return pytest.mark.skipif(True, reason=_SKIP_REASON)
    missing = [f"pydet_ops::{op}" for op in op_names if not _runs_on_cuda(op)]
    return pytest.mark.skipif(bool(missing), reason=f"no CUDA kernel for {', '.join(missing)}")


def _compile_skip_reason():
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported on this platform / Python version"
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return "this torch has no Triton integration, which torch.compile needs for CUDA graphs of CUDA code"
    if not has_triton():
        return "torch.compile's inductor backend needs Triton for CUDA, which is not available here"
    return None


# ---------------------------------------------------------------------------------------------------------
# Shared helpers: transfers and comparisons
# ---------------------------------------------------------------------------------------------------------


def dev(tree):
    """Every tensor of a (nested) structure copied to the CUDA device."""
    return tree_map(lambda t: t.to(DEVICE) if isinstance(t, torch.Tensor) else t, tree)


def host(t):
    return t.detach().cpu()


def assert_on_device(*tensors):
    for t in tensors:
        assert t.device.type == DEVICE.type, t.device


def assert_bitwise(actual, expected):
    """``actual`` (on the device) equals ``expected`` bit for bit: dtype, shape, values, NaN where NaN."""
    assert_on_device(actual)
    assert_bitwise_equal(host(actual), host(expected))


def assert_close_ulps(actual, expected, ulps):
    """Same dtype, shape and NaN / inf pattern; finite values within ``ulps`` units of ``expected``'s dtype,
    relative to each value and to the largest finite magnitude of ``expected`` (sums evaluated in another
    order are off by a few ulps of their largest terms, not of their result)."""
    a, e = host(actual), host(expected)
    assert a.dtype == e.dtype and a.shape == e.shape, (a.dtype, e.dtype, a.shape, e.shape)
    if e.numel() == 0:
        return
    eps = torch.finfo(e.dtype).eps
    finite = e[e.isfinite()].double()
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    torch.testing.assert_close(a.double(), e.double(), rtol=ulps * eps, atol=ulps * eps * scale, equal_nan=True)


def assert_forward_parity(actual, expected):
    """A CUDA forward result against the CPU kernel's: float32 bit for bit (same operations in the same
    order); other dtypes within 2 ulps."""
    assert_on_device(actual)
    if expected.dtype == torch.float32:
        assert_bitwise(actual, expected)
    else:
        assert_close_ulps(actual, expected, ulps=2)


def assert_grad_parity(actual, expected):
    """Gradients summed with atomics (any order) against a sequential sum."""
    assert_on_device(actual)
    assert_close_ulps(actual, expected, ulps=16 if expected.dtype in HALF_DTYPES else 64)


def assert_same_keep(actual, expected):
    """Kept indices: int64 on the device, identical to ``expected``."""
    assert_on_device(actual)
    assert_same_indices(host(actual), host(expected).to(torch.int64))


def assert_format(t, fmt):
    assert t.is_contiguous(memory_format=fmt), (t.shape, t.stride())


def leaf(x, fmt=torch.contiguous_format, device=None):
    """A fresh leaf copy of ``x`` (on ``device``, default the CUDA device) in memory format ``fmt``."""
    t = x.detach().to(DEVICE if device is None else device)
    return t.clone().contiguous(memory_format=fmt).requires_grad_()


def _gen(seed):
    return torch.Generator().manual_seed(int(seed))


def _randn(*shape, seed, dtype=torch.float32):
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64).to(dtype)


# gradcheck calls backward twice and compares: atomics may sum in another order the second time.
NONDET_TOL = 1e-12


@contextlib.contextmanager
def deterministic_algorithms():
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn_only)


def _nms_fixed(*args):
    # The Python wrapper, or the raw op where a build predates it.
    fn = getattr(ops, "nms_fixed", None) or RAW.nms_fixed
    return fn(*args)


def _batched_nms_fixed(*args):
    fn = getattr(ops, "batched_nms_fixed", None) or RAW.batched_nms_fixed
    return fn(*args)


# ---------------------------------------------------------------------------------------------------------
# Inputs built by several modules
# ---------------------------------------------------------------------------------------------------------


def _fixed_case(n, seed, kind="clustered", dtype=torch.float32):
    """(boxes, scores, idxs) of ``n`` boxes; "clustered" keeps few boxes, "spread" keeps most."""
    if kind == "clustered":
        boxes = clustered_boxes(n, max(1, n // 30), seed=seed, img=600.0, dtype=dtype)
    else:
        boxes = uniform_boxes(n, seed=seed, img=20.0 * max(1.0, n**0.5), lo=4.0, hi=40.0, dtype=dtype)
    scores = tied_scores(n, seed=seed + 1, levels=40, dtype=dtype)
    idxs = torch.randint(0, 4, (n,), generator=_gen(seed + 2))
    return boxes, scores, idxs


def _msra_grad(boxes, channels, output_size, seed, dtype):
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    return _randn(sum(b.shape[0] for b in boxes), channels, ph, pw, seed=seed, dtype=dtype)


def _images_on_device(images):
    return ImageList(images.tensors.to(DEVICE), images.image_sizes)
