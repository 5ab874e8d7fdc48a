// RoI align (Mask R-CNN): bilinear average pooling of RoIs from a feature map.
#pragma once

#include <ATen/ATen.h>

namespace pydet_ops {

// input: [N, C, H, W] (NCHW or channels_last), rois: [K, 5] (batch index, x1, y1, x2, y2).
// Returns [K, C, pooled_height, pooled_width] in input's dtype and memory format.
at::Tensor roi_align(const at::Tensor& input, const at::Tensor& rois, double spatial_scale, int64_t pooled_height,
                     int64_t pooled_width, int64_t sampling_ratio, bool aligned);

at::Tensor _roi_align_backward(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                               int64_t pooled_height, int64_t pooled_width, int64_t batch_size, int64_t channels,
                               int64_t height, int64_t width, int64_t sampling_ratio, bool aligned);

}  // namespace pydet_ops
