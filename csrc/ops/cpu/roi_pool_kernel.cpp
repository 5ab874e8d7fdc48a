// CPU kernels of roi_pool and _roi_pool_backward: validation, layout choice, partitioning. The loops are
// roi_pool_loops.h (per ISA); the pixel snapping is common/roi_align_math.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>

#include "common/roi_align_math.h"
#include "ops/checks.h"
#include "ops/cpu/banded_conversion.h"
#include "ops/cpu/roi_common.h"
#include "ops/roi_checks.h"

namespace pydet_ops {
namespace cpu {
namespace {

// Pixels per channel the RoIs will read: decides the layout.
template <typename T>
double roi_pool_reads(const at::Tensor& rois, double spatial_scale) {
  const T* r = rois.const_data_ptr<T>();
  double reads = 0;
  for (int64_t k = 0; k < rois.size(0); ++k) {
    const auto g = roi_math::roi_pool_geometry<T>(r[5 * k + 1], r[5 * k + 2], r[5 * k + 3], r[5 * k + 4],
                                                  static_cast<T>(spatial_scale));
    reads += static_cast<double>(g.roi_h) * g.roi_w;
  }
  return reads;
}

RoiAlignParams pool_params(const at::Tensor& rois, double spatial_scale, int64_t ph, int64_t pw, at::ScalarType type) {
  return RoiAlignParams{rois.const_data_ptr(), rois.size(0), spatial_scale, static_cast<int>(ph), static_cast<int>(pw),
                        0, false, element_type_of(type)};
}

std::tuple<at::Tensor, at::Tensor> roi_pool_forward_cpu(const at::Tensor& input, const at::Tensor& rois,
                                                        double spatial_scale, int64_t pooled_height,
                                                        int64_t pooled_width) {
  const char* op = "roi_pool";
  check_roi_forward_args(input, rois, pooled_height, pooled_width, spatial_scale, op);
  check_roi_pool_plane(input, op);

  const auto compute = compute_type_for(input.scalar_type());
  const at::Tensor r = prepared_rois(rois, compute, input.size(0), op);
  const auto format = roi_layout_of(input);
  const int64_t num_rois = rois.size(0), channels = input.size(1);
  const std::vector<int64_t> shape{num_rois, channels, pooled_height, pooled_width};
  if (num_rois == 0 || channels == 0 || input.size(2) == 0 || input.size(3) == 0) {
    return {zeros_large(shape, input.options(), format),
            empty_large(shape, input.options().dtype(at::kInt), format).fill_(-1)};
  }
  at::Tensor output = empty_large(shape, input.options(), format);
  at::Tensor argmax = empty_large(shape, input.options().dtype(at::kInt), format);

  const double reads = AT_DISPATCH_FLOATING_TYPES(compute, "roi_pool_reads", [&] {
    return roi_pool_reads<scalar_t>(r, spatial_scale);
  });
  // NCHW maps worth converting are converted in bands while pooling runs (banded_conversion.h).
  BandedConversion conversion;
  const MapView in = view_of(conversion.add(input, format, reads)), out = view_of(output);
  const RoiAlignParams p = pool_params(r, spatial_scale, pooled_height, pooled_width, input.scalar_type());
  int32_t* argmax_data = argmax.mutable_data_ptr<int32_t>();
  std::vector<int64_t> order;
  const std::vector<int64_t> needed = AT_DISPATCH_FLOATING_TYPES(compute, "single_map_order", [&] {
    return single_map_order<scalar_t>(r, spatial_scale, conversion, [&](const scalar_t* b) {
      const auto g = roi_math::roi_pool_geometry<scalar_t>(b[1], b[2], b[3], b[4], static_cast<scalar_t>(spatial_scale));
      return last_row_pooled(g, in.height);
    }, order);
  });
  const auto forward = PYDET_SELECT_ISA(RoiPoolForwardFn, roi_pool_forward);
  conversion.run(num_rois, needed, [&](int64_t i) {
    forward(p, in, out, argmax_data, order[i], order[i] + 1, 0, channels);
  });
  return {output, argmax};
}

at::Tensor roi_pool_backward_cpu(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                                 double spatial_scale, int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                 int64_t channels, int64_t height, int64_t width) {
  const char* op = "_roi_pool_backward";
  check_roi_pool_backward_tensors(grad, rois, argmax, op);
  TORCH_CHECK(grad.device().is_cpu(), op, ": expected CPU tensors, got ", grad.device());
  check_roi_pool_backward_sizes(grad, rois, argmax, pooled_height, pooled_width, batch_size, channels, height, width,
                                op);

  const auto compute = compute_type_for(grad.scalar_type());
  const at::Tensor r = prepared_rois(rois, compute, batch_size, op);
  const auto format = roi_layout_of(grad);
  if (grad.numel() == 0 || batch_size == 0 || height == 0 || width == 0) {
    return zeros_large({batch_size, channels, height, width}, grad.options(), format);
  }
  // argmax indices must name cells of the plane: anything else would write out of bounds.
  const at::Tensor arg = contiguous_large(argmax, format);
  const auto [lo, hi] = at::aminmax(arg);
  TORCH_CHECK(lo.item<int32_t>() >= -1 && hi.item<int64_t>() < height * width, op,
              ": argmax values must lie in [-1, height * width), got [", lo.item<int32_t>(), ", ", hi.item<int32_t>(),
              "]");
  const at::Tensor g = contiguous_large(grad, format);
  at::Tensor grad_input = zeros_large({batch_size, channels, height, width}, grad.options().dtype(compute), format);
  const RoiAlignParams p = pool_params(r, spatial_scale, pooled_height, pooled_width, grad.scalar_type());
  const RoisByImage groups = AT_DISPATCH_FLOATING_TYPES(compute, "group_rois", [&] {
    return group_rois_by_image<scalar_t>(r, batch_size);
  });
  const MapView gout = view_of(g), gin = view_of(grad_input);
  const int32_t* argmax_data = arg.const_data_ptr<int32_t>();
  const auto backward = PYDET_SELECT_ISA(RoiPoolBackwardFn, roi_pool_backward);
  for_each_unit(batch_size, [&](int64_t b) {
    const int64_t first = groups.offsets[b];
    backward(p, gout, argmax_data, gin, groups.ids.data() + first, groups.offsets[b + 1] - first, 0, channels);
  });
  return converted_large(grad_input, grad.scalar_type(), format);
}

}  // namespace

TORCH_LIBRARY_IMPL(pydet_ops, CPU, m) {
  m.impl("roi_pool", TORCH_FN(roi_pool_forward_cpu));
  m.impl("_roi_pool_backward", TORCH_FN(roi_pool_backward_cpu));
}

}  // namespace cpu
}  // namespace pydet_ops
