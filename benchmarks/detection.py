"""Workloads of the detection layer: anchors, box coding, and whole torchvision detectors with and without
pydet_ops.patch_torchvision().

For the detectors, a torch profiler run on each side also says how much of the inference the detection steps
take (anchor generation, box coding, NMS, box IoU, clipping and filtering, RoI pooling), each step labelled
with ``record_function`` for the duration of that run only.
"""

import contextlib
import functools
import os
import sys
from typing import Any, Dict, List

import torch
import torchvision
from torchvision.models import detection
from torchvision.models.detection._utils import BoxCoder as TvBoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator as TvAnchorGenerator
from torchvision.models.detection.image_list import ImageList

import pydet_ops

from .workloads import Workload, check_close, uniform_boxes

FPN_SIZES = ((32,), (64,), (128,), (256,), (512,))
FPN_RATIOS = ((0.5, 1.0, 2.0),) * 5


def check_tensor_lists(inputs, expected, actual) -> str:
    if len(expected) != len(actual):
        return f"{len(actual)} tensors, torchvision gave {len(expected)}"
    for e, a in zip(expected, actual):
        if not torch.equal(e, a):
            return "anchors differ"
    return ""


def _anchor_inputs(g):
    # AnchorGenerator reads only shapes: one-channel maps of the FPN sizes for an 800x1344 batch of 2.
    images = ImageList(torch.zeros(2, 1, 800, 1344), [(800, 1344)] * 2)
    maps = [torch.zeros(2, 1, 800 // s, 1344 // s) for s in (4, 8, 16, 32, 64)]
    return images, maps


def _anchor_workloads() -> List[Workload]:
    tv = TvAnchorGenerator(FPN_SIZES, FPN_RATIOS)
    ours = pydet_ops.AnchorGenerator(FPN_SIZES, FPN_RATIOS)

    def uncached(images, maps):
        ours._cache.clear()
        return ours(images, maps)

    shape = "2 x 268,506 anchors"
    return [
        Workload("AnchorGenerator", "FPN defaults, 2 images 800x1344", shape, _anchor_inputs, tv, uncached,
                 check_tensor_lists),
        Workload("AnchorGenerator", "FPN defaults, 2 images, cached", shape, _anchor_inputs, tv, ours,
                 check_tensor_lists),
    ]


def _coder_workloads() -> List[Workload]:
    weights = (10.0, 10.0, 5.0, 5.0)
    tv = TvBoxCoder(weights)
    ours = pydet_ops.BoxCoder(weights)

    def decode_inputs(g):
        boxes = uniform_boxes(1000, g, image=1000.0, lo=16.0, hi=400.0)
        return torch.randn(1000, 91 * 4, generator=g), [boxes]

    def encode_inputs(g):
        anchors = uniform_boxes(268506, g, image=1300.0, lo=16.0, hi=600.0)
        matched = anchors + torch.randn(268506, 4, generator=g) * 8.0
        return matched, anchors

    rtol = dict(rtol=1e-5, atol=1e-4)
    return [
        Workload("BoxCoder.decode", "1000 boxes x 91 classes", "[1000,364] deltas", decode_inputs, tv.decode,
                 ours.decode, functools.partial(check_close, **rtol)),
        Workload("BoxCoder.encode_single", "268k anchors (RPN targets)", "[268506,4]", encode_inputs,
                 tv.encode_single, ours.encode_single, functools.partial(check_close, **rtol)),
    ]


# ----------------------------------------------------------------------------------------------------------
# Whole detectors
# ----------------------------------------------------------------------------------------------------------


def _labelled_steps(model) -> List[tuple]:
    """(owner, attribute, label) of every detection step the model calls, as bound right now."""
    boxes = torchvision.ops.boxes
    steps = [(boxes, name, name) for name in ("batched_nms", "box_iou", "clip_boxes_to_image", "remove_small_boxes")]
    rpn, heads = model.rpn, model.roi_heads
    steps.append((type(rpn.anchor_generator), "forward", "anchors"))
    for coder in {type(rpn.box_coder), type(heads.box_coder)}:
        steps += [(coder, "decode", "box decode"), (coder, "encode", "box encode")]
    for pooler in {type(p) for p in (heads.box_roi_pool, heads.mask_roi_pool) if p is not None}:
        steps.append((pooler, "forward", "RoI pooling"))
    return steps


@contextlib.contextmanager
def _labelled(steps):
    saved = []
    try:
        for owner, name, label, *sync in steps:
            original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            saved.append((owner, name, original))

            if sync:

                def wrapper(*args, __f=original, __label=label, __sync=sync[0], **kwargs):
                    __sync()
                    with torch.profiler.record_function("det::" + __label):
                        result = __f(*args, **kwargs)
                        __sync()
                    return result

            else:

                def wrapper(*args, __f=original, __label=label, **kwargs):
                    with torch.profiler.record_function("det::" + __label):
                        return __f(*args, **kwargs)

            setattr(owner, name, wrapper)
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


@contextlib.contextmanager
def _stderr_silenced():
    """The profiler's native backend logs its start and stop (and a failed GPU probe) to fd 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def detection_share(model, run, sync=None) -> Dict[str, Any]:
    """One profiled run: total time, and time inside each labelled detection step.

    With sync (torch.cuda.synchronize on a GPU), the device is drained before each labelled range opens and
    before it closes, so the ranges' host times cover the device work they launched rather than only the
    launches; the profiled run is slower for it, the timed runs are not affected.
    """
    run()  # warm
    steps = _labelled_steps(model)
    if sync is not None:
        steps = [(owner, name, label, sync) for owner, name, label in steps]
    with _labelled(steps), _stderr_silenced():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            if sync is not None:
                sync()
            with torch.profiler.record_function("det::total"):
                run()
                if sync is not None:
                    sync()
    # Profiler times are in microseconds.
    totals = {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages() if e.key.startswith("det::")}
    total = totals.pop("det::total", 0.0)
    steps = {k[len("det::"):]: v for k, v in sorted(totals.items())}
    spent = sum(steps.values())
    return {"total_s": total, "detection_s": spent, "share": spent / total if total else 0.0, "steps": steps}


def check_detections(inputs, expected, actual) -> str:
    """Same detections: labels equal, scores within 1e-5, boxes within 1e-4 px plus 1e-6 of the largest
    coordinate. A corner is the difference of a centre and a half-size that can both be hundreds of pixels,
    so it carries their rounding (a float32 ulp is 6e-5 px from 512 px on), and torch's float exp is itself
    up to an ulp off the correctly rounded one."""
    for e, a in zip(expected, actual):
        if e["boxes"].shape != a["boxes"].shape or not torch.equal(e["labels"], a["labels"]):
            return "different detections"
        scale = e["boxes"].abs().max().item() if e["boxes"].numel() else 0.0
        if not torch.allclose(e["boxes"], a["boxes"], rtol=0, atol=1e-4 + 1e-6 * scale):
            return f"boxes differ by {(e['boxes'] - a['boxes']).abs().max().item():.3g}"
        if not torch.allclose(e["scores"], a["scores"], rtol=0, atol=1e-5):
            return "scores differ"
    return ""


class DetectorPair:
    """A torchvision detector built twice from the same weights: as is, and while patched."""

    def __init__(self, builder, device: str = "cpu"):
        self.builder = builder
        self.device = device
        self._models = None

    def models(self):
        if self._models is None:
            torch.manual_seed(0)
            reference = self.builder(weights=None, weights_backbone=None, box_score_thresh=0.0).eval()
            with pydet_ops.patch_torchvision():
                patched = self.builder(weights=None, weights_backbone=None, box_score_thresh=0.0).eval()
            patched.load_state_dict(reference.state_dict())
            if self.device != "cpu":
                # Built (and seeded) on the CPU so both devices run the same weights.
                reference, patched = reference.to(self.device), patched.to(self.device)
            self._models = (reference, patched)
        return self._models

    def torchvision(self, images):
        with torch.no_grad():
            return self.models()[0](images)

    def pydet(self, images):
        with pydet_ops.patch_torchvision(), torch.no_grad():
            return self.models()[1](images)

    def profile(self, images) -> Dict[str, Any]:
        reference, patched = self.models()
        sync = torch.cuda.synchronize if self.device == "cuda" else None
        with torch.no_grad():
            before = detection_share(reference, lambda: reference(images), sync)
            with pydet_ops.patch_torchvision():
                after = detection_share(patched, lambda: patched(images), sync)
        return {"torchvision": before, "pydet_ops": after}


def _detector_workloads(device: str = "cpu") -> List[Workload]:
    def images(g):
        # One 480x640 image; the detectors' transform resizes it to 800x1067.
        return ([torch.rand(3, 480, 640, generator=g)],)

    where = "CPU" if device == "cpu" else "CUDA"
    out = []
    for name in ("fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn"):
        pair = DetectorPair(getattr(detection, name), device)
        out.append(
            Workload(name, f"{where} inference, 1 image 480x640 -> 800x1067", "eval, random weights", images,
                     pair.torchvision, pair.pydet, check_detections, heavy=True, profile=pair.profile)
        )
    return out


def detection_workloads(device: str = "cpu") -> List[Workload]:
    return _anchor_workloads() + _coder_workloads() + _detector_workloads(device)
