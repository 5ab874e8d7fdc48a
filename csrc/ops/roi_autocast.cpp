// Autocast kernels of the RoI ops (CUDA and CPU autocast).
//
// torchvision's autocast path casts the feature map to float32 and the result back to the input dtype. The
// kernels here compute from float16 / bfloat16 maps directly (float32 accumulation, one rounding of each
// output), so autocast costs no float32 copy of the map: the call below runs with autocast excluded, on the
// input's own dtype, and returns that dtype, as torchvision does. RoIs of another dtype are converted by
// the kernels themselves.
#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include "ops/multi_scale_roi_align.h"
#include "ops/roi_align.h"
#include "ops/roi_pool.h"

namespace pydet_ops {
namespace {

template <c10::DispatchKey kKey>
at::Tensor roi_align_autocast(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                              int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(kKey);
  return roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned);
}

template <c10::DispatchKey kKey>
std::tuple<at::Tensor, at::Tensor> roi_pool_autocast(const at::Tensor& input, const at::Tensor& rois,
                                                     double spatial_scale, int64_t pooled_height,
                                                     int64_t pooled_width) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(kKey);
  return roi_pool(input, rois, spatial_scale, pooled_height, pooled_width);
}

template <c10::DispatchKey kKey>
at::Tensor multi_scale_roi_align_autocast(at::TensorList features, const at::Tensor& rois,
                                          at::ArrayRef<double> spatial_scales, int64_t pooled_height,
                                          int64_t pooled_width, int64_t sampling_ratio, int64_t canonical_scale,
                                          int64_t canonical_level) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(kKey);
  return multi_scale_roi_align(features, rois, spatial_scales, pooled_height, pooled_width, sampling_ratio,
                               canonical_scale, canonical_level);
}

}  // namespace

TORCH_LIBRARY_IMPL(pydet_ops, AutocastCUDA, m) {
  constexpr auto kKey = c10::DispatchKey::AutocastCUDA;
  m.impl("roi_align", TORCH_FN(roi_align_autocast<kKey>));
  m.impl("roi_pool", TORCH_FN(roi_pool_autocast<kKey>));
  m.impl("multi_scale_roi_align", TORCH_FN(multi_scale_roi_align_autocast<kKey>));
}

TORCH_LIBRARY_IMPL(pydet_ops, AutocastCPU, m) {
  constexpr auto kKey = c10::DispatchKey::AutocastCPU;
  m.impl("roi_align", TORCH_FN(roi_align_autocast<kKey>));
  m.impl("roi_pool", TORCH_FN(roi_pool_autocast<kKey>));
  m.impl("multi_scale_roi_align", TORCH_FN(multi_scale_roi_align_autocast<kKey>));
}

}  // namespace pydet_ops
