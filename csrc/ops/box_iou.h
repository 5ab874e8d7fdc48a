// Pairwise overlap of two sets of boxes: IoU, generalised, distance and complete IoU.
#pragma once

#include <ATen/ATen.h>

namespace pydet_ops {

// boxes1: [..., N, 4], boxes2: [..., M, 4] in (x1, y1, x2, y2); leading dimensions broadcast.
// Returns [..., N, M] in float64 for float64 input, float32 otherwise.
at::Tensor box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2);
at::Tensor generalized_box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2);
at::Tensor distance_box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2, double eps = 1e-7);
at::Tensor complete_box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2, double eps = 1e-7);

}  // namespace pydet_ops
