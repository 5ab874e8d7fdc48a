// Non-maximum suppression, plain and per class.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace pydet_ops {

// boxes: [N, 4] (x1, y1, x2, y2), scores: [N]. Returns int64 indices of the kept boxes by decreasing score.
at::Tensor nms(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold);

// As nms, but boxes only suppress boxes of the same category idxs[i] (any integer values).
at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                       double iou_threshold);

// Fixed-size NMS: (keep, count). keep is int64 [max_output]: the first min(kept, max_output) indices that nms
// (batched_nms) returns, then -1; count is an int64 0-d tensor holding that number. The output shape does
// not depend on the data, so on CUDA the call needs no host synchronisation and can be captured in a graph.
std::tuple<at::Tensor, at::Tensor> nms_fixed(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold,
                                             int64_t max_output);
std::tuple<at::Tensor, at::Tensor> batched_nms_fixed(const at::Tensor& boxes, const at::Tensor& scores,
                                                     const at::Tensor& idxs, double iou_threshold,
                                                     int64_t max_output);

}  // namespace pydet_ops
