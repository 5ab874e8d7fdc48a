// Argument checks of encode_boxes and decode_boxes, shared by every backend. Each op checks its tensors
// (`check_*_tensors`), then the backend checks the device, then the rest (`check_*_sizes`).
#pragma once

#include <ATen/ATen.h>

#include <cmath>

#include "ops/checks.h"

namespace pydet_ops {

inline void check_coder_weights(at::ArrayRef<double> weights, const char* op) {
  TORCH_CHECK(weights.size() == 4, op, ": weights must hold 4 values (wx, wy, ww, wh), got ", weights.size());
}

inline void check_encode_tensors(const at::Tensor& reference_boxes, const at::Tensor& proposals, const char* op) {
  check_boxes(reference_boxes, op, "reference_boxes", 2, true);
  check_boxes(proposals, op, "proposals", 2, true);
  check_same_device(reference_boxes, "reference_boxes", proposals, "proposals", op);
}

inline void check_encode_sizes(const at::Tensor& reference_boxes, const at::Tensor& proposals,
                               at::ArrayRef<double> weights, const char* op) {
  TORCH_CHECK(reference_boxes.size(0) == proposals.size(0), op,
              ": reference_boxes and proposals must have the same number of boxes, got ", reference_boxes.size(0),
              " and ", proposals.size(0));
  check_coder_weights(weights, op);
}

inline void check_decode_tensors(const at::Tensor& rel_codes, const at::Tensor& boxes, const char* op) {
  TORCH_CHECK(rel_codes.defined() && rel_codes.dim() == 2, op,
              ": rel_codes must be a 2-D tensor of shape [N, 4 * K], got shape ",
              rel_codes.defined() ? rel_codes.sizes() : at::IntArrayRef{});
  TORCH_CHECK(rel_codes.size(1) % 4 == 0, op,
              ": rel_codes must hold 4 deltas (dx, dy, dw, dh) per box, so its last dimension must be a multiple "
              "of 4, got shape ",
              rel_codes.sizes());
  TORCH_CHECK(at::isFloatingType(rel_codes.scalar_type()), op, ": rel_codes must be a floating-point tensor, got ",
              rel_codes.scalar_type());
  check_boxes(boxes, op, "boxes", 2, true);
  check_same_device(rel_codes, "rel_codes", boxes, "boxes", op);
}

inline void check_decode_sizes(const at::Tensor& rel_codes, const at::Tensor& boxes, at::ArrayRef<double> weights,
                               double bbox_xform_clip, const char* op) {
  TORCH_CHECK(rel_codes.size(0) == boxes.size(0), op, ": rel_codes and boxes must have the same number of rows, got ",
              rel_codes.size(0), " and ", boxes.size(0));
  check_coder_weights(weights, op);
  TORCH_CHECK(!std::isnan(bbox_xform_clip), op, ": bbox_xform_clip must not be NaN");
}

}  // namespace pydet_ops
