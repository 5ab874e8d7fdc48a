"""Benchmark workloads: realistic detector shapes, each timed for torchvision and pydet_ops on the same inputs.

A workload builds its inputs once (seeded), names the two callables to compare and says how their outputs are
checked for equality before anything is timed.

Every list is built for one device. Inputs are always generated on the CPU from the seed and then moved to the
workload's device, so a case holds the same values on every device. Any device other than "cpu" gets the GPU
list: the CPU cases (same shapes) plus cases that only make sense on a GPU (bf16 under autocast, CUDA graphs,
torchvision on channels_last maps, sizes the CPU reference cannot reach in reasonable time).
"""

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torchvision
from torchvision.models.detection.image_list import ImageList

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
    device: str = "cpu"  # where the inputs live and both sides run
    skip: str = ""  # why this case is not run on its device ("" = it runs)

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


def check_fixed_nms(inputs, expected: torch.Tensor, actual) -> str:
    """nms_fixed's (keep, count) against torchvision's nms(...)[:max_output]: keep[:count] the same kept
    indices (ties in score aside), the rest -1."""
    keep, count = actual
    max_output = inputs[3]
    if keep.dtype != torch.int64 or tuple(keep.shape) != (max_output,):
        return f"keep is {keep.dtype}{tuple(keep.shape)}, expected int64[{max_output}]"
    n = int(count)
    if n != expected.numel():
        return f"count {n}, torchvision kept {expected.numel()} (max_output {max_output})"
    if not bool((keep[n:] == -1).all()):
        return "padding after count is not -1"
    return check_kept_indices(inputs, expected, keep[:n])


def check_graph_replay(inputs, expected: torch.Tensor, actual) -> str:
    """A replayed CUDA graph of nms_fixed must give exactly what an eager call gives, and that must agree
    with torchvision."""
    eager_keep, eager_count = pydet_ops.nms_fixed(*inputs)
    if not (torch.equal(eager_keep, actual[0]) and torch.equal(eager_count, actual[1])):
        return "CUDA graph replay differs from the eager call"
    return check_fixed_nms(inputs, expected, actual)


class CudaGraphReplay:
    """fn captured in a CUDA graph on its first call with a set of inputs; every call replays the graph.

    A graph reads and writes fixed addresses, so the inputs must be the same tensors on every call (a workload
    passes the same input tuple each time; other inputs trigger a new capture) and the result is the graph's
    own output tensors, overwritten by the next replay.
    """

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self._args: Optional[Tuple[Any, ...]] = None
        self._graph = None
        self._out = None

    def __call__(self, *args):
        if self._args is None or len(args) != len(self._args) or any(a is not b for a, b in zip(args, self._args)):
            self._capture(args)
        self._graph.replay()
        return self._out

    def _capture(self, args) -> None:
        # Warm-up on a side stream before capturing, as CUDA graph capture requires: lazy initialisation and
        # first allocations must not happen inside the capture.
        self._graph = self._out = self._args = None
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.fn(*args)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.fn(*args)
        self._graph, self._out, self._args = graph, out, args


def _tv_nms_top(boxes, scores, iou_threshold, max_output):
    return torchvision.ops.nms(boxes, scores, iou_threshold)[:max_output]


def _nms_workloads(device: str = "cpu") -> List[Workload]:
    gpu = device != "cpu"
    out = []
    # 100k boxes only on a GPU: torchvision's CPU NMS would take tens of seconds there (see the sweep instead).
    for n in (1000, 5000, 20000) + ((100000,) if gpu else ()):
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
    if gpu:
        # Fixed-size NMS as used for proposal selection (post-NMS top 1000), eager and replayed from a CUDA
        # graph; both against torchvision's nms cut to the same length, so the two rows share a baseline.
        n, max_output = 20000, 1000
        fixed_inputs = lambda g: (uniform_boxes(n, g), torch.rand(n, generator=g), 0.5, max_output)  # noqa: E731
        shape = f"{n} boxes, iou 0.5, max_output {max_output}"
        out.append(
            Workload("nms_fixed", f"random 20k, max {max_output}, eager", shape, fixed_inputs, _tv_nms_top,
                     pydet_ops.nms_fixed, check_fixed_nms)
        )
        out.append(
            Workload("nms_fixed", f"random 20k, max {max_output}, CUDA graph replay", shape, fixed_inputs,
                     _tv_nms_top, CudaGraphReplay(pydet_ops.nms_fixed), check_graph_replay)
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


def bf16_map_and_rois(g: torch.Generator):
    """The map of feature_map_and_rois as a bfloat16 channels_last tensor (what a bf16 channels_last model
    hands its RoI heads); RoIs stay float32, as proposals are."""
    _, x_cl, rois = feature_map_and_rois(g)
    return x_cl.to(torch.bfloat16), rois


def _tv_roi_align_autocast_bf16(x, rois):
    # torchvision has no bf16 kernel path of its own: under autocast it casts the map to float32, pools, and
    # casts the result back to bf16. That is what a bf16 model running torchvision pays.
    with torch.autocast("cuda", dtype=torch.bfloat16):
        return torchvision.ops.roi_align(x, rois, 7, 0.25, 2, True)


def check_close_bf16(inputs, expected: torch.Tensor, actual: torch.Tensor) -> str:
    # Both sides round a float32 result to bf16 once; a float32 difference in the last bit can move that
    # rounding by one bf16 step (up to 2^-7 relative). Compared in float32 so the tolerance is not rounded too.
    if expected.dtype != actual.dtype or expected.shape != actual.shape:
        return check_close(inputs, expected, actual)
    return check_close(inputs, expected.float(), actual.float(), rtol=2.0**-7, atol=1e-5)


def _roi_layout(layout: str) -> str:
    return "channels_last" if layout == "cl" else "NCHW"


def _roi_workloads(device: str = "cpu") -> List[Workload]:
    # On a GPU, every case that gives pydet_ops a channels_last map also gets a "both sides" twin in which
    # torchvision is handed the same channels_last map (its CUDA kernels convert it to NCHW first: the cost a
    # channels_last model pays), next to the rows where torchvision gets NCHW, its fastest layout.
    gpu = device != "cpu"
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
    for size, sr in ((7, 2),) + (((7, 0), (14, 2), (14, 0)) if gpu else ()):
        out.append(
            Workload(
                "roi_align",
                f"{size}x{size} sr={sr} channels_last, both sides",
                "1x256x200x200, 512 RoIs",
                feature_map_and_rois,
                align(torchvision.ops.roi_align, "cl", size, sr),
                align(pydet_ops.roi_align, "cl", size, sr),
                check_close,
            )
        )
    if gpu:
        out.append(
            Workload(
                "roi_align",
                "7x7 sr=2 bf16 channels_last, torchvision autocast",
                "1x256x200x200 bf16, 512 RoIs",
                bf16_map_and_rois,
                _tv_roi_align_autocast_bf16,
                lambda x, rois: pydet_ops.roi_align(x, rois, 7, 0.25, 2, True),
                check_close_bf16,
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
    if gpu:
        out.append(
            Workload(
                "roi_align_fwd_bwd",
                "7x7 sr=2 channels_last, both sides",
                "1x256x200x200, 512 RoIs",
                fb_inputs,
                forward_backward(torchvision.ops.roi_align, "cl"),
                forward_backward(pydet_ops.roi_align, "cl"),
                check_close,
            )
        )

        # The backward alone: the raw backward ops that each library's autograd formula calls, on the same
        # pooled gradient (channels_last for pydet_ops' channels_last case, as its autograd formula passes it),
        # so neither the forward nor the autograd engine is in the time.
        def backward(op, layout):
            def run(x, x_cl, rois, grad, grad_cl):
                b, c, h, w = x.shape
                return op(grad_cl if layout == "cl" else grad, rois, 0.25, 7, 7, b, c, h, w, 2, True)

            return run

        def bwd_inputs(g):
            x, x_cl, rois, grad = fb_inputs(g)
            return x, x_cl, rois, grad, grad.contiguous(memory_format=torch.channels_last)

        # Looked up at call time: building the list must not depend on which private ops a build registers.
        for layout in ("nchw", "cl"):
            out.append(
                Workload(
                    "roi_align_bwd",
                    f"7x7 sr=2 {_roi_layout(layout)}",
                    "1x256x200x200, 512 RoIs",
                    bwd_inputs,
                    backward(lambda *a: torch.ops.torchvision._roi_align_backward(*a), "nchw"),
                    backward(lambda *a: torch.ops.pydet_ops._roi_align_backward(*a), layout),
                    check_close,
                )
            )

    def pool(fn, layout):
        return lambda x, x_cl, rois: fn(x_cl if layout == "cl" else x, rois, 7, 0.25)

    for tv_layout, layout in (("nchw", "nchw"), ("nchw", "cl")) + ((("cl", "cl"),) if gpu else ()):
        out.append(
            Workload(
                "roi_pool",
                f"7x7 {_roi_layout(layout)}" + (", both sides" if tv_layout == "cl" else ""),
                "1x256x200x200, 512 RoIs",
                feature_map_and_rois,
                pool(torchvision.ops.roi_pool, tv_layout),
                pool(pydet_ops.roi_pool, layout),
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
        # torchvision gets the NCHW maps (its fastest) but in the "both sides" case; pydet_ops the case's layout.
        return lambda feats, feats_cl, boxes, shapes: pooler(feats_cl if layout == "cl" else feats, boxes, shapes)

    for tv_layout, layout in (("nchw", "nchw"), ("nchw", "cl")) + ((("cl", "cl"),) if gpu else ()):
        out.append(
            Workload(
                "MultiScaleRoIAlign",
                f"4 FPN levels, 800x1344, {_roi_layout(layout)}" + (", both sides" if tv_layout == "cl" else ""),
                "256 ch, 1000 RoIs, 7x7",
                fpn_inputs_both,
                pooler_on(tv_layout, torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)),
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


# torchvision ops each workload's torchvision side runs, for the ones that need a compiled kernel.
_TORCHVISION_KERNELS = {
    "nms": "nms",
    "batched_nms": "nms",
    "nms_fixed": "nms",
    "roi_align": "roi_align",
    "roi_align_fwd_bwd": "roi_align",
    "roi_align_bwd": "_roi_align_backward",
    "roi_pool": "roi_pool",
    "MultiScaleRoIAlign": "roi_align",
}


def _skip_reason(workload: Workload) -> str:
    """Why a case cannot be compared on its device: torchvision built without kernels for that device."""
    if workload.device != "cuda":
        return ""
    op = _TORCHVISION_KERNELS.get(workload.op)
    if op and not torch._C._dispatch_has_kernel_for_dispatch_key(f"torchvision::{op}", "CUDA"):
        return f"torchvision {torchvision.__version__} has no CUDA kernel for torchvision::{op}"
    return ""


def all_workloads(device: str = "cpu") -> List[Workload]:
    from .detection import detection_workloads
    from .sweeps import sweep_workloads

    workloads = (
        _nms_workloads(device)
        + _iou_workloads()
        + _roi_workloads(device)
        + _helper_workloads()
        + detection_workloads(device)
        + sweep_workloads()
    )
    for w in workloads:
        w.device = device
        w.skip = w.skip or _skip_reason(w)
    return workloads


def select(ops_filter: str = "", quick: bool = False, device: str = "cpu") -> List[Workload]:
    """Workloads whose op name or case contains one of the comma-separated filter words (all when empty);
    with quick, without the heavy sweep points. Built for `device` (skipped ones included, with `skip` set)."""
    words = [w.strip() for w in ops_filter.split(",") if w.strip()]
    workloads = [w for w in all_workloads(device) if not (quick and w.heavy)]
    if not words:
        return workloads
    return [w for w in workloads if any(word == w.op or word in w.name for word in words)]


def to_device(obj: Any, device: str) -> Any:
    """obj with every tensor in it (through tuples, lists, dicts and ImageLists) moved to device, each keeping
    its memory format."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, ImageList):
        return ImageList(obj.tensors.to(device), obj.image_sizes)
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(x, device) for x in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def inputs_for(workload: Workload, seed: int = 0) -> Tuple[Any, ...]:
    inputs = workload.make_inputs(torch.Generator().manual_seed(seed))
    if workload.device == "cpu":
        return inputs
    return to_device(inputs, workload.device)


__all__: List[str] = [
    "Workload",
    "all_workloads",
    "select",
    "inputs_for",
    "to_device",
    "uniform_boxes",
    "rpn_like_boxes",
]
