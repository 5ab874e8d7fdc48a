// CPU-side plumbing shared by the RoI kernels: tensor views, layout choice, work partitions.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "common/roi_align_math.h"
#include "cpu/memory.h"
#include "ops/cpu/roi_align_kernel.h"
#include "ops/roi_checks.h"

namespace pydet_ops {
namespace cpu {

inline ElementType element_type_of(at::ScalarType t) {
  switch (t) {
    case at::kDouble:
      return ElementType::kDouble;
    case at::kHalf:
      return ElementType::kHalf;
    case at::kBFloat16:
      return ElementType::kBFloat16;
    default:
      return ElementType::kFloat;
  }
}

inline at::ScalarType compute_type_for(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline MapView view_of(const at::Tensor& t) {
  return MapView{const_cast<void*>(t.const_data_ptr()), t.size(0), t.size(1), t.size(2), t.size(3),
                 t.stride(0),                          t.stride(1), t.stride(2), t.stride(3)};
}

// Whether an NCHW map is worth converting to channels_last first: when the RoIs read each pixel more than
// about twice on average, the vectorised channels_last loop repays the copy.
inline bool worth_channels_last(double reads_per_channel, int64_t batch, int64_t height, int64_t width) {
  return reads_per_channel > 2.0 * static_cast<double>(batch) * static_cast<double>(height) * static_cast<double>(width);
}

inline bool worth_channels_last(double reads_per_channel, const at::Tensor& map) {
  return worth_channels_last(reads_per_channel, map.size(0), map.size(2), map.size(3));
}

// Row bands per image for a backward pass: enough (image, band) units to give every thread work when there
// are fewer images than threads. Bands split the cells each unit owns, never a cell's summation order.
inline int64_t row_bands(int64_t images, int64_t height) {
  const int64_t threads = at::get_num_threads();
  const int64_t bands = images >= threads ? 1 : (threads + images - 1) / std::max<int64_t>(images, 1);
  return std::max<int64_t>(1, std::min(bands, height));
}

// RoIs grouped by image, each group in ascending RoI order (compressed rows: ids[offsets[b] .. offsets[b+1])).
struct RoisByImage {
  std::vector<int64_t> offsets;
  std::vector<int64_t> ids;
};

template <typename T>
RoisByImage group_rois_by_image(const at::Tensor& rois, int64_t batch) {
  const T* r = rois.const_data_ptr<T>();
  const int64_t k = rois.size(0);
  RoisByImage g;
  g.offsets.assign(static_cast<size_t>(batch + 1), 0);
  for (int64_t i = 0; i < k; ++i) ++g.offsets[static_cast<int64_t>(r[5 * i]) + 1];
  for (int64_t b = 0; b < batch; ++b) g.offsets[b + 1] += g.offsets[b];
  g.ids.resize(static_cast<size_t>(k));
  std::vector<int64_t> next(g.offsets.begin(), g.offsets.end() - 1);
  for (int64_t i = 0; i < k; ++i) g.ids[next[static_cast<int64_t>(r[5 * i])]++] = i;
  return g;
}

// RoI indices ordered by group (`group_of(k)`, below 2^32), then along a Z-order curve of the RoI centres on
// the feature map they read (`scale_of(k)`), so that the RoIs one thread handles in a row read overlapping
// pixels while they are still in cache.
template <typename T, typename GroupOf, typename ScaleOf>
std::vector<int64_t> spatial_order(const at::Tensor& rois, const GroupOf& group_of, const ScaleOf& scale_of) {
  const T* r = rois.const_data_ptr<T>();
  const int64_t k = rois.size(0);
  std::vector<std::pair<uint64_t, int64_t>> keyed(static_cast<size_t>(k));
  auto spread = [](uint64_t v) {  // interleave the low 16 bits of v with zeros
    v &= 0xffff;
    v = (v | (v << 8)) & 0x00ff00ff;
    v = (v | (v << 4)) & 0x0f0f0f0f;
    v = (v | (v << 2)) & 0x33333333;
    v = (v | (v << 1)) & 0x55555555;
    return v;
  };
  auto cell = [](T v, double scale) {  // 8-pixel cells of the feature map; NaN and out-of-range centres clamp
    const double c = static_cast<double>(v) * scale / 8.0;
    return static_cast<uint64_t>(c > 0 ? (c < 65535 ? c : 65535) : 0);
  };
  for (int64_t i = 0; i < k; ++i) {
    const T* b = r + 5 * i;
    const double scale = scale_of(i);
    const uint64_t z = spread(cell((b[1] + b[3]) / 2, scale)) | (spread(cell((b[2] + b[4]) / 2, scale)) << 1);
    keyed[i] = {(static_cast<uint64_t>(group_of(i)) << 32) | z, i};
  }
  std::sort(keyed.begin(), keyed.end());
  std::vector<int64_t> order(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) order[i] = keyed[i].second;
  return order;
}

// RoI indices ordered by image, then spatially (one map read at `spatial_scale`).
template <typename T>
std::vector<int64_t> spatial_order(const at::Tensor& rois, double spatial_scale) {
  const T* r = rois.const_data_ptr<T>();
  return spatial_order<T>(
      rois, [r](int64_t i) { return static_cast<uint64_t>(r[5 * i]); }, [spatial_scale](int64_t) { return spatial_scale; });
}

// Runs fn(unit) for every unit, in parallel. A unit keeps all its channels: splitting the channels of one
// unit between threads was measured to slow the backward down on this project's machines (one image,
// 2 threads: 8.7 ms against 6.2 ms on one thread; two cores writing different channels of the same pixels).
template <typename Fn>
void for_each_unit(int64_t units, const Fn& fn) {
  at::parallel_for(0, units, 1, [&](int64_t begin, int64_t end) {
    for (int64_t unit = begin; unit < end; ++unit) fn(unit);
  });
}

// Bilinear reads per channel the RoIs will make (4 per sampling point): decides the layout.
template <typename T>
inline double roi_align_reads(const at::Tensor& rois, double spatial_scale, int64_t ph, int64_t pw, int64_t sampling_ratio,
                       bool aligned) {
  const T* r = rois.const_data_ptr<T>();
  double reads = 0;
  for (int64_t k = 0; k < rois.size(0); ++k) {
    const auto g = roi_math::roi_align_geometry<T>(r[5 * k + 1], r[5 * k + 2], r[5 * k + 3], r[5 * k + 4],
                                                   static_cast<T>(spatial_scale), static_cast<int>(ph),
                                                   static_cast<int>(pw), static_cast<int>(sampling_ratio), aligned);
    reads += 4.0 * ph * pw * g.grid_h * g.grid_w;
  }
  return reads;
}

inline RoiAlignParams params_for(const at::Tensor& rois, double spatial_scale, int64_t ph, int64_t pw, int64_t sampling_ratio,
                          bool aligned, at::ScalarType type) {
  return RoiAlignParams{rois.const_data_ptr(), rois.size(0),         spatial_scale,      static_cast<int>(ph),
                        static_cast<int>(pw),  static_cast<int>(sampling_ratio), aligned, element_type_of(type)};
}

}  // namespace cpu
}  // namespace pydet_ops
