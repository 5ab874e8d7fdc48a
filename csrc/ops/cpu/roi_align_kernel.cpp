// CPU kernels of roi_align and _roi_align_backward: validation, layout choice, partitioning. The loops are
// roi_align_loops.h (per ISA); the geometry and bilinear math is common/roi_align_math.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/roi_align_math.h"
#include "ops/checks.h"
#include "ops/cpu/banded_conversion.h"
#include "ops/cpu/roi_common.h"
#include "ops/roi_checks.h"

namespace pydet_ops {
namespace cpu {
namespace {

at::Tensor roi_align_forward_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                 int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  const char* op = "roi_align";
  check_roi_forward_args(input, rois, pooled_height, pooled_width, spatial_scale, op);
  check_sampling_ratio(sampling_ratio, op);

  const auto compute = compute_type_for(input.scalar_type());
  const at::Tensor r = prepared_rois(rois, compute, input.size(0), op);
  const auto format = roi_layout_of(input);
  const int64_t num_rois = rois.size(0), channels = input.size(1);
  if (num_rois == 0 || channels == 0 || input.size(2) == 0 || input.size(3) == 0) {
    // No RoI, no channel, or a map with no pixel (every sample falls outside): zeros.
    return zeros_large({num_rois, channels, pooled_height, pooled_width}, input.options(), format);
  }
  at::Tensor output = empty_large({num_rois, channels, pooled_height, pooled_width}, input.options(), format);

  const double reads = AT_DISPATCH_FLOATING_TYPES(compute, "roi_align_reads", [&] {
    return roi_align_reads<scalar_t>(r, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned);
  });
  // NCHW maps worth converting are converted in bands while pooling runs (banded_conversion.h).
  BandedConversion conversion;
  const MapView in = view_of(conversion.add(input, format, reads)), out = view_of(output);
  const RoiAlignParams p = params_for(r, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned,
                                      input.scalar_type());
  std::vector<int64_t> order;
  const std::vector<int64_t> needed = AT_DISPATCH_FLOATING_TYPES(compute, "single_map_order", [&] {
    return single_map_order<scalar_t>(r, spatial_scale, conversion, [&](const scalar_t* b) {
      const auto g = roi_math::roi_align_geometry<scalar_t>(b[1], b[2], b[3], b[4], static_cast<scalar_t>(spatial_scale),
                                                            p.pooled_h, p.pooled_w, p.sampling_ratio, aligned);
      return last_row_read(g, p.pooled_h, in.height);
    }, order);
  });
  const auto forward = PYDET_SELECT_ISA(RoiAlignForwardFn, roi_align_forward);
  conversion.run(num_rois, needed, [&](int64_t i) {
    forward(p, in, out, order[i], order[i] + 1, 0, channels);
  });
  return output;
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t batch_size, int64_t channels,
                                  int64_t height, int64_t width, int64_t sampling_ratio, bool aligned) {
  const char* op = "_roi_align_backward";
  check_roi_align_backward_tensors(grad, rois, op);
  TORCH_CHECK(grad.device().is_cpu(), op, ": expected CPU tensors, got ", grad.device());
  check_roi_align_backward_sizes(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height,
                                 width, sampling_ratio, op);

  const auto compute = compute_type_for(grad.scalar_type());
  const at::Tensor r = prepared_rois(rois, compute, batch_size, op);
  const auto format = roi_layout_of(grad);
  if (grad.numel() == 0 || batch_size == 0 || height == 0 || width == 0) {
    return zeros_large({batch_size, channels, height, width}, grad.options(), format);
  }

  // Accumulate in the arithmetic type, in channels_last when the RoIs cover the map densely.
  const double reads = AT_DISPATCH_FLOATING_TYPES(compute, "roi_align_reads", [&] {
    return roi_align_reads<scalar_t>(r, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned);
  });
  const bool accumulate_cl =
      format == at::MemoryFormat::ChannelsLast || worth_channels_last(reads, batch_size, height, width);
  at::Tensor grad_input =
      zeros_large({batch_size, channels, height, width}, grad.options().dtype(compute),
                  accumulate_cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);

  const RoiAlignParams p = params_for(r, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned,
                                      grad.scalar_type());
  const RoisByImage groups = AT_DISPATCH_FLOATING_TYPES(compute, "group_rois", [&] {
    return group_rois_by_image<scalar_t>(r, batch_size);
  });
  const MapView gout = view_of(grad), gin = view_of(grad_input);
  const auto backward = PYDET_SELECT_ISA(RoiAlignBackwardFn, roi_align_backward);
  // Each (image, row band) owns its cells of grad_input: no two tasks write the same cell, and every cell
  // sums its contributions in RoI order, whatever the number of threads.
  const int64_t bands = row_bands(batch_size, height);
  const int64_t band_rows = (height + bands - 1) / bands;
  for_each_unit(batch_size * bands, [&](int64_t unit) {
    const int64_t b = unit / bands, row0 = (unit % bands) * band_rows;
    const int64_t first = groups.offsets[b];
    backward(p, gout, gin, groups.ids.data() + first, groups.offsets[b + 1] - first, 0, channels, row0,
             std::min(height, row0 + band_rows));
  });
  return converted_large(grad_input, grad.scalar_type(), format);
}

}  // namespace

TORCH_LIBRARY_IMPL(pydet_ops, CPU, m) {
  m.impl("roi_align", TORCH_FN(roi_align_forward_cpu));
  m.impl("_roi_align_backward", TORCH_FN(roi_align_backward_cpu));
}

}  // namespace cpu
}  // namespace pydet_ops
