"""Anchor boxes: torchvision's ``AnchorGenerator`` with every level written by one op, and the single-level
grid of the original Faster R-CNN.

    gen = AnchorGenerator(sizes=((32,), (64,), (128,), (256,), (512,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    anchors = gen(image_list, feature_maps)   # one Tensor[A, 4] per image, equal to torchvision's

Anchor order (as torchvision): level after level; within a level, grid row after row, column after column;
within a location, the cell anchors (aspect ratio major, size minor).
"""

from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ._args import as_float, as_int, as_pair, as_positive_numbers, check_list_device, check_tensor
from ._dropin import DropInMeta

__all__ = ["AnchorGenerator", "grid_anchors", "single_level_anchors"]


def grid_anchors(
    cell_anchors: Sequence[Tensor],
    grid_sizes: Sequence[Tuple[int, int]],
    strides: Sequence[Tuple[int, int]],
    offset: float = 0.0,
) -> Tensor:
    """All anchors of all levels in one ``Tensor[sum_l H_l * W_l * A_l, 4]``.

    ``anchor = shift + offset + cell_anchors[l][a]`` with ``shift = (x * stride_x, y * stride_y) * 2`` for the
    location (y, x) of level l; the dtype and device are those of the cell anchors.

    Args:
        cell_anchors (List[Tensor[A_l, 4]]): the anchors of one location (origin at 0) per level.
        grid_sizes (List[(height, width)]): feature-map size per level.
        strides (List[(stride_y, stride_x)]): pixels between locations per level.
        offset (float): added to every shift (e.g. half a stride to centre anchors on their cell).
    """
    if not (len(cell_anchors) == len(grid_sizes) == len(strides)):
        raise ValueError(
            f"grid_anchors: cell_anchors has {len(cell_anchors)} levels, grid_sizes {len(grid_sizes)} and "
            f"strides {len(strides)}; they must match"
        )
    op = "grid_anchors"
    if len(cell_anchors) == 0:
        raise ValueError(f"{op}: at least one level is needed")
    for i, c in enumerate(cell_anchors):
        check_tensor(op, f"cell_anchors[{i}]", c)
    check_list_device(op, "cell_anchors", cell_anchors)
    cells = cell_anchors[0] if len(cell_anchors) == 1 else torch.cat(list(cell_anchors))
    return torch.ops.pydet_ops.grid_anchors(
        cells,
        [int(c.shape[0]) for c in cell_anchors],
        [as_int(op, "grid_sizes", v) for g in grid_sizes for v in g],
        [as_int(op, "strides", v) for s in strides for v in s],
        as_float(op, "offset", offset),
    )


def single_level_anchors(
    feature_size: Tuple[int, int],
    stride: int = 16,
    scales: Sequence[float] = (8, 16, 32),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
) -> Tensor:
    """The anchors of the original Faster R-CNN: one feature map, every location its own centre.

    Location (y, x) is centred at ``(stride / 2 + x * stride, stride / 2 + y * stride)``; each gets
    ``len(scales) * len(aspect_ratios)`` anchors, scale major, of width ``stride * scale * sqrt(ratio)`` and
    height ``stride * scale / sqrt(ratio)`` (here the ratio is width / height; torchvision's
    ``AnchorGenerator`` uses height / width). Not rounded. The defaults give 9 anchors of 128, 256 and 512
    pixels per 16-pixel cell.

    Returns:
        Tensor[H * W * len(scales) * len(aspect_ratios), 4] (x1, y1, x2, y2), location major.
    """
    op = "single_level_anchors"
    height, width = as_pair(op, "feature_size", feature_size)
    if height < 0 or width < 0:
        raise ValueError(f"{op}: feature_size must be non-negative, got {(height, width)}")
    if not (isinstance(stride, int) and stride > 0):
        raise ValueError(f"{op}: stride must be a positive int, got {stride!r}")
    scale = torch.tensor(as_positive_numbers(op, "scales", scales), dtype=torch.float32)
    ratio = torch.tensor(as_positive_numbers(op, "aspect_ratios", aspect_ratios), dtype=torch.float32)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{op}: dtype must be a torch.dtype, got {dtype!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"{op}: dtype must be a floating-point dtype, got {dtype}")
    w = (stride * scale)[:, None] * torch.sqrt(ratio)[None, :]
    h = (stride * scale)[:, None] * torch.sqrt(1 / ratio)[None, :]
    cells = torch.stack([-(w / 2), -(h / 2), w / 2, h / 2], dim=-1).reshape(-1, 4)
    cells = cells.to(dtype=dtype, device=device)
    return grid_anchors([cells], [(height, width)], [(stride, stride)], offset=stride / 2)


class AnchorGenerator(nn.Module, metaclass=DropInMeta):
    """Anchors for a set of feature maps, with sizes and aspect ratios per level.

    Same constructor, methods and results as ``torchvision.models.detection.anchor_utils.AnchorGenerator``:
    ``sizes[l]`` and ``aspect_ratios[l]`` give level l's anchors (``len(sizes[l]) * len(aspect_ratios[l])`` per
    location, rounded to whole pixels as torchvision rounds them); level l's stride is image size // feature
    size. The anchors of all levels are written by one op, and the result is cached per (feature sizes,
    strides, dtype, device), so repeated image sizes cost a copy.

    One deliberate difference: torchvision converts its cell anchors in place to the feature maps' dtype,
    so after a float16 call its float32 anchors carry float16 rounding (visible for sizes above 2048).
    Here every dtype is converted from the cell anchors as built (or as last assigned).

    Args:
        sizes (Tuple[Tuple[int]]): anchor sizes (sqrt of area, pixels) per level.
        aspect_ratios (Tuple[Tuple[float]]): height / width ratios per level (one tuple is used for all levels).
    """

    __annotations__ = {"cell_anchors": List[torch.Tensor]}
    _CACHE_SIZE = 16

    def __init__(
        self,
        sizes=((128, 256, 512),),
        aspect_ratios=((0.5, 1.0, 2.0),),
    ):
        super().__init__()
        op = "AnchorGenerator"
        for name, value in (("sizes", sizes), ("aspect_ratios", aspect_ratios)):
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{op}: {name} must be a tuple with one tuple per level, got {value!r}")
            if len(value) == 0:
                raise ValueError(f"{op}: {name} must describe at least one level, got {value!r}")
        if not isinstance(sizes[0], (list, tuple)):
            sizes = tuple((s,) for s in sizes)
        if not isinstance(aspect_ratios[0], (list, tuple)):
            aspect_ratios = (aspect_ratios,) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError(
                f"AnchorGenerator: sizes has {len(sizes)} levels but aspect_ratios has {len(aspect_ratios)}; "
                "give one tuple of each per feature map"
            )
        for level_sizes, level_ratios in zip(sizes, aspect_ratios):
            as_positive_numbers(op, "sizes", level_sizes)
            as_positive_numbers(op, "aspect_ratios", level_ratios)
        self.sizes = sizes
        self.aspect_ratios = aspect_ratios
        self._cache: "OrderedDict[tuple, Tensor]" = OrderedDict()
        self.cell_anchors = [self.generate_anchors(s, a) for s, a in zip(sizes, aspect_ratios)]

    @property
    def cell_anchors(self) -> List[Tensor]:
        return self._cell_anchors

    @cell_anchors.setter
    def cell_anchors(self, value: List[Tensor]) -> None:
        # The anchors as given are kept apart: every dtype is converted from them, so that (unlike
        # torchvision, which converts its cell anchors in place) a float16 call never degrades later ones.
        self._cell_anchors = value
        self._original_cells = list(value)
        self._cache = OrderedDict()

    def generate_anchors(
        self,
        scales: List[int],
        aspect_ratios: List[float],
        dtype: torch.dtype = torch.float32,
        device: torch.device = torch.device("cpu"),
    ) -> Tensor:
        """The anchors of one location, centred on the origin, rounded to whole pixels: [len(ratios) * len(scales), 4]."""
        scales_t = torch.as_tensor(scales, dtype=dtype, device=device)
        ratios_t = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
        h_ratios = torch.sqrt(ratios_t)
        w_ratios = 1 / h_ratios
        widths = (w_ratios[:, None] * scales_t[None, :]).reshape(-1)
        heights = (h_ratios[:, None] * scales_t[None, :]).reshape(-1)
        return (torch.stack([-widths, -heights, widths, heights], dim=1) / 2).round()

    def set_cell_anchors(self, dtype: torch.dtype, device: torch.device) -> None:
        if all(c.dtype == dtype and c.device == device for c in self._cell_anchors):
            return
        self._cell_anchors = [c.to(dtype=dtype, device=device) for c in self._original_cells]

    def num_anchors_per_location(self) -> List[int]:
        return [len(s) * len(a) for s, a in zip(self.sizes, self.aspect_ratios)]

    def _check_levels(self, count: int, what: str) -> None:
        if count != len(self._cell_anchors):
            raise ValueError(
                f"AnchorGenerator: got {count} {what} but sizes and aspect_ratios describe "
                f"{len(self._cell_anchors)} levels; there must be one (sizes, aspect_ratios) pair per feature map"
            )

    def grid_anchors(self, grid_sizes: List[List[int]], strides: List[List[Tensor]]) -> List[Tensor]:
        """The anchors of each level: ``[H_l * W_l * A_l, 4]`` per level."""
        self._check_levels(len(grid_sizes), "grid sizes")
        if len(strides) != len(grid_sizes):
            raise ValueError(
                f"AnchorGenerator: got {len(grid_sizes)} grid sizes but {len(strides)} strides; they must match"
            )
        sizes = [(int(g[0]), int(g[1])) for g in grid_sizes]
        steps = [(int(s[0]), int(s[1])) for s in strides]
        anchors = grid_anchors(self._cell_anchors, sizes, steps)
        counts = [h * w * c.shape[0] for (h, w), c in zip(sizes, self._cell_anchors)]
        return list(anchors.split(counts))

    def _anchors_for(self, grid_sizes, strides, dtype: torch.dtype, device: torch.device) -> Tensor:
        key = (tuple(grid_sizes), tuple(strides), dtype, device)
        anchors = self._cache.get(key)
        if anchors is not None:
            self._cache.move_to_end(key)
            return anchors
        self.set_cell_anchors(dtype, device)
        anchors = grid_anchors(self._cell_anchors, grid_sizes, strides)
        self._cache[key] = anchors
        if len(self._cache) > self._CACHE_SIZE:
            self._cache.popitem(last=False)
        return anchors

    def forward(self, image_list, feature_maps: List[Tensor]) -> List[Tensor]:
        """
        Args:
            image_list (ImageList): the batched images (``tensors`` [N, C, H, W] and ``image_sizes``).
            feature_maps (List[Tensor[N, C_l, H_l, W_l]]): one feature map per level, finest first.

        Returns:
            List[Tensor[A, 4]]: the anchors of every level, one (separate) tensor per image.
        """
        self._check_levels(len(feature_maps), "feature maps")
        dtype = feature_maps[0].dtype
        if not dtype.is_floating_point:
            raise ValueError(
                f"AnchorGenerator: feature maps must be floating-point tensors (the anchors take the first one's "
                f"dtype), got {dtype} for feature map 0"
            )
        image_h, image_w = (int(v) for v in image_list.tensors.shape[-2:])
        grid_sizes = []
        strides = []
        for i, fm in enumerate(feature_maps):
            h, w = (int(v) for v in fm.shape[-2:])
            if h <= 0 or w <= 0:
                raise ValueError(f"AnchorGenerator: feature map {i} has an empty spatial size {(h, w)}")
            grid_sizes.append((h, w))
            strides.append((image_h // h, image_w // w))
        anchors = self._anchors_for(grid_sizes, strides, dtype, feature_maps[0].device)
        # Each image gets its own tensor (callers may modify them in place); the cached one is never handed out.
        return [anchors.clone() for _ in range(len(image_list.image_sizes))]
