// Box coding: boxes <-> (dx, dy, dw, dh) deltas relative to reference boxes (the math is common/box_coding.h).
#pragma once

#include <ATen/ATen.h>

namespace pydet_ops {

// reference_boxes, proposals: [N, 4] -> deltas [N, 4] taking each proposal to its reference box.
// weights: (wx, wy, ww, wh). The result has the promoted dtype of the two inputs.
at::Tensor encode_boxes(const at::Tensor& reference_boxes, const at::Tensor& proposals, at::ArrayRef<double> weights);

// rel_codes: [N, 4 * K] deltas (K classes), boxes: [N, 4] -> boxes [N, 4 * K] in rel_codes' dtype.
// dw and dh are clamped from above at bbox_xform_clip before exp.
at::Tensor decode_boxes(const at::Tensor& rel_codes, const at::Tensor& boxes, at::ArrayRef<double> weights,
                        double bbox_xform_clip);

}  // namespace pydet_ops
