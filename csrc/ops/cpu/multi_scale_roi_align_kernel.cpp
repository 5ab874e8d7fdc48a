// CPU kernels of multi_scale_roi_align: the level of every RoI is decided here, then each RoI is pooled
// straight from its level by the roi_align loops. No per-level gather or scatter of RoIs or outputs.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "common/roi_align_math.h"
#include "ops/checks.h"
#include "ops/cpu/banded_conversion.h"
#include "ops/cpu/roi_common.h"
#include "ops/roi_checks.h"

namespace pydet_ops {
namespace cpu {
namespace {

constexpr const char* kOp = "multi_scale_roi_align";

// Level of each RoI relative to the finest map, or -1 when it has none (NaN / negative area).
template <typename T>
std::vector<int> levels_of(const at::Tensor& rois, at::ArrayRef<double> scales, int64_t canonical_scale,
                           int64_t canonical_level) {
  int k_min, k_max;
  fpn_level_range(scales, k_min, k_max);
  const int num_levels = static_cast<int>(scales.size());
  const T* r = rois.const_data_ptr<T>();
  std::vector<int> levels(static_cast<size_t>(rois.size(0)));
  for (int64_t k = 0; k < rois.size(0); ++k) {
    int l = roi_math::fpn_level<T>(r[5 * k + 1], r[5 * k + 2], r[5 * k + 3], r[5 * k + 4],
                                   static_cast<int>(canonical_scale), static_cast<int>(canonical_level), k_min, k_max);
    levels[k] = l < num_levels ? l : -1;
  }
  return levels;
}

at::Tensor multi_scale_forward_cpu(at::TensorList features, const at::Tensor& rois, at::ArrayRef<double> scales,
                                   int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                   int64_t canonical_scale, int64_t canonical_level) {
  check_multi_scale_forward_args(features, rois, scales, pooled_height, pooled_width, sampling_ratio, canonical_scale,
                                 canonical_level, kOp, [&](const at::Tensor& map) {
                                   TORCH_CHECK(map.device().is_cpu() && rois.device().is_cpu(), kOp,
                                               ": expected CPU tensors, got ", map.device(), " and ", rois.device());
                                 });
  const at::Tensor& first = features[0];
  const auto compute = compute_type_for(first.scalar_type());
  const at::Tensor r = prepared_rois(rois, compute, first.size(0), kOp);
  const auto format = roi_layout_of(first);
  const int64_t num_rois = rois.size(0), channels = first.size(1);
  if (num_rois == 0 || channels == 0) {
    return zeros_large({num_rois, channels, pooled_height, pooled_width}, first.options(), format);
  }
  // Every RoI's block of the output is written below (zeros for a RoI with no level or an empty map).
  at::Tensor output = empty_large({num_rois, channels, pooled_height, pooled_width}, first.options(), format);

  const std::vector<int> levels = AT_DISPATCH_FLOATING_TYPES(compute, "levels_of", [&] {
    return levels_of<scalar_t>(r, scales, canonical_scale, canonical_level);
  });
  // Per level: the map in the layout that pays for the RoIs that read it, and its parameters. NCHW maps
  // worth converting are converted in bands while pooling runs (banded_conversion.h), coarsest level first.
  const size_t num_levels = features.size();
  BandedConversion conversion;
  std::vector<MapView> views(num_levels);
  std::vector<size_t> added(num_levels);
  std::vector<RoiAlignParams> params;
  for (size_t l = 0; l < num_levels; ++l) {
    params.push_back(params_for(r, scales[l], pooled_height, pooled_width, sampling_ratio, /*aligned=*/false,
                                first.scalar_type()));
  }
  for (size_t step = 0; step < num_levels; ++step) {
    const size_t l = num_levels - 1 - step;
    // Reads per channel at this level, estimated from the average RoI.
    const double reads = AT_DISPATCH_FLOATING_TYPES(compute, "roi_align_reads", [&] {
      return roi_align_reads<scalar_t>(r, scales[l], pooled_height, pooled_width, sampling_ratio, false);
    });
    int64_t here = 0;
    for (int lv : levels) here += lv == static_cast<int>(l);
    added[l] = step;
    views[l] = view_of(conversion.add(features[l], roi_layout_of(features[l]), reads * here / num_rois));
  }
  const MapView out = view_of(output);
  const auto forward = PYDET_SELECT_ISA(RoiAlignForwardFn, roi_align_forward);
  // One RoI's block of the output is contiguous in both layouts; all-zero bits are 0.0 in every float type.
  const size_t block_bytes = static_cast<size_t>(channels * pooled_height * pooled_width) * output.element_size();
  char* output_bytes = static_cast<char*>(output.mutable_data_ptr());
  // RoIs by level, image and place on their map: consecutive RoIs of a thread read overlapping pixels. Then,
  // keeping that order within each band, by the bands of the conversion their rows wait for.
  std::vector<int64_t> order, needed(static_cast<size_t>(num_rois));
  AT_DISPATCH_FLOATING_TYPES(compute, "spatial_order", [&] {
    const scalar_t* data = r.const_data_ptr<scalar_t>();
    const int64_t images = first.size(0);
    order = spatial_order<scalar_t>(
        r, [&](int64_t k) { return static_cast<uint64_t>((levels[k] + 1) * images + static_cast<int64_t>(data[5 * k])); },
        [&](int64_t k) { return levels[k] < 0 ? 1.0 : scales[levels[k]]; });
    for (int64_t k = 0; k < num_rois; ++k) {
      const int l = levels[k];
      if (l < 0) continue;
      const scalar_t* b = data + 5 * k;
      const auto g = roi_math::roi_align_geometry<scalar_t>(b[1], b[2], b[3], b[4], static_cast<scalar_t>(scales[l]),
                                                            static_cast<int>(pooled_height),
                                                            static_cast<int>(pooled_width),
                                                            static_cast<int>(sampling_ratio), false);
      needed[k] = conversion.bands_needed(added[l], static_cast<int64_t>(b[0]),
                                          last_row_read(g, static_cast<int>(pooled_height), views[l].height));
    }
  });
  conversion.run(num_rois, sort_by_bands(order, needed), [&](int64_t i) {
    const int64_t k = order[i];
    const int l = levels[k];
    if (l < 0 || views[l].height == 0 || views[l].width == 0) {
      std::memset(output_bytes + k * block_bytes, 0, block_bytes);  // pools to zero
      return;
    }
    forward(params[l], views[l], out, k, k + 1, 0, channels);
  });
  return output;
}

std::vector<at::Tensor> multi_scale_backward_cpu(const at::Tensor& grad, const at::Tensor& rois,
                                                 at::ArrayRef<double> scales, int64_t pooled_height,
                                                 int64_t pooled_width, int64_t sampling_ratio, int64_t canonical_scale,
                                                 int64_t canonical_level, at::IntArrayRef feature_sizes) {
  const char* op = "_multi_scale_roi_align_backward";
  const size_t num_levels = check_multi_scale_backward_args(
      grad, rois, scales, pooled_height, pooled_width, sampling_ratio, canonical_scale, canonical_level, feature_sizes,
      op, [&] { TORCH_CHECK(grad.device().is_cpu() && rois.device().is_cpu(), op, ": expected CPU tensors"); });
  const int64_t batch = feature_sizes[0], channels = feature_sizes[1];
  const auto compute = compute_type_for(grad.scalar_type());
  const at::Tensor r = prepared_rois(rois, compute, batch, op);
  const auto format = roi_layout_of(grad);

  std::vector<at::Tensor> grads;
  std::vector<MapView> views;
  std::vector<RoiAlignParams> params;
  for (size_t l = 0; l < num_levels; ++l) {
    const int64_t* s = feature_sizes.data() + 4 * l;
    check_level_sizes(s, batch, channels, op);
    // Channels_last accumulation: the loops vectorise over channels, and levels are small next to the RoIs.
    grads.push_back(
        zeros_large({s[0], s[1], s[2], s[3]}, grad.options().dtype(compute), at::MemoryFormat::ChannelsLast));
    views.push_back(view_of(grads.back()));
    params.push_back(params_for(r, scales[l], pooled_height, pooled_width, sampling_ratio, false, grad.scalar_type()));
  }
  if (grad.numel() > 0) {
    const std::vector<int> levels = AT_DISPATCH_FLOATING_TYPES(compute, "levels_of", [&] {
      return levels_of<scalar_t>(r, scales, canonical_scale, canonical_level);
    });
    // Units are (level, image) pairs; RoIs of each unit in ascending order.
    const std::vector<int64_t> image = AT_DISPATCH_FLOATING_TYPES(compute, "image_of", [&] {
      const scalar_t* data = r.const_data_ptr<scalar_t>();
      std::vector<int64_t> b(static_cast<size_t>(r.size(0)));
      for (int64_t k = 0; k < r.size(0); ++k) b[k] = static_cast<int64_t>(data[5 * k]);
      return b;
    });
    const int64_t units = static_cast<int64_t>(num_levels) * batch;
    std::vector<int64_t> offsets(static_cast<size_t>(units + 1), 0), ids;
    for (int64_t k = 0; k < rois.size(0); ++k) {
      if (levels[k] >= 0) ++offsets[levels[k] * batch + image[k] + 1];
    }
    for (int64_t u = 0; u < units; ++u) offsets[u + 1] += offsets[u];
    ids.resize(static_cast<size_t>(offsets[units]));
    std::vector<int64_t> next(offsets.begin(), offsets.end() - 1);
    for (int64_t k = 0; k < rois.size(0); ++k) {
      if (levels[k] >= 0) ids[next[levels[k] * batch + image[k]]++] = k;
    }
    const MapView gout = view_of(grad);
    const auto backward = PYDET_SELECT_ISA(RoiAlignBackwardFn, roi_align_backward);
    for_each_unit(units, [&](int64_t u) {
      const int64_t l = u / batch;
      if (offsets[u + 1] == offsets[u] || views[l].height == 0 || views[l].width == 0) return;
      backward(params[l], gout, views[l], ids.data() + offsets[u], offsets[u + 1] - offsets[u], 0, channels, 0,
               views[l].height);
    });
  }
  for (auto& g : grads) g = converted_large(g, grad.scalar_type(), format);
  return grads;
}

}  // namespace

TORCH_LIBRARY_IMPL(pydet_ops, CPU, m) {
  m.impl("multi_scale_roi_align", TORCH_FN(multi_scale_forward_cpu));
  m.impl("_multi_scale_roi_align_backward", TORCH_FN(multi_scale_backward_cpu));
}

}  // namespace cpu
}  // namespace pydet_ops
