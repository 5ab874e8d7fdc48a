"""pydet_ops: fast object-detection ops for PyTorch, a drop-in replacement for torchvision.ops.

    import pydet_ops as ops
    keep = ops.nms(boxes, scores, 0.5)

Raw ops are registered under ``torch.ops.pydet_ops``.
"""

import torch

from ._extension import load as _load

_BUILD_INFO = _load()

from .boxes import (  # noqa: E402
    batched_nms,
    batched_nms_fixed,
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    complete_box_iou,
    distance_box_iou,
    generalized_box_iou,
    nms,
    nms_fixed,
    remove_small_boxes,
)
from .anchors import AnchorGenerator, grid_anchors, single_level_anchors  # noqa: E402
from .box_coder import BoxCoder, decode_boxes, encode_boxes  # noqa: E402
from .patch import patch_torchvision, torchvision_patched, unpatch_torchvision  # noqa: E402
from .poolers import MultiScaleRoIAlign  # noqa: E402
from .roi_ops import RoIAlign, RoIPool, roi_align, roi_pool  # noqa: E402

__version__ = _BUILD_INFO.get("pydet_ops", "0.1.0")


def cpu_capability() -> str:
    """The instruction set the CPU kernels use now: ``'avx512'``, ``'avx2'`` or ``'default'``.

    The widest level the CPU supports is chosen at load time; the environment variable
    ``PYDET_OPS_CPU_CAPABILITY=default|avx2|avx512`` caps it (set it before importing pydet_ops).
    """
    return torch.ops.pydet_ops._cpu_capability()


def build_info() -> dict:
    """What the extension was built with (torch version, CUDA or not)."""
    return dict(_BUILD_INFO)


__all__ = [
    "AnchorGenerator",
    "BoxCoder",
    "batched_nms",
    "batched_nms_fixed",
    "box_area",
    "box_convert",
    "box_iou",
    "build_info",
    "clip_boxes_to_image",
    "complete_box_iou",
    "cpu_cache_bytes",
    "cpu_capability",
    "decode_boxes",
    "distance_box_iou",
    "empty_cpu_cache",
    "encode_boxes",
    "grid_anchors",
    "generalized_box_iou",
    "MultiScaleRoIAlign",
    "nms",
    "nms_fixed",
    "patch_torchvision",
    "remove_small_boxes",
    "roi_align",
    "roi_pool",
    "RoIAlign",
    "RoIPool",
    "single_level_anchors",
    "torchvision_patched",
    "unpatch_torchvision",
]



def empty_cpu_cache() -> None:
    """Release the idle CPU memory pydet_ops keeps for reuse.

    Large CPU tensors the kernels allocate (results and temporaries) come from a pool: when one is freed its
    memory is kept, already faulted in, for the next call, which on virtual machines saves more time than
    many kernels take. At most ``PYDET_OPS_CPU_CACHE_MB`` megabytes (default 512; 0 turns the pool off) are
    kept idle. Like ``torch.cuda.empty_cache()``, this returns only memory no tensor uses.
    """
    torch.ops.pydet_ops._empty_cpu_cache()


def cpu_cache_bytes() -> int:
    """Bytes of idle CPU memory kept for reuse (see :func:`empty_cpu_cache`)."""
    return int(torch.ops.pydet_ops._cpu_cache_bytes())
