// RoI max pooling (Fast R-CNN).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace pydet_ops {

// input: [N, C, H, W], rois: [K, 5]. Returns (output [K, C, ph, pw] in input's dtype and memory format,
// argmax int32 of the same shape: plane index h * W + w of each maximum, -1 for an empty bin).
std::tuple<at::Tensor, at::Tensor> roi_pool(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                            int64_t pooled_height, int64_t pooled_width);

at::Tensor _roi_pool_backward(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                              double spatial_scale, int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                              int64_t channels, int64_t height, int64_t width);

}  // namespace pydet_ops
