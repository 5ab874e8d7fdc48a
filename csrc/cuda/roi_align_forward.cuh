// Device code and launchers shared by the CUDA kernels of roi_align and multi_scale_roi_align: the map
// table, the pooling shape, each RoI's map, and the forward kernel. The backward kernels are in
// cuda/roi_align_backward.cuh.
//
// Both ops pool RoIs with the geometry and bilinear taps of common/roi_align_math.h, in the CPU kernel's
// operation order. A launch reads a table of feature maps: roi_align has one; multi_scale_roi_align names
// each RoI's level in an int32 array and passes up to kMaxLevels maps per launch.
//
// Forward: one thread per output element; elements are numbered in the output's memory order, so
// consecutive threads walk pw for NCHW and channels for channels_last (coalesced reads of one pixel's
// channels).
//
// Batch indices outside [0, N): see cuda/roi_device.cuh.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/roi_align_math.h"
#include "cuda/launch.h"
#include "cuda/roi_device.cuh"
#include "ops/roi_checks.h"

namespace pydet_ops {
namespace cuda {
namespace {

// Feature maps one launch can read; more levels take more launches.
constexpr int kMaxLevels = 8;

// Element strides of a [N, C, H, W] tensor.
// A feature map, or the gradient buffer of one, as the kernels address it.
struct RoiMap {
  void* data;
  RoiStrides stride;
  int height, width;
  double spatial_scale;
};

inline RoiMap roi_map_of(const at::Tensor& t, double spatial_scale) {
  return RoiMap{const_cast<void*>(t.const_data_ptr()), roi_strides_of(t), static_cast<int>(t.size(2)),
                static_cast<int>(t.size(3)), spatial_scale};
}

// The maps of one launch: maps[i] is level first + i.
struct RoiMapTable {
  RoiMap maps[kMaxLevels];
  int first, count;
};

inline RoiMapTable roi_map_table(const std::vector<RoiMap>& maps, size_t first) {
  RoiMapTable t{};
  t.first = static_cast<int>(first);
  t.count = static_cast<int>(std::min<size_t>(kMaxLevels, maps.size() - first));
  for (int s = 0; s < t.count; ++s) t.maps[s] = maps[first + s];
  return t;
}

// The scalar arguments every kernel needs (held as int by the CPU loops too).
struct PoolShape {
  int64_t batch, channels;
  int pooled_h, pooled_w, sampling_ratio;
  bool aligned;
};

constexpr int kNoLevel = -1;      // the RoI pools to zero (multi_scale_roi_align: no FPN level)
constexpr int kOtherLaunch = -2;  // the RoI's level is in another launch's table

// The slot of `table` that RoI k pools from, or kNoLevel / kOtherLaunch. RoIs without a level are written
// by the launch that holds level 0, so every output element is written exactly once.
__device__ __forceinline__ int table_slot(const RoiMapTable& table, const int* levels, int64_t k) {
  const int level = levels == nullptr ? 0 : levels[k];
  if (level < 0) return table.first == 0 ? kNoLevel : kOtherLaunch;
  const int slot = level - table.first;
  return slot >= 0 && slot < table.count ? slot : kOtherLaunch;
}

// table.maps[slot] by constant indices: a dynamic index into a kernel parameter would copy the whole
// table to local memory.
__device__ __forceinline__ RoiMap table_map(const RoiMapTable& table, int slot) {
  RoiMap m = table.maps[0];
#pragma unroll
  for (int s = 1; s < kMaxLevels; ++s) {
    if (s == slot) m = table.maps[s];
  }
  return m;
}

template <typename T>
__device__ __forceinline__ roi_math::RoiAlignGeometry<T> geometry_of(const T* roi, const RoiMap& m,
                                                                      const PoolShape& s) {
  return roi_math::roi_align_geometry<T>(roi[1], roi[2], roi[3], roi[4], static_cast<T>(m.spatial_scale),
                                         s.pooled_h, s.pooled_w, s.sampling_ratio, s.aligned);
}

// ---------------------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------------------

// Average of the bilinear samples of bin (ph, pw) of channel c: the CPU loop's sum, term for term.
template <typename scalar_t, typename T>
__device__ __forceinline__ T bin_average(const RoiMap& m, const T* roi, int64_t image, int64_t c, int ph, int pw,
                                         const PoolShape& s) {
  const auto g = geometry_of(roi, m, s);
  const scalar_t* __restrict__ base = static_cast<const scalar_t*>(m.data) + image * m.stride.n + c * m.stride.c;
  T acc(0);
  for (int iy = 0; iy < g.grid_h; ++iy) {
    roi_math::AxisTap<T> ty;
    if (!roi_math::axis_tap(roi_math::sample_coord(g.start_h, g.bin_h, ph, iy, g.grid_h), m.height, ty)) continue;
    const scalar_t* low_row = base + ty.low * m.stride.h;
    const scalar_t* high_row = base + ty.high * m.stride.h;
    for (int ix = 0; ix < g.grid_w; ++ix) {
      roi_math::AxisTap<T> tx;
      if (!roi_math::axis_tap(roi_math::sample_coord(g.start_w, g.bin_w, pw, ix, g.grid_w), m.width, tx)) continue;
      roi_math::BilinearTaps<T> t;
      roi_math::combine_taps(ty, tx, t);
      const int64_t xl = tx.low * m.stride.w, xh = tx.high * m.stride.w;
      const T v1 = static_cast<T>(low_row[xl]);
      const T v2 = static_cast<T>(low_row[xh]);
      const T v3 = static_cast<T>(high_row[xl]);
      const T v4 = static_cast<T>(high_row[xh]);
      acc += t.w1 * v1 + t.w2 * v2 + t.w3 * v3 + t.w4 * v4;
    }
  }
  return acc / g.count;
}

// `out` is dense in its memory format, element i at offset i.
template <typename scalar_t, bool kChannelsLast>
__global__ void __launch_bounds__(kThreads)
    roi_align_forward_kernel(RoiMapTable table, const at::opmath_type<scalar_t>* __restrict__ rois,
                             const int* __restrict__ levels, PoolShape s, int64_t total, scalar_t* __restrict__ out) {
  using T = at::opmath_type<scalar_t>;
  PYDET_CUDA_KERNEL_LOOP(i, total) {
    const Coord4 e = unravel<kChannelsLast>(i, s.channels, s.pooled_h, s.pooled_w);
    const int slot = table_slot(table, levels, e.n);
    if (slot == kOtherLaunch) continue;
    T value(0);
    if (slot >= 0) {
      const RoiMap m = table_map(table, slot);
      const T* roi = rois + 5 * e.n;
      const int64_t image = roi_image(roi, s.batch);
      if (image >= 0 && m.height > 0 && m.width > 0) {
        value = bin_average<scalar_t, T>(m, roi, image, e.c, e.h, e.w, s);
      }
    }
    out[i] = static_cast<scalar_t>(value);
  }
}

// Pools every RoI (`rois`: [K, 5] in the arithmetic type, contiguous) from its map into `output` ([K, C,
// pooled_h, pooled_w], dense in its memory format). `levels`: each RoI's index into `maps` or -1, or nullptr
// when there is one map.
template <typename scalar_t>
void launch_roi_align_forward(const std::vector<RoiMap>& maps, const at::Tensor& rois, const int* levels,
                              const PoolShape& s, at::Tensor& output, cudaStream_t stream) {
  using T = at::opmath_type<scalar_t>;
  const int64_t total = output.numel();
  if (total == 0) return;
  const bool channels_last = roi_layout_of(output) == at::MemoryFormat::ChannelsLast;
  for (size_t first = 0; first < maps.size(); first += kMaxLevels) {
    const RoiMapTable table = roi_map_table(maps, first);
    const auto launch = [&](auto kernel) {
      kernel<<<grid_size(total), kThreads, 0, stream>>>(table, rois.const_data_ptr<T>(), levels, s, total,
                                                        output.mutable_data_ptr<scalar_t>());
      PYDET_CUDA_CHECK_LAUNCH();
    };
    if (channels_last) {
      launch(roi_align_forward_kernel<scalar_t, true>);
    } else {
      launch(roi_align_forward_kernel<scalar_t, false>);
    }
  }
}

}  // namespace
}  // namespace cuda
}  // namespace pydet_ops
