"""RoI align and RoI pool with torchvision.ops' names, signatures and results.

Both accept NCHW and channels_last feature maps and return the input's memory format; float16 and bfloat16
maps are read directly and computed in float32. Gradients are deterministic (bitwise identical across runs
and thread counts). Rules for unusual input, the same for every function and module here:

* ``boxes`` is a ``Tensor[K, 5]`` (batch index, x1, y1, x2, y2) or a list of per-image ``Tensor[L, 4]``;
  a ``Tensor[K, 4]`` is an error naming ``rois``. A batch index outside ``[0, N)`` is an error.
* ``output_size`` and ``spatial_scale`` must be positive, ``input`` 4-D floating point: ``RuntimeError``
  otherwise. Scalar arguments of the wrong type (a string, None, a float for an int, a non-bool ``aligned``)
  are a ``TypeError`` or ``ValueError`` naming them; ``sampling_ratio`` must fit in 32 bits. ``boxes`` of
  another float dtype than ``input`` are converted to input's compute type.
* RoIs partly or fully outside the map: samples outside ``[-1, H] x [-1, W]`` contribute zero, so a RoI
  fully outside pools to 0. A RoI with a NaN coordinate pools to 0 (argmax -1 in roi_pool).
* No RoIs: an empty ``[0, C, ph, pw]`` result, and a zero gradient.
"""

from typing import List, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from . import _autograd  # noqa: F401  (registers the autograd formulas)
from ._args import as_bool, as_float, as_int, as_size, check_list_device, check_same_device, check_tensor
from ._dropin import DropInMeta

__all__ = ["roi_align", "roi_pool", "RoIAlign", "RoIPool", "boxes_to_rois"]


def boxes_to_rois(boxes: Union[Tensor, Sequence[Tensor]], op: str = "roi_align") -> Tensor:
    """A ``Tensor[K, 5]`` of RoIs from a tensor of RoIs or from a list of per-image ``Tensor[L, 4]`` boxes."""
    if isinstance(boxes, Tensor):
        return boxes
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(f"{op}: boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], got {type(boxes).__name__}")
    for i, b in enumerate(boxes):
        if not isinstance(b, Tensor) or b.dim() != 2 or b.shape[1] != 4:
            shape = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
            raise ValueError(f"{op}: boxes[{i}] must be a Tensor[L, 4], got {shape}")
    if len(boxes) == 0:
        raise ValueError(f"{op}: boxes is an empty list; pass one Tensor[L, 4] per image")
    check_list_device(op, "boxes", boxes)
    concat = torch.cat(list(boxes), dim=0)
    ids = torch.cat(
        [torch.full((b.shape[0], 1), i, dtype=concat.dtype, device=concat.device) for i, b in enumerate(boxes)]
    )
    return torch.cat([ids, concat], dim=1)


def roi_align(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: Union[int, Tuple[int, int]],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoI align (Mask R-CNN): average of bilinear samples over each output bin.

    Args:
        input (Tensor[N, C, H, W]): feature map, NCHW or channels_last; float16, bfloat16, float32 or float64.
        boxes (Tensor[K, 5] or List[Tensor[L, 4]]): RoIs in image coordinates, (batch index, x1, y1, x2, y2),
            or one box tensor per image.
        output_size (int or Tuple[int, int]): pooled (height, width).
        spatial_scale (float): feature-map size / image size. Default: 1.0.
        sampling_ratio (int): sampling points per bin along each axis; <= 0 means ceil(roi size / output
            size) (adaptive). Default: -1.
        aligned (bool): shift box coordinates by -0.5 pixel (pixel-centre alignment). Default: False.

    Returns:
        Tensor[K, C, output_size[0], output_size[1]] in input's dtype and memory format.
    """
    op = "roi_align"
    rois = boxes_to_rois(boxes, op)
    check_tensor(op, "input", input)
    check_same_device(op, input=input, rois=rois)
    ph, pw = as_size(op, "output_size", output_size)
    return torch.ops.pydet_ops.roi_align(
        input,
        rois,
        as_float(op, "spatial_scale", spatial_scale),
        ph,
        pw,
        as_int(op, "sampling_ratio", sampling_ratio),
        as_bool(op, "aligned", aligned),
    )


def roi_pool(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: Union[int, Tuple[int, int]],
    spatial_scale: float = 1.0,
) -> Tensor:
    """RoI max pooling (Fast R-CNN): the maximum over each output bin of the RoI snapped to whole pixels.

    Args:
        input (Tensor[N, C, H, W]): feature map, NCHW or channels_last; float16, bfloat16, float32 or float64.
        boxes (Tensor[K, 5] or List[Tensor[L, 4]]): RoIs, as in :func:`roi_align`.
        output_size (int or Tuple[int, int]): pooled (height, width).
        spatial_scale (float): feature-map size / image size. Default: 1.0.

    Returns:
        Tensor[K, C, output_size[0], output_size[1]] in input's dtype and memory format; empty bins are 0.
    """
    op = "roi_pool"
    rois = boxes_to_rois(boxes, op)
    check_tensor(op, "input", input)
    check_same_device(op, input=input, rois=rois)
    ph, pw = as_size(op, "output_size", output_size)
    output, _ = torch.ops.pydet_ops.roi_pool(input, rois, as_float(op, "spatial_scale", spatial_scale), ph, pw)
    return output


class RoIAlign(nn.Module, metaclass=DropInMeta):
    """Module form of :func:`roi_align`."""

    def __init__(
        self,
        output_size: Union[int, Tuple[int, int]],
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool = False,
    ):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Union[Tensor, List[Tensor]]) -> Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned})"
        )


class RoIPool(nn.Module, metaclass=DropInMeta):
    """Module form of :func:`roi_pool`."""

    def __init__(self, output_size: Union[int, Tuple[int, int]], spatial_scale: float):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois: Union[Tensor, List[Tensor]]) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale})"
