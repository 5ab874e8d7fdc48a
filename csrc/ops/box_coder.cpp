// Schemas and C++ entry points of the box coding ops.
#include "ops/box_coder.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace pydet_ops {

at::Tensor encode_boxes(const at::Tensor& reference_boxes, const at::Tensor& proposals, at::ArrayRef<double> weights) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pydet_ops::encode_boxes", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, at::ArrayRef<double>)>();
  return op.call(reference_boxes, proposals, weights);
}

at::Tensor decode_boxes(const at::Tensor& rel_codes, const at::Tensor& boxes, at::ArrayRef<double> weights,
                        double bbox_xform_clip) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pydet_ops::decode_boxes", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, at::ArrayRef<double>, double)>();
  return op.call(rel_codes, boxes, weights, bbox_xform_clip);
}

TORCH_LIBRARY_FRAGMENT(pydet_ops, m) {
  m.def("encode_boxes(Tensor reference_boxes, Tensor proposals, float[] weights) -> Tensor");
  m.def("decode_boxes(Tensor rel_codes, Tensor boxes, float[] weights, float bbox_xform_clip) -> Tensor");
}

}  // namespace pydet_ops
