// Non-maximum suppression, plain and per class.
#pragma once

#include <ATen/ATen.h>

namespace pydet_ops {

// boxes: [N, 4] (x1, y1, x2, y2), scores: [N]. Returns int64 indices of the kept boxes by decreasing score.
at::Tensor nms(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold);

// As nms, but boxes only suppress boxes of the same category idxs[i] (any integer values).
at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                       double iou_threshold);

}  // namespace pydet_ops
