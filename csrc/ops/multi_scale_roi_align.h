// Multi-scale (FPN) RoI align: each RoI pooled from the feature level its size selects, in one call.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace pydet_ops {

// features: L maps [N, C, H_l, W_l] from the finest level down, spatial_scales: L scales (powers of 2, as
// torchvision's MultiScaleRoIAlign infers them), rois: [K, 5]. Each RoI is assigned its level with
// torchvision's LevelMapper rule and pooled with roi_align(aligned=false). Returns [K, C, ph, pw].
at::Tensor multi_scale_roi_align(at::TensorList features, const at::Tensor& rois, at::ArrayRef<double> spatial_scales,
                                 int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                 int64_t canonical_scale, int64_t canonical_level);

// Gradients for every level; `feature_sizes` is the concatenation of each level's [N, C, H, W].
std::vector<at::Tensor> _multi_scale_roi_align_backward(const at::Tensor& grad, const at::Tensor& rois,
                                                        at::ArrayRef<double> spatial_scales, int64_t pooled_height,
                                                        int64_t pooled_width, int64_t sampling_ratio,
                                                        int64_t canonical_scale, int64_t canonical_level,
                                                        at::IntArrayRef feature_sizes);

}  // namespace pydet_ops
