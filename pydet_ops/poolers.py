"""MultiScaleRoIAlign: torchvision's FPN pooler, with the level assignment and the pooling in one op."""

from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

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
    image sizes and then kept (as torchvision does).
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
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.featmap_names = featmap_names
        self.sampling_ratio = sampling_ratio
        self.output_size = tuple(output_size)
        self.scales: Optional[List[float]] = None
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(featmap_names={self.featmap_names}, "
            f"output_size={self.output_size}, sampling_ratio={self.sampling_ratio})"
        )

    def _setup_scales(self, features: List[Tensor], image_shapes: List[Tuple[int, int]]) -> None:
        if not image_shapes:
            raise ValueError("images list should not be empty")
        original = (max(s[0] for s in image_shapes), max(s[1] for s in image_shapes))
        self.scales = [_infer_scale(f, original) for f in features]

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
        features = [v for k, v in x.items() if k in self.featmap_names]
        if not features:
            raise ValueError(f"MultiScaleRoIAlign: none of featmap_names {self.featmap_names} is in x")
        if self.scales is None:
            self._setup_scales(features, image_shapes)
        rois = boxes_to_rois(boxes, "MultiScaleRoIAlign")
        if len(features) == 1:
            return roi_align(features[0], rois, self.output_size, self.scales[0], self.sampling_ratio)
        ph, pw = self.output_size
        return torch.ops.pydet_ops.multi_scale_roi_align(
            features,
            rois,
            [float(s) for s in self.scales],
            int(ph),
            int(pw),
            int(self.sampling_ratio),
            int(self.canonical_scale),
            int(self.canonical_level),
        )
