// Schemas and C++ entry points of multi_scale_roi_align and its backward.
#include "ops/multi_scale_roi_align.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace pydet_ops {

at::Tensor multi_scale_roi_align(at::TensorList features, const at::Tensor& rois, at::ArrayRef<double> spatial_scales,
                                 int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                 int64_t canonical_scale, int64_t canonical_level) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pydet_ops::multi_scale_roi_align", "")
                       .typed<decltype(multi_scale_roi_align)>();
  return op.call(features, rois, spatial_scales, pooled_height, pooled_width, sampling_ratio, canonical_scale,
                 canonical_level);
}

std::vector<at::Tensor> _multi_scale_roi_align_backward(const at::Tensor& grad, const at::Tensor& rois,
                                                        at::ArrayRef<double> spatial_scales, int64_t pooled_height,
                                                        int64_t pooled_width, int64_t sampling_ratio,
                                                        int64_t canonical_scale, int64_t canonical_level,
                                                        at::IntArrayRef feature_sizes) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pydet_ops::_multi_scale_roi_align_backward", "")
                       .typed<decltype(_multi_scale_roi_align_backward)>();
  return op.call(grad, rois, spatial_scales, pooled_height, pooled_width, sampling_ratio, canonical_scale,
                 canonical_level, feature_sizes);
}

TORCH_LIBRARY_FRAGMENT(pydet_ops, m) {
  m.def(
      "multi_scale_roi_align(Tensor[] features, Tensor rois, float[] spatial_scales, int pooled_height, "
      "int pooled_width, int sampling_ratio, int canonical_scale, int canonical_level) -> Tensor");
  m.def(
      "_multi_scale_roi_align_backward(Tensor grad, Tensor rois, float[] spatial_scales, int pooled_height, "
      "int pooled_width, int sampling_ratio, int canonical_scale, int canonical_level, int[] feature_sizes) "
      "-> Tensor[]");
}

}  // namespace pydet_ops
