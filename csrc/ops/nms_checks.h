// Argument checks of the NMS ops, shared by every backend.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <limits>

#include "ops/checks.h"

namespace pydet_ops {

inline void check_nms_inputs(const at::Tensor& boxes, const at::Tensor& scores, const char* op) {
  check_boxes(boxes, op, "boxes", 2, true);
  TORCH_CHECK(scores.defined() && scores.dim() == 1, op, ": scores must be a 1-D tensor of shape [N], got shape ",
              scores.defined() ? scores.sizes() : at::IntArrayRef{});
  TORCH_CHECK(boxes.size(0) == scores.size(0), op, ": boxes and scores must have the same length N, got ",
              boxes.size(0), " boxes and ", scores.size(0), " scores");
  TORCH_CHECK(boxes.scalar_type() == scores.scalar_type(), op, ": boxes and scores must have the same dtype, got ",
              boxes.scalar_type(), " and ", scores.scalar_type());
  check_same_device(boxes, "boxes", scores, "scores", op);
  TORCH_CHECK(boxes.size(0) <= std::numeric_limits<int32_t>::max(), op, ": at most 2^31 - 1 boxes are supported, got ",
              boxes.size(0));
}

inline void check_nms_categories(const at::Tensor& boxes, const at::Tensor& idxs, const char* op) {
  TORCH_CHECK(idxs.defined() && idxs.dim() == 1 && idxs.size(0) == boxes.size(0), op,
              ": idxs must be a 1-D tensor with one category per box (shape [", boxes.size(0), "]), got shape ",
              idxs.defined() ? idxs.sizes() : at::IntArrayRef{});
  TORCH_CHECK(at::isIntegralType(idxs.scalar_type(), /*includeBool=*/false), op, ": idxs must be an integer tensor, got ",
              idxs.scalar_type());
  check_same_device(boxes, "boxes", idxs, "idxs", op);
}

inline void check_max_output(int64_t max_output, const char* op) {
  TORCH_CHECK(max_output >= 0 && max_output <= std::numeric_limits<int32_t>::max(), op,
              ": max_output must be in [0, 2^31 - 1], got ", max_output);
}

}  // namespace pydet_ops
