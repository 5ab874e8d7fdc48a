// Schemas and C++ entry points of the NMS ops.
#include "ops/nms.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace pydet_ops {

at::Tensor nms(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("pydet_ops::nms", "").typed<decltype(nms)>();
  return op.call(boxes, scores, iou_threshold);
}

at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                       double iou_threshold) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("pydet_ops::batched_nms", "").typed<decltype(batched_nms)>();
  return op.call(boxes, scores, idxs, iou_threshold);
}

std::tuple<at::Tensor, at::Tensor> nms_fixed(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold,
                                             int64_t max_output) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("pydet_ops::nms_fixed", "").typed<decltype(nms_fixed)>();
  return op.call(boxes, scores, iou_threshold, max_output);
}

std::tuple<at::Tensor, at::Tensor> batched_nms_fixed(const at::Tensor& boxes, const at::Tensor& scores,
                                                     const at::Tensor& idxs, double iou_threshold,
                                                     int64_t max_output) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pydet_ops::batched_nms_fixed", "")
                       .typed<decltype(batched_nms_fixed)>();
  return op.call(boxes, scores, idxs, iou_threshold, max_output);
}

TORCH_LIBRARY_FRAGMENT(pydet_ops, m) {
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
  m.def("nms_fixed(Tensor boxes, Tensor scores, float iou_threshold, int max_output) -> (Tensor, Tensor)");
  m.def(
      "batched_nms_fixed(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold, int max_output) -> "
      "(Tensor, Tensor)");
}

}  // namespace pydet_ops
