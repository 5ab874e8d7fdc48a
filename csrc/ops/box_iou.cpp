// Schemas and C++ entry points of the pairwise overlap ops.
#include "ops/box_iou.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace pydet_ops {

at::Tensor box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("pydet_ops::box_iou", "").typed<decltype(box_iou)>();
  return op.call(boxes1, boxes2);
}

at::Tensor generalized_box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pydet_ops::generalized_box_iou", "")
                       .typed<decltype(generalized_box_iou)>();
  return op.call(boxes1, boxes2);
}

at::Tensor distance_box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2, double eps) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pydet_ops::distance_box_iou", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double)>();
  return op.call(boxes1, boxes2, eps);
}

at::Tensor complete_box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2, double eps) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pydet_ops::complete_box_iou", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double)>();
  return op.call(boxes1, boxes2, eps);
}

TORCH_LIBRARY_FRAGMENT(pydet_ops, m) {
  m.def("box_iou(Tensor boxes1, Tensor boxes2) -> Tensor");
  m.def("generalized_box_iou(Tensor boxes1, Tensor boxes2) -> Tensor");
  m.def("distance_box_iou(Tensor boxes1, Tensor boxes2, float eps=1e-07) -> Tensor");
  m.def("complete_box_iou(Tensor boxes1, Tensor boxes2, float eps=1e-07) -> Tensor");
}

}  // namespace pydet_ops
