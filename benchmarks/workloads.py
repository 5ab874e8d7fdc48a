"""Benchmark workloads: realistic detector shapes, each timed for torchvision and pydet_ops on the same inputs.

A workload builds its inputs once (seeded), names the two callables to compare and says how their outputs are
checked for equality before anything is timed.
"""

import dataclasses
from typing import Any, Callable, List, Tuple

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
    return _nms_workloads() + _iou_workloads() + _helper_workloads()


def select(ops_filter: str = "") -> List[Workload]:
    """Workloads whose op name contains one of the comma-separated filter words (all when empty)."""
    words = [w.strip() for w in ops_filter.split(",") if w.strip()]
    workloads = all_workloads()
    if not words:
        return workloads
    return [w for w in workloads if any(word == w.op or word in w.name for word in words)]


def inputs_for(workload: Workload, seed: int = 0) -> Tuple[Any, ...]:
    return workload.make_inputs(torch.Generator().manual_seed(seed))


__all__: List[str] = ["Workload", "all_workloads", "select", "inputs_for", "uniform_boxes", "rpn_like_boxes"]
