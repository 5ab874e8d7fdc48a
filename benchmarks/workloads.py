"""Benchmark workloads: realistic detector shapes, each timed for torchvision and pydet_ops on the same inputs.

A workload builds its inputs once (seeded), names the two callables to compare and says how their outputs are
checked for equality before anything is timed.
"""

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torchvision

import pydet_ops


@dataclasses.dataclass
class Workload:
    op: str  # public op name, e.g. "nms"
    case: str  # what makes this case different, e.g. "random 20k"
    shape: str  # short shape summary for tables
    make_inputs: Callable[[torch.Generator], Tuple[Any, ...]]
    torchvision_fn: Callable[..., Any]
    pydet_fn: Callable[..., Any]
    check: Callable[[Tuple[Any, ...], Any, Any], str]  # "" when equal, else what differs
    sweep: str = ""  # name of the scaling curve this case is a point of ("" for none)
    size: int = 0  # the swept size (x axis of the curve)
    heavy: bool = False  # too slow for --quick (torchvision takes seconds)
    profile: Optional[Callable[..., Dict[str, Any]]] = None  # extra figures from the inputs (whole detectors)

    @property
    def name(self) -> str:
        return f"{self.op}[{self.case}]"


def uniform_boxes(n: int, g: torch.Generator, image: float = 1000.0, lo: float = 10.0, hi: float = 110.0) -> torch.Tensor:
    """n boxes with top-left uniform in the image and sides uniform in [lo, hi) pixels."""
    xy = torch.rand(n, 2, generator=g) * image
    wh = lo + torch.rand(n, 2, generator=g) * (hi - lo)
    return torch.cat([xy, xy + wh], dim=1)


def rpn_like_boxes(n: int, objects: int, g: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Proposals as an RPN emits them: n boxes jittered around `objects` objects, scores higher near the object."""
    centres = uniform_boxes(objects, g, image=800.0, lo=32.0, hi=320.0)
    owner = torch.randint(0, objects, (n,), generator=g)
    base = centres[owner]
    size = (base[:, 2:] - base[:, :2]).repeat(1, 2)
    noise = torch.randn(n, 4, generator=g) * 0.15
    boxes = base + noise * size
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1.0)
    scores = torch.sigmoid(2.0 - 8.0 * noise.abs().mean(dim=1) + 0.5 * torch.randn(n, generator=g))
    return boxes, scores


def check_kept_indices(inputs, expected: torch.Tensor, actual: torch.Tensor) -> str:
    """NMS outputs agree when the kept indices are equal, or differ only in the order of tied scores."""
    if torch.equal(expected, actual):
        return ""
    scores = inputs[1]
    if expected.shape == actual.shape and torch.equal(scores[expected], scores[actual]) and set(
        expected.tolist()
    ) == set(actual.tolist()):
        return ""
    return f"kept {actual.numel()} boxes, torchvision kept {expected.numel()}"


def check_close(inputs, expected: torch.Tensor, actual: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-6) -> str:
    if expected.dtype != actual.dtype or expected.shape != actual.shape:
        return f"dtype/shape {actual.dtype}{tuple(actual.shape)} vs {expected.dtype}{tuple(expected.shape)}"
    if torch.allclose(expected, actual, rtol=rtol, atol=atol, equal_nan=True):
        return ""
    return f"max abs difference {(expected - actual).abs().nan_to_num().max().item():.3g}"


def check_equal(inputs, expected: torch.Tensor, actual: torch.Tensor) -> str:
    return "" if torch.equal(expected, actual) else "outputs differ"


def _nms_workloads() -> List[Workload]:
    out = []
    for n in (1000, 5000, 20000):
        out.append(
            Workload(
                "nms",
                f"random {n // 1000}k",
                f"{n} boxes, iou 0.5",
                lambda g, n=n: (uniform_boxes(n, g), torch.rand(n, generator=g), 0.5),
                torchvision.ops.nms,
                pydet_ops.nms,
                check_kept_indices,
            )
        )
    out.append(
        Workload(
            "nms",
            "rpn-like 6000",
            "6000 boxes / 30 objects, iou 0.7",
            lambda g: (*rpn_like_boxes(6000, 30, g), 0.7),
            torchvision.ops.nms,
            pydet_ops.nms,
            check_kept_indices,
        )
    )
    for n in (1000, 5000, 20000):
        out.append(
            Workload(
                "batched_nms",
                f"{n // 1000}k x 80 classes",
                f"{n} boxes, 80 classes, iou 0.5",
                lambda g, n=n: (
                    uniform_boxes(n, g),
                    torch.rand(n, generator=g),
                    torch.randint(0, 80, (n,), generator=g),
                    0.5,
                ),
                torchvision.ops.batched_nms,
                pydet_ops.batched_nms,
                check_kept_indices,
            )
        )
    return out


def _iou_workloads() -> List[Workload]:
    out = []
    for name in ("box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou"):
        for n, m, label in ((1000, 2000, "1000x2000"), (200000, 20, "anchors 200000x20")):
            out.append(
                Workload(
                    name,
                    label,
                    f"[{n},4] x [{m},4]",
                    lambda g, n=n, m=m: (uniform_boxes(n, g), uniform_boxes(m, g)),
                    getattr(torchvision.ops, name),
                    getattr(pydet_ops, name),
                    check_close,
                )
            )
    return out


def feature_map_and_rois(g: torch.Generator, channels: int = 256, size: int = 200, num_rois: int = 512):
    """A [1, C, size, size] map (stride 4) and RoIs of 10-110 px boxes in its 4*size image."""
    x = torch.randn(1, channels, size, size, generator=g)
    image = 4.0 * size
    xy = torch.rand(num_rois, 2, generator=g) * (image - 110.0)
    wh = 10.0 + torch.rand(num_rois, 2, generator=g) * 100.0
    rois = torch.cat([torch.zeros(num_rois, 1), xy, xy + wh], dim=1)
    return x, x.contiguous(memory_format=torch.channels_last), rois


def _roi_workloads() -> List[Workload]:
    out = []

    def align(fn, layout, size, sr):
        # torchvision always gets the NCHW map (its fastest); pydet_ops gets the layout of the case.
        return lambda x, x_cl, rois: fn(x_cl if layout == "cl" else x, rois, size, 0.25, sr, True)

    for size in (7, 14):
        for sr in (2, 0):
            for layout in ("nchw", "cl"):
                out.append(
                    Workload(
                        "roi_align",
                        f"{size}x{size} sr={sr} {'channels_last' if layout == 'cl' else 'NCHW'}",
                        "1x256x200x200, 512 RoIs",
                        feature_map_and_rois,
                        align(torchvision.ops.roi_align, "nchw", size, sr),
                        align(pydet_ops.roi_align, layout, size, sr),
                        check_close,
                    )
                )
    out.append(
        Workload(
            "roi_align",
            "7x7 sr=2 channels_last, both sides",
            "1x256x200x200, 512 RoIs",
            feature_map_and_rois,
            align(torchvision.ops.roi_align, "cl", 7, 2),
            align(pydet_ops.roi_align, "cl", 7, 2),
            check_close,
        )
    )

    def forward_backward(fn, layout):
        def run(x, x_cl, rois, grad):
            inp = (x_cl if layout == "cl" else x).detach().requires_grad_()
            y = fn(inp, rois, 7, 0.25, 2, True)
            return torch.autograd.grad(y, inp, grad)[0]

        return run

    def fb_inputs(g):
        x, x_cl, rois = feature_map_and_rois(g)
        return x, x_cl, rois, torch.randn(rois.shape[0], x.shape[1], 7, 7, generator=g)

    for layout in ("nchw", "cl"):
        out.append(
            Workload(
                "roi_align_fwd_bwd",
                f"7x7 sr=2 {'channels_last' if layout == 'cl' else 'NCHW'}",
                "1x256x200x200, 512 RoIs",
                fb_inputs,
                forward_backward(torchvision.ops.roi_align, "nchw"),
                forward_backward(pydet_ops.roi_align, layout),
                check_close,
            )
        )
    for layout in ("nchw", "cl"):
        out.append(
            Workload(
                "roi_pool",
                f"7x7 {'channels_last' if layout == 'cl' else 'NCHW'}",
                "1x256x200x200, 512 RoIs",
                feature_map_and_rois,
                lambda x, x_cl, rois: torchvision.ops.roi_pool(x, rois, 7, 0.25),
                (lambda x, x_cl, rois: pydet_ops.roi_pool(x_cl, rois, 7, 0.25))
                if layout == "cl"
                else (lambda x, x_cl, rois: pydet_ops.roi_pool(x, rois, 7, 0.25)),
                check_close,
            )
        )

    def fpn_inputs(g):
        # FPN levels of an 800x1344 image (strides 4..32) and 1000 proposals of 16..512 px.
        feats = {
            str(i): torch.randn(1, 256, 800 // 2 ** (i + 2), 1344 // 2 ** (i + 2), generator=g) for i in range(4)
        }
        side = torch.exp(torch.empty(1000, 2).uniform_(4.0 * 0.693, 9.0 * 0.693, generator=g))
        xy = torch.rand(1000, 2, generator=g) * torch.tensor([1344.0, 800.0])
        boxes = torch.cat([xy, xy + side], dim=1)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(max=1344.0)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(max=800.0)
        return feats, [boxes], [(800, 1344)]

    def fpn_inputs_both(g):
        feats, boxes, shapes = fpn_inputs(g)
        feats_cl = {k: v.contiguous(memory_format=torch.channels_last) for k, v in feats.items()}
        return feats, feats_cl, boxes, shapes

    def pooler_on(layout, pooler):
        # torchvision always gets the NCHW maps (its fastest); pydet_ops the layout of the case.
        return lambda feats, feats_cl, boxes, shapes: pooler(feats_cl if layout == "cl" else feats, boxes, shapes)

    for layout in ("nchw", "cl"):
        out.append(
            Workload(
                "MultiScaleRoIAlign",
                f"4 FPN levels, 800x1344, {'channels_last' if layout == 'cl' else 'NCHW'}",
                "256 ch, 1000 RoIs, 7x7",
                fpn_inputs_both,
                pooler_on("nchw", torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)),
                pooler_on(layout, pydet_ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)),
                check_close,
            )
        )
    return out


def _helper_workloads() -> List[Workload]:
    n = 200000

    def boxes(g):
        return (uniform_boxes(n, g),)

    return [
        Workload("box_area", "200k", f"[{n},4]", boxes, torchvision.ops.box_area, pydet_ops.box_area, check_equal),
        Workload(
            "box_convert",
            "xyxy->cxcywh 200k",
            f"[{n},4]",
            lambda g: (uniform_boxes(n, g), "xyxy", "cxcywh"),
            torchvision.ops.box_convert,
            pydet_ops.box_convert,
            check_equal,
        ),
        Workload(
            "clip_boxes_to_image",
            "200k",
            f"[{n},4]",
            lambda g: (uniform_boxes(n, g, image=1100.0) - 50.0, (800, 1000)),
            torchvision.ops.clip_boxes_to_image,
            pydet_ops.clip_boxes_to_image,
            check_equal,
        ),
        Workload(
            "remove_small_boxes",
            "200k",
            f"[{n},4]",
            lambda g: (uniform_boxes(n, g, lo=0.0), 16.0),
            torchvision.ops.remove_small_boxes,
            pydet_ops.remove_small_boxes,
            check_equal,
        ),
    ]


def all_workloads() -> List[Workload]:
    from .detection import detection_workloads
    from .sweeps import sweep_workloads

    return (
        _nms_workloads()
        + _iou_workloads()
        + _roi_workloads()
        + _helper_workloads()
        + detection_workloads()
        + sweep_workloads()
    )


def select(ops_filter: str = "", quick: bool = False) -> List[Workload]:
    """Workloads whose op name or case contains one of the comma-separated filter words (all when empty);
    with quick, without the heavy sweep points."""
    words = [w.strip() for w in ops_filter.split(",") if w.strip()]
    workloads = [w for w in all_workloads() if not (quick and w.heavy)]
    if not words:
        return workloads
    return [w for w in workloads if any(word == w.op or word in w.name for word in words)]


def inputs_for(workload: Workload, seed: int = 0) -> Tuple[Any, ...]:
    return workload.make_inputs(torch.Generator().manual_seed(seed))


__all__: List[str] = ["Workload", "all_workloads", "select", "inputs_for", "uniform_boxes", "rpn_like_boxes"]
