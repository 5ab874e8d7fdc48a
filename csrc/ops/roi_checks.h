// Argument checks and RoI preparation shared by the RoI ops (roi_align, roi_pool, multi_scale_roi_align).
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "ops/checks.h"

namespace pydet_ops {

// The memory format of the RoI ops' results: channels_last for a channels_last map, else NCHW.
inline at::MemoryFormat roi_layout_of(const at::Tensor& t) {
  return t.dim() == 4 && t.suggest_memory_format() == at::MemoryFormat::ChannelsLast ? at::MemoryFormat::ChannelsLast
                                                                                      : at::MemoryFormat::Contiguous;
}

inline void check_feature_map(const at::Tensor& input, const char* op, const char* arg = "input") {
  TORCH_CHECK(input.defined() && input.dim() == 4, op, ": ", arg, " must be a 4-D tensor [N, C, H, W], got shape ",
              input.defined() ? input.sizes() : at::IntArrayRef{});
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), op, ": ", arg,
              " must be float16, bfloat16, float32 or float64, got ", input.scalar_type());
}

inline void check_rois(const at::Tensor& rois, const char* op) {
  TORCH_CHECK(rois.defined() && rois.dim() == 2 && rois.size(1) == 5, op,
              ": rois must be a tensor of shape [K, 5] (batch index, x1, y1, x2, y2), got shape ",
              rois.defined() ? rois.sizes() : at::IntArrayRef{},
              "; pass a list of per-image [L, 4] tensors to the Python wrapper instead");
  TORCH_CHECK(at::isFloatingType(rois.scalar_type()), op, ": rois must be a floating-point tensor, got ",
              rois.scalar_type());
}

inline void check_pooled_size(int64_t pooled_height, int64_t pooled_width, const char* op) {
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0, op, ": output_size must be positive, got (", pooled_height, ", ",
              pooled_width, ")");
  // The loops hold bin indices as 32-bit ints.
  TORCH_CHECK(pooled_height <= std::numeric_limits<int32_t>::max() && pooled_width <= std::numeric_limits<int32_t>::max(),
              op, ": output_size must be at most 2^31 - 1 per side, got (", pooled_height, ", ", pooled_width, ")");
}

// An int argument the loops hold as a 32-bit int: outside that range it would be narrowed silently.
inline void check_fits_int32(int64_t value, const char* arg, const char* op) {
  TORCH_CHECK(value >= std::numeric_limits<int32_t>::min() && value <= std::numeric_limits<int32_t>::max(), op, ": ",
              arg, " must be between -2^31 and 2^31 - 1, got ", value);
}

// sampling_ratio of roi_align and multi_scale_roi_align (forward and backward): <= 0 means adaptive.
inline void check_sampling_ratio(int64_t sampling_ratio, const char* op) {
  check_fits_int32(sampling_ratio, "sampling_ratio", op);
}

// The FPN level mapping of multi_scale_roi_align (forward and backward).
inline void check_canonical_level_args(int64_t canonical_scale, int64_t canonical_level, const char* op) {
  TORCH_CHECK(canonical_scale > 0, op, ": canonical_scale must be positive, got ", canonical_scale);
  check_fits_int32(canonical_scale, "canonical_scale", op);
  check_fits_int32(canonical_level, "canonical_level", op);
}

inline void check_spatial_scale(double spatial_scale, const char* op) {
  TORCH_CHECK(std::isfinite(spatial_scale) && spatial_scale > 0, op, ": spatial_scale must be a positive number, got ",
              spatial_scale);
}

// The tensor arguments of a RoI forward op (roi_align, roi_pool), up to the device type each backend checks.
inline void check_roi_forward_tensors(const at::Tensor& input, const at::Tensor& rois, const char* op) {
  check_feature_map(input, op);
  check_rois(rois, op);
  TORCH_CHECK(input.device() == rois.device(), op, ": input and rois must be on the same device, got ",
              input.device(), " and ", rois.device());
}

// The scalar arguments of a RoI forward op, checked after the device type.
inline void check_roi_forward_scalars(int64_t pooled_height, int64_t pooled_width, double spatial_scale,
                                      const char* op) {
  check_pooled_size(pooled_height, pooled_width, op);
  check_spatial_scale(spatial_scale, op);
}

// Arguments of a RoI forward op (roi_align, roi_pool) on the CPU.
inline void check_roi_forward_args(const at::Tensor& input, const at::Tensor& rois, int64_t pooled_height,
                                   int64_t pooled_width, double spatial_scale, const char* op) {
  check_roi_forward_tensors(input, rois, op);
  TORCH_CHECK(input.device().is_cpu(), op, ": expected CPU tensors, got ", input.device());
  check_roi_forward_scalars(pooled_height, pooled_width, spatial_scale, op);
}

// roi_pool's argmax is an int32 index h * W + w into one H x W plane (torchvision's contract).
inline void check_roi_pool_plane(const at::Tensor& input, const char* op) {
  TORCH_CHECK(input.size(2) * input.size(3) <= std::numeric_limits<int32_t>::max(), op,
              ": input planes of more than 2^31 - 1 cells are not supported (argmax is an int32 index into an "
              "H x W plane), got H x W = ", input.size(2), " x ", input.size(3));
}

// The tensor arguments of _roi_pool_backward, up to the device type each backend checks.
inline void check_roi_pool_backward_tensors(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                                            const char* op) {
  check_feature_map(grad, op, "grad");
  check_rois(rois, op);
  check_same_device(grad, "grad", rois, "rois", op);
  check_same_device(grad, "grad", argmax, "argmax", op);
}

// The sizes of _roi_pool_backward: grad and argmax as roi_pool returned them for an input of
// [batch_size, channels, height, width].
inline void check_roi_pool_backward_sizes(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                                          int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                          int64_t channels, int64_t height, int64_t width, const char* op) {
  check_pooled_size(pooled_height, pooled_width, op);
  TORCH_CHECK(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0, op,
              ": input sizes must be non-negative, got [", batch_size, ", ", channels, ", ", height, ", ", width, "]");
  TORCH_CHECK(grad.size(0) == rois.size(0) && grad.size(1) == channels && grad.size(2) == pooled_height &&
                  grad.size(3) == pooled_width,
              op, ": grad must have shape [", rois.size(0), ", ", channels, ", ", pooled_height, ", ", pooled_width,
              "], got ", grad.sizes());
  TORCH_CHECK(argmax.scalar_type() == at::kInt && argmax.sizes() == grad.sizes(), op,
              ": argmax must be the int32 tensor roi_pool returned, of shape ", grad.sizes(), ", got ",
              argmax.scalar_type(), " ", argmax.sizes());
}

// grad of a pooled output: [num_rois, channels, pooled_height, pooled_width].
inline void check_pooled_grad_shape(const at::Tensor& grad, int64_t num_rois, int64_t channels, int64_t pooled_height,
                                    int64_t pooled_width, const char* op) {
  TORCH_CHECK(grad.size(0) == num_rois && grad.size(1) == channels && grad.size(2) == pooled_height &&
                  grad.size(3) == pooled_width,
              op, ": grad must have shape [", num_rois, ", ", channels, ", ", pooled_height, ", ", pooled_width,
              "], got ", grad.sizes());
}

// The tensor arguments of _roi_align_backward, up to the device type each backend checks.
inline void check_roi_align_backward_tensors(const at::Tensor& grad, const at::Tensor& rois, const char* op) {
  check_feature_map(grad, op, "grad");
  check_rois(rois, op);
  check_same_device(grad, "grad", rois, "rois", op);
}

// The scalar arguments and sizes of _roi_align_backward, checked after the device type.
inline void check_roi_align_backward_sizes(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                           int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                           int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                           const char* op) {
  check_pooled_size(pooled_height, pooled_width, op);
  check_spatial_scale(spatial_scale, op);
  check_sampling_ratio(sampling_ratio, op);
  TORCH_CHECK(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0, op,
              ": input sizes must be non-negative, got [", batch_size, ", ", channels, ", ", height, ", ", width, "]");
  check_pooled_grad_shape(grad, rois.size(0), channels, pooled_height, pooled_width, op);
}

// multi_scale_roi_align: one positive, finite scale per feature map.
inline void check_spatial_scales(at::ArrayRef<double> scales, size_t levels, const char* op) {
  TORCH_CHECK(levels > 0, op, ": features must hold at least one feature map");
  TORCH_CHECK(scales.size() == levels, op, ": spatial_scales must have one scale per feature map (", levels,
              "), got ", scales.size());
  for (double s : scales) check_spatial_scale(s, op);
}

// multi_scale_roi_align: a feature map next to the first (checked after its device).
inline void check_feature_level(const at::Tensor& level, const at::Tensor& first, const char* op) {
  TORCH_CHECK(level.scalar_type() == first.scalar_type() && level.size(0) == first.size(0) &&
                  level.size(1) == first.size(1),
              op, ": every feature map must have the dtype, batch size and channels of the first, got ",
              level.scalar_type(), " ", level.sizes(), " and ", first.scalar_type(), " ", first.sizes());
}

// _multi_scale_roi_align_backward: feature_sizes holds [N, C, H, W] per level. Returns the number of levels.
inline size_t check_feature_sizes(at::IntArrayRef feature_sizes, const char* op) {
  TORCH_CHECK(feature_sizes.size() % 4 == 0 && !feature_sizes.empty(), op,
              ": feature_sizes must hold [N, C, H, W] for each level, got ", feature_sizes);
  return feature_sizes.size() / 4;
}

// _multi_scale_roi_align_backward: the sizes `s` of one level next to the first level's batch and channels.
inline void check_level_sizes(const int64_t* s, int64_t batch, int64_t channels, const char* op) {
  TORCH_CHECK(s[0] == batch && s[1] == channels && s[2] >= 0 && s[3] >= 0, op,
              ": every level must have the batch size and channels of the first, got ", at::IntArrayRef(s, 4));
}

// The checks of multi_scale_roi_align, in the order every backend makes them. `device_check(map)` is the
// backend's device check of one level (with the RoIs), made after that level's shape check.
template <typename DeviceCheck>
inline void check_multi_scale_forward_args(at::TensorList features, const at::Tensor& rois, at::ArrayRef<double> scales,
                                           int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                           int64_t canonical_scale, int64_t canonical_level, const char* op,
                                           const DeviceCheck& device_check) {
  check_spatial_scales(scales, features.size(), op);
  check_rois(rois, op);
  check_pooled_size(pooled_height, pooled_width, op);
  check_sampling_ratio(sampling_ratio, op);
  check_canonical_level_args(canonical_scale, canonical_level, op);
  for (const at::Tensor& map : features) {
    check_feature_map(map, op, "features");
    device_check(map);
    check_feature_level(map, features[0], op);
  }
}

// The checks of _multi_scale_roi_align_backward (levels' sizes excepted), in the order every backend makes
// them, `device_check()` the backend's; returns the number of levels.
template <typename DeviceCheck>
inline size_t check_multi_scale_backward_args(const at::Tensor& grad, const at::Tensor& rois,
                                              at::ArrayRef<double> scales, int64_t pooled_height,
                                              int64_t pooled_width, int64_t sampling_ratio, int64_t canonical_scale,
                                              int64_t canonical_level, at::IntArrayRef feature_sizes, const char* op,
                                              const DeviceCheck& device_check) {
  const size_t num_levels = check_feature_sizes(feature_sizes, op);
  check_spatial_scales(scales, num_levels, op);
  check_feature_map(grad, op, "grad");
  check_rois(rois, op);
  check_sampling_ratio(sampling_ratio, op);
  check_canonical_level_args(canonical_scale, canonical_level, op);
  device_check();
  check_pooled_grad_shape(grad, rois.size(0), feature_sizes[1], pooled_height, pooled_width, op);
  return num_levels;
}

// multi_scale_roi_align's level range (torchvision's LevelMapper): k_min = int(-log2(scale of the finest
// map)), k_max likewise for the coarsest.
inline void fpn_level_range(at::ArrayRef<double> scales, int& k_min, int& k_max) {
  k_min = static_cast<int>(-std::log2(scales.front()));
  k_max = static_cast<int>(-std::log2(scales.back()));
}

// The RoIs in the compute type, contiguous, with every batch index checked against `batch` images. A batch
// index is truncated toward zero as torchvision does (so 1.7 means image 1).
inline at::Tensor prepared_rois(const at::Tensor& rois, at::ScalarType compute, int64_t batch, const char* op) {
  at::Tensor r = rois.to(compute).contiguous();
  AT_DISPATCH_FLOATING_TYPES(compute, "prepared_rois", [&] {
    const scalar_t* data = r.const_data_ptr<scalar_t>();
    for (int64_t k = 0; k < r.size(0); ++k) {
      const scalar_t index = data[5 * k];
      TORCH_CHECK(index > scalar_t(-1) && index < static_cast<scalar_t>(batch), op, ": rois[", k,
                  ", 0] = ", index, " is not a batch index of input, which has ", batch, " image(s)");
    }
  });
  return r;
}

}  // namespace pydet_ops
