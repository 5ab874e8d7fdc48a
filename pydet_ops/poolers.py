"""MultiScaleRoIAlign: torchvision's FPN pooler, with the level assignment and the pooling in one op."""

from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ._args import as_int, as_size, check_same_device
from ._dropin import DropInMeta
from .roi_ops import boxes_to_rois, roi_align

__all__ = ["MultiScaleRoIAlign"]


def _infer_scale(feature: Tensor, original_size: Tuple[int, int]) -> float:
    # The power of two closest (in log space) to feature height / image height, as torchvision infers it.
    approx = float(feature.shape[-2]) / float(original_size[0])
    return 2.0 ** float(torch.tensor(approx).log2().round())


class MultiScaleRoIAlign(nn.Module, metaclass=DropInMeta):
    """Pools each box from the FPN level its size selects (Feature Pyramid Networks, eq. 1).

    Same constructor, forward and results as ``torchvision.ops.MultiScaleRoIAlign``: level
    ``floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6)`` clamped to the available
    levels, RoI align with ``aligned=False``. Unlike torchvision there is no Python loop over levels: one op
    assigns every box its level and pools it straight from that map, forward and backward.

    Args:
        featmap_names (List[str]): the names of the feature maps to use, in ``x``'s order.
        output_size (int or Tuple[int, int]): pooled (height, width).
        sampling_ratio (int): sampling points per bin, as in :func:`pydet_ops.roi_align`.
        canonical_scale (int, keyword-only): default 224.
        canonical_level (int, keyword-only): default 4.

    Boxes with a NaN or negative area pool to 0. The scales are inferred from the first call's feature and
    image sizes and then kept (as torchvision does): that call needs maps of non-zero height and positive image
    sizes. Arguments of the wrong type are a ``TypeError`` or ``ValueError`` naming them, raised here.
    """

    __annotations__ = {"scales": Optional[List[float]]}

    def __init__(
        self,
        featmap_names: List[str],
        output_size: Union[int, Tuple[int], List[int]],
        sampling_ratio: int,
        *,
        canonical_scale: int = 224,
        canonical_level: int = 4,
    ):
        super().__init__()
        op = "MultiScaleRoIAlign"
        self.featmap_names = featmap_names
        self.sampling_ratio = as_int(op, "sampling_ratio", sampling_ratio)
        self.output_size = as_size(op, "output_size", output_size)
        self.scales: Optional[List[float]] = None
        self.canonical_scale = as_int(op, "canonical_scale", canonical_scale)
        self.canonical_level = as_int(op, "canonical_level", canonical_level)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(featmap_names={self.featmap_names}, "
            f"output_size={self.output_size}, sampling_ratio={self.sampling_ratio})"
        )

    def _setup_scales(self, named: List[Tuple[str, Tensor]], image_shapes: List[Tuple[int, int]]) -> None:
        if not image_shapes:
            raise ValueError("images list should not be empty")
        if not all(len(s) == 2 and s[0] > 0 and s[1] > 0 for s in image_shapes):
            raise ValueError(
                f"MultiScaleRoIAlign: image_shapes must hold a positive (height, width) per image, got {image_shapes}"
            )
        original = (max(s[0] for s in image_shapes), max(s[1] for s in image_shapes))
        for name, f in named:
            if f.dim() < 2 or f.shape[-2] == 0:
                raise ValueError(
                    f"MultiScaleRoIAlign: cannot infer the scale of feature map x[{name!r}] from its height: "
                    f"shape {tuple(f.shape)}"
                )
        self.scales = [_infer_scale(f, original) for _, f in named]

    def forward(self, x: Dict[str, Tensor], boxes: List[Tensor], image_shapes: List[Tuple[int, int]]) -> Tensor:
        """
        Args:
            x (Dict[str, Tensor]): feature maps [N, C, H_l, W_l] by name; only ``featmap_names`` are used, in
                ``x``'s order (finest first).
            boxes (List[Tensor[L, 4]]): boxes per image in image coordinates, (x1, y1, x2, y2).
            image_shapes (List[Tuple[height, width]]): image sizes before the backbone.

        Returns:
            Tensor[K, C, output_size[0], output_size[1]], K the total number of boxes.
        """
        op = "MultiScaleRoIAlign"
        named = [(k, v) for k, v in x.items() if k in self.featmap_names]
        if not named:
            raise ValueError(f"{op}: none of featmap_names {self.featmap_names} is in x")
        if self.scales is None:
            self._setup_scales(named, image_shapes)
        rois = boxes_to_rois(boxes, op)
        features = [v for _, v in named]
        if any(f.device != rois.device for f in features):  # the maps' names are formatted only for the error
            check_same_device(op, *[(f"x[{k!r}]", v) for k, v in named], boxes=rois)
        if len(features) == 1:
            return roi_align(features[0], rois, self.output_size, self.scales[0], self.sampling_ratio)
        ph, pw = self.output_size
        return torch.ops.pydet_ops.multi_scale_roi_align(
            features,
            rois,
            [float(s) for s in self.scales],
            ph,
            pw,
            self.sampling_ratio,
            self.canonical_scale,
            self.canonical_level,
        )
