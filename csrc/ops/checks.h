// Argument checks shared by every backend of the box ops. Messages name the argument and what was expected.
#pragma once

#include <ATen/ATen.h>

namespace pydet_ops {

// A floating-point tensor of boxes whose last dimension is 4 and that has at least `min_dim` dimensions
// (exactly `min_dim` when `exact_dim`).
inline void check_boxes(const at::Tensor& boxes, const char* op, const char* arg, int64_t min_dim, bool exact_dim) {
  TORCH_CHECK(boxes.defined(), op, ": ", arg, " is undefined");
  if (exact_dim) {
    TORCH_CHECK(boxes.dim() == min_dim, op, ": ", arg, " must be a ", min_dim, "-D tensor of shape [N, 4], got shape ",
                boxes.sizes());
  } else {
    TORCH_CHECK(boxes.dim() >= min_dim, op, ": ", arg, " must have shape [..., N, 4], got shape ", boxes.sizes());
  }
  TORCH_CHECK(boxes.size(-1) == 4, op, ": ", arg, " must have 4 values (x1, y1, x2, y2) in its last dimension, got shape ",
              boxes.sizes());
  TORCH_CHECK(at::isFloatingType(boxes.scalar_type()), op, ": ", arg,
              " must be a floating-point tensor (float16, bfloat16, float32 or float64), got ", boxes.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name,
                              const char* op) {
  TORCH_CHECK(a.device() == b.device(), op, ": ", a_name, " and ", b_name, " must be on the same device, got ", a.device(),
              " and ", b.device());
}

// float64 stays float64; every other floating type is computed (and returned) in float32.
inline at::ScalarType compute_type_of(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace pydet_ops
