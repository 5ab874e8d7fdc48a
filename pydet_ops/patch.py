"""patch_torchvision(): run torchvision's own detection code on pydet_ops.

    import pydet_ops
    pydet_ops.patch_torchvision()            # from now on, for the whole process
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=...)

    with pydet_ops.patch_torchvision():      # or only inside a block; restored on exit
        ...

What changes: in ``torchvision.ops`` (and its ``boxes``, ``roi_align``, ``roi_pool`` and ``poolers`` modules)
and in the ``torchvision.models.detection`` modules (``rpn``, ``roi_heads``, ``anchor_utils``, ``_utils``,
``retinanet``, ``ssd``, ``ssdlite``, ``fcos``, ``faster_rcnn``, ``mask_rcnn``, ``keypoint_rcnn``), every name
bound to one of torchvision's box ops, RoI ops, ``AnchorGenerator``, ``BoxCoder`` or ``MultiScaleRoIAlign`` is
rebound to the pydet_ops equivalent. Nothing else in torchvision is touched, and undoing the patch puts the
exact original objects back.

Models built while patched use pydet_ops throughout. Models built before keep their torchvision
``AnchorGenerator``/``BoxCoder``/``MultiScaleRoIAlign`` instances, whose inner calls to roi_align, nms and the
box functions still go through the patched names. While patched, instances of the original torchvision classes
pass torchvision's ``isinstance`` checks against the replacements, so they can still be handed to model
constructors.
"""

import importlib
import threading
from typing import Dict, List, Optional, Tuple

from . import anchors as _anchors
from . import box_coder as _box_coder
from . import boxes as _boxes
from . import poolers as _poolers
from . import roi_ops as _roi_ops

__all__ = ["patch_torchvision", "unpatch_torchvision", "torchvision_patched"]

_TARGET_MODULES = (
    "torchvision.ops",
    "torchvision.ops.boxes",
    "torchvision.ops.roi_align",
    "torchvision.ops.roi_pool",
    "torchvision.ops.poolers",
    "torchvision.models.detection.rpn",
    "torchvision.models.detection.roi_heads",
    "torchvision.models.detection.anchor_utils",
    "torchvision.models.detection._utils",
    "torchvision.models.detection.retinanet",
    "torchvision.models.detection.ssd",
    "torchvision.models.detection.ssdlite",
    "torchvision.models.detection.fcos",
    "torchvision.models.detection.faster_rcnn",
    "torchvision.models.detection.mask_rcnn",
    "torchvision.models.detection.keypoint_rcnn",
)

# (module defining the torchvision original, its name) -> the pydet_ops replacement.
_REPLACEMENTS = {
    ("torchvision.ops.boxes", "nms"): _boxes.nms,
    ("torchvision.ops.boxes", "batched_nms"): _boxes.batched_nms,
    ("torchvision.ops.boxes", "box_iou"): _boxes.box_iou,
    ("torchvision.ops.boxes", "generalized_box_iou"): _boxes.generalized_box_iou,
    ("torchvision.ops.boxes", "distance_box_iou"): _boxes.distance_box_iou,
    ("torchvision.ops.boxes", "complete_box_iou"): _boxes.complete_box_iou,
    ("torchvision.ops.boxes", "box_area"): _boxes.box_area,
    ("torchvision.ops.boxes", "box_convert"): _boxes.box_convert,
    ("torchvision.ops.boxes", "clip_boxes_to_image"): _boxes.clip_boxes_to_image,
    ("torchvision.ops.boxes", "remove_small_boxes"): _boxes.remove_small_boxes,
    ("torchvision.ops.roi_align", "roi_align"): _roi_ops.roi_align,
    ("torchvision.ops.roi_align", "RoIAlign"): _roi_ops.RoIAlign,
    ("torchvision.ops.roi_pool", "roi_pool"): _roi_ops.roi_pool,
    ("torchvision.ops.roi_pool", "RoIPool"): _roi_ops.RoIPool,
    ("torchvision.ops.poolers", "MultiScaleRoIAlign"): _poolers.MultiScaleRoIAlign,
    ("torchvision.models.detection.anchor_utils", "AnchorGenerator"): _anchors.AnchorGenerator,
    ("torchvision.models.detection._utils", "BoxCoder"): _box_coder.BoxCoder,
}

_lock = threading.RLock()
# (module, name, original) for every rebinding in force; None when not patched.
_applied: Optional[List[Tuple[object, str, object]]] = None


def _originals() -> Dict[int, Tuple[object, object]]:
    """id(original) -> (original, replacement)."""
    table = {}
    for (module_name, name), replacement in _REPLACEMENTS.items():
        original = getattr(importlib.import_module(module_name), name)
        table[id(original)] = (original, replacement)
    return table


def torchvision_patched() -> bool:
    """Whether :func:`patch_torchvision` is in force."""
    return _applied is not None


class TorchvisionPatch:
    """What :func:`patch_torchvision` returns: a context manager that undoes the patch on exit if (and only if)
    this call applied it, so nested uses restore the state each one found."""

    def __init__(self, applied_here: bool) -> None:
        self.applied_here = applied_here

    def __enter__(self) -> "TorchvisionPatch":
        return self

    def __exit__(self, *exc) -> None:
        if self.applied_here:
            self.applied_here = False
            unpatch_torchvision()

    def __repr__(self) -> str:
        return f"TorchvisionPatch(active={torchvision_patched()}, applied_here={self.applied_here})"


def patch_torchvision() -> TorchvisionPatch:
    """Rebind torchvision's detection ops and modules to pydet_ops (see the module docstring).

    Idempotent: calling it while patched changes nothing. Usable as a context manager.
    Requires torchvision (any release whose ``models.detection`` layout matches 0.15 or later).
    """
    global _applied
    with _lock:
        if _applied is not None:
            return TorchvisionPatch(applied_here=False)
        table = _originals()
        applied = []
        for module_name in _TARGET_MODULES:
            module = importlib.import_module(module_name)
            for name, value in list(vars(module).items()):
                hit = table.get(id(value))
                if hit is not None and hit[0] is value:
                    applied.append((module, name, value))
                    setattr(module, name, hit[1])
        for original, replacement in table.values():
            if isinstance(original, type):
                replacement._stands_in_for = (original,)
        _applied = applied
        return TorchvisionPatch(applied_here=True)


def unpatch_torchvision() -> None:
    """Put back every object :func:`patch_torchvision` replaced. Does nothing when not patched."""
    global _applied
    with _lock:
        if _applied is None:
            return
        for module, name, original in reversed(_applied):
            setattr(module, name, original)
        for _, replacement in _REPLACEMENTS.items():
            if isinstance(replacement, type) and "_stands_in_for" in replacement.__dict__:
                del replacement._stands_in_for
        _applied = None
