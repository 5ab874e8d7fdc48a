// Backward device code and launchers shared by the CUDA kernels of roi_align and multi_scale_roi_align;
// the map table, pooling shape and per-RoI map choice they use are in cuda/roi_align_forward.cuh.
//
// Backward, default: one thread per element of the output gradient, atomicAdd of each sampling point's four
// weighted taps into a buffer of the arithmetic type (float32 for half types, converted once at the end).
//
// Backward, deterministic (torch.use_deterministic_algorithms): no atomics. Per feature map:
//   1. one thread per RoI records, for every pixel row and column, the first and last sampling point whose
//      taps touch it ("plan");
//   2. one warp per (image, row) lists, in RoI order, the RoIs whose sampling rows touch that row: a count
//      pass, an exclusive scan (at::cumsum), a fill pass (warp ballots keep the order);
//   3. one thread per input element (n, c, y, x) sums, RoI by RoI in list order, the contributions of the
//      sampling points that touch (y, x), in the CPU kernel's (ph, pw, iy, ix, tap) order.
// Each element is summed with the CPU kernel's operations in the CPU kernel's order, so the result is
// bitwise reproducible and equal to the CPU kernel's. Temporaries per map: about 8 * K * (H + W) bytes of
// tables and 4 * K * min(H, 2 * pooled_h * sampling_ratio) bytes of lists (4 * K * H when adaptive).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common/roi_align_math.h"
#include "cuda/launch.h"
#include "cuda/roi_align_forward.cuh"

namespace pydet_ops {
namespace cuda {
namespace {

// ---------------------------------------------------------------------------------------------------------
// Backward, default: atomics
// ---------------------------------------------------------------------------------------------------------

// table.maps[*].data are buffers of the arithmetic type T; `grad` is read through its strides and numbered
// in the buffers' memory format.
template <typename scalar_t, bool kChannelsLast>
__global__ void __launch_bounds__(kThreads)
    roi_align_backward_atomic_kernel(RoiMapTable table, const scalar_t* __restrict__ grad, RoiStrides gs,
                                     const at::opmath_type<scalar_t>* __restrict__ rois,
                                     const int* __restrict__ levels, PoolShape s, int64_t total) {
  using T = at::opmath_type<scalar_t>;
  PYDET_CUDA_KERNEL_LOOP(i, total) {
    const Coord4 e = unravel<kChannelsLast>(i, s.channels, s.pooled_h, s.pooled_w);
    const int slot = table_slot(table, levels, e.n);
    if (slot < 0) continue;
    const RoiMap m = table_map(table, slot);
    const T* roi = rois + 5 * e.n;
    const int64_t image = roi_image(roi, s.batch);
    if (image < 0 || m.height <= 0 || m.width <= 0) continue;
    const auto g = geometry_of(roi, m, s);
    const T grad_bin = static_cast<T>(grad[e.n * gs.n + e.c * gs.c + e.h * gs.h + e.w * gs.w]);
    T* base = static_cast<T*>(m.data) + image * m.stride.n + e.c * m.stride.c;
    for (int iy = 0; iy < g.grid_h; ++iy) {
      roi_math::AxisTap<T> ty;
      if (!roi_math::axis_tap(roi_math::sample_coord(g.start_h, g.bin_h, e.h, iy, g.grid_h), m.height, ty)) continue;
      T* low_row = base + ty.low * m.stride.h;
      T* high_row = base + ty.high * m.stride.h;
      for (int ix = 0; ix < g.grid_w; ++ix) {
        roi_math::AxisTap<T> tx;
        if (!roi_math::axis_tap(roi_math::sample_coord(g.start_w, g.bin_w, e.w, ix, g.grid_w), m.width, tx)) {
          continue;
        }
        roi_math::BilinearTaps<T> t;
        roi_math::combine_taps(ty, tx, t);
        const int64_t xl = tx.low * m.stride.w, xh = tx.high * m.stride.w;
        atomicAdd(low_row + xl, grad_bin * t.w1 / g.count);
        atomicAdd(low_row + xh, grad_bin * t.w2 / g.count);
        atomicAdd(high_row + xl, grad_bin * t.w3 / g.count);
        atomicAdd(high_row + xh, grad_bin * t.w4 / g.count);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Backward, deterministic: gather (see the top of this file)
// ---------------------------------------------------------------------------------------------------------

// What the gather needs of one RoI on the map being processed.
template <typename T>
struct RoiPlan {
  T start_h, start_w, bin_h, bin_w, count;
  int grid_h, grid_w;
  int col_lo, col_hi;  // pixel columns its taps touch lie in [col_lo, col_hi] (empty when col_lo > col_hi)
};

// Sampling points along one axis are numbered p * grid + i (bin p, point i), or by bin alone when that
// number would not fit an int; the gather then scans whole bins.
__device__ __forceinline__ bool numbered_by_bin(int pooled, int grid) {
  return static_cast<int64_t>(pooled) * grid > INT_MAX;
}

// For each pixel v in [0, size) of one axis: first[v * stride] and last[v * stride] = the smallest and largest
// number of a sampling point whose taps touch v, or -1. Stores only: the ascending pass leaves the largest
// number in each cell, the descending pass the smallest. [lo, hi]: the pixels touched.
template <typename T>
__device__ void mark_axis_samples(T start, T bin, int pooled, int grid, int size, int* first, int* last,
                                  int64_t stride, int& lo, int& hi) {
  const bool by_bin = numbered_by_bin(pooled, grid);
  for (int v = 0; v < size; ++v) {
    first[v * stride] = -1;
    last[v * stride] = -1;
  }
  lo = INT_MAX;
  hi = -1;
  for (int p = 0; p < pooled; ++p) {
    for (int i = 0; i < grid; ++i) {
      roi_math::AxisTap<T> t;
      if (!roi_math::axis_tap(roi_math::sample_coord(start, bin, p, i, grid), size, t)) continue;
      const int number = by_bin ? p : p * grid + i;
      last[t.low * stride] = number;
      last[t.high * stride] = number;
      lo = t.low < lo ? t.low : lo;
      hi = t.high > hi ? t.high : hi;
    }
  }
  for (int p = pooled - 1; p >= 0; --p) {
    for (int i = grid - 1; i >= 0; --i) {
      roi_math::AxisTap<T> t;
      if (!roi_math::axis_tap(roi_math::sample_coord(start, bin, p, i, grid), size, t)) continue;
      const int number = by_bin ? p : p * grid + i;
      first[t.low * stride] = number;
      first[t.high * stride] = number;
    }
  }
}

// Step 1, one thread per RoI. image[k] = the image RoI k pools from on this map, or -1 (another level, bad
// batch index): such a RoI is never listed, and its plan and table entries are never read. Row tables are
// [height][K] (the list passes read one row across RoIs), column tables [K][width] (the gather's threads
// read one RoI across columns).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    roi_align_plan_kernel(const T* __restrict__ rois, const int* __restrict__ levels, int level, T spatial_scale,
                          PoolShape s, int height, int width, int64_t num_rois, RoiPlan<T>* __restrict__ plans,
                          int64_t* __restrict__ image, int* row_first, int* row_last, int* col_first,
                          int* col_last) {
  PYDET_CUDA_KERNEL_LOOP(k, num_rois) {
    const T* roi = rois + 5 * k;
    const bool here = levels == nullptr || levels[k] == level;
    const int64_t b = here ? roi_image(roi, s.batch) : int64_t(-1);
    image[k] = b;
    if (b < 0) continue;
    const auto g = roi_math::roi_align_geometry<T>(roi[1], roi[2], roi[3], roi[4], spatial_scale, s.pooled_h,
                                                   s.pooled_w, s.sampling_ratio, s.aligned);
    RoiPlan<T> p;
    p.start_h = g.start_h;
    p.start_w = g.start_w;
    p.bin_h = g.bin_h;
    p.bin_w = g.bin_w;
    p.count = g.count;
    p.grid_h = g.grid_h;
    p.grid_w = g.grid_w;
    int row_lo, row_hi;
    mark_axis_samples(g.start_h, g.bin_h, s.pooled_h, g.grid_h, height, row_first + k, row_last + k, num_rois,
                      row_lo, row_hi);
    mark_axis_samples(g.start_w, g.bin_w, s.pooled_w, g.grid_w, width, col_first + k * width,
                      col_last + k * width, 1, p.col_lo, p.col_hi);
    plans[k] = p;
  }
}

// Step 2, one warp per row r = (image b, pixel row y): the RoIs of image b whose sampling rows touch y, in
// increasing RoI order. kFill = false counts them into counts[r]; kFill = true writes them to ids from
// offsets[r] on. Both passes test the same predicate, so the fill matches the count.
template <bool kFill>
__global__ void __launch_bounds__(kThreads)
    roi_align_row_lists_kernel(const int64_t* __restrict__ image, const int* __restrict__ row_first,
                               int64_t num_rois, int height, int64_t rows, const int64_t* __restrict__ offsets,
                               int64_t* __restrict__ counts, int* __restrict__ ids) {
  const int lane = threadIdx.x & 31;
  const unsigned lanes_below = (1u << lane) - 1u;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t r = warp; r < rows; r += warps) {  // uniform across the warp: every lane reaches the ballots
    const int64_t b = r / height;
    const int* first = row_first + (r % height) * num_rois;
    const int64_t base = kFill ? offsets[r] : 0;
    int64_t listed = 0;
    for (int64_t k0 = 0; k0 < num_rois; k0 += 32) {
      const int64_t k = k0 + lane;
      const bool member = k < num_rois && image[k] == b && first[k] >= 0;
      const unsigned mask = __ballot_sync(0xffffffffu, member);
      if (kFill && member) ids[base + listed + __popc(mask & lanes_below)] = static_cast<int>(k);
      listed += __popc(mask);
    }
    if (!kFill && lane == 0) counts[r] = listed;
  }
}

// The sampling points of one RoI that touch one pixel along one axis: from (bin_first, point_first) to
// (bin_last, point_last) in (bin, point) order, a superset checked point by point.
struct SampleSpan {
  int bin_first, point_first, bin_last, point_last;
};

__device__ __forceinline__ SampleSpan sample_span(int first, int last, int pooled, int grid) {
  if (numbered_by_bin(pooled, grid)) return SampleSpan{first, 0, last, grid - 1};
  return SampleSpan{first / grid, first % grid, last / grid, last % grid};
}

// Adds to `acc` the gradient RoI p sends to pixel (y, x), in the CPU kernel's order: bins (ph, pw), then
// points (iy, ix), then taps 1..4. Only points inside the spans can touch (y, x).
template <typename scalar_t, typename T>
__device__ __forceinline__ T add_roi_gradient(T acc, const RoiPlan<T>& p, const SampleSpan& rows,
                                              const SampleSpan& cols, int y, int x, int height, int width,
                                              const scalar_t* __restrict__ grad_roi, int64_t grad_sh,
                                              int64_t grad_sw) {
  for (int ph = rows.bin_first; ph <= rows.bin_last; ++ph) {
    const int iy_begin = ph == rows.bin_first ? rows.point_first : 0;
    const int iy_end = ph == rows.bin_last ? rows.point_last : p.grid_h - 1;
    for (int pw = cols.bin_first; pw <= cols.bin_last; ++pw) {
      const int ix_begin = pw == cols.bin_first ? cols.point_first : 0;
      const int ix_end = pw == cols.bin_last ? cols.point_last : p.grid_w - 1;
      const T g = static_cast<T>(grad_roi[ph * grad_sh + pw * grad_sw]);
      for (int iy = iy_begin; iy <= iy_end; ++iy) {
        roi_math::AxisTap<T> ty;
        if (!roi_math::axis_tap(roi_math::sample_coord(p.start_h, p.bin_h, ph, iy, p.grid_h), height, ty) ||
            (ty.low != y && ty.high != y)) {
          continue;
        }
        for (int ix = ix_begin; ix <= ix_end; ++ix) {
          roi_math::AxisTap<T> tx;
          if (!roi_math::axis_tap(roi_math::sample_coord(p.start_w, p.bin_w, pw, ix, p.grid_w), width, tx) ||
              (tx.low != x && tx.high != x)) {
            continue;
          }
          roi_math::BilinearTaps<T> t;
          roi_math::combine_taps(ty, tx, t);
          // Taps that coincide (last row or column) each add separately, as on the CPU.
          if (t.y_low == y && t.x_low == x) acc += g * t.w1 / p.count;
          if (t.y_low == y && t.x_high == x) acc += g * t.w2 / p.count;
          if (t.y_high == y && t.x_low == x) acc += g * t.w3 / p.count;
          if (t.y_high == y && t.x_high == x) acc += g * t.w4 / p.count;
        }
      }
    }
  }
  return acc;
}

// Step 3, one thread per element of the map's gradient `out` (dense in its memory format, element i at
// offset i); every element is written, zero when no RoI touches it.
template <typename scalar_t, bool kChannelsLast>
__global__ void __launch_bounds__(kThreads)
    roi_align_backward_gather_kernel(const scalar_t* __restrict__ grad, RoiStrides gs,
                                     const RoiPlan<at::opmath_type<scalar_t>>* __restrict__ plans,
                                     const int* __restrict__ row_first, const int* __restrict__ row_last,
                                     const int* __restrict__ col_first, const int* __restrict__ col_last,
                                     const int64_t* __restrict__ offsets, const int* __restrict__ ids,
                                     int64_t num_rois, PoolShape s, int height, int width, int64_t total,
                                     scalar_t* __restrict__ out) {
  using T = at::opmath_type<scalar_t>;
  PYDET_CUDA_KERNEL_LOOP(i, total) {
    const Coord4 e = unravel<kChannelsLast>(i, s.channels, height, width);
    const int64_t r = e.n * height + e.h;
    const int64_t end = offsets[r + 1];
    T acc(0);
    for (int64_t j = offsets[r]; j < end; ++j) {
      const int k = ids[j];
      const RoiPlan<T> p = plans[k];
      if (e.w < p.col_lo || e.w > p.col_hi) continue;
      const int64_t col_cell = static_cast<int64_t>(k) * width + e.w;
      const int cf = col_first[col_cell];
      if (cf < 0) continue;
      const int64_t row_cell = static_cast<int64_t>(e.h) * num_rois + k;
      const SampleSpan rows = sample_span(row_first[row_cell], row_last[row_cell], s.pooled_h, p.grid_h);
      const SampleSpan cols = sample_span(cf, col_last[col_cell], s.pooled_w, p.grid_w);
      acc = add_roi_gradient<scalar_t, T>(acc, p, rows, cols, e.h, e.w, height, width,
                                          grad + static_cast<int64_t>(k) * gs.n + e.c * gs.c, gs.h, gs.w);
    }
    out[i] = static_cast<scalar_t>(acc);
  }
}

// The gradient of one map (level `level` of `levels`, or the only map when levels is nullptr) into `out`
// ([N, C, H, W] of grad's dtype, dense in its memory format), deterministically.
template <typename scalar_t>
void gather_map_gradient(const at::Tensor& grad, const at::Tensor& rois, const int* levels, int level,
                         double spatial_scale, const PoolShape& s, at::Tensor& out, cudaStream_t stream) {
  using T = at::opmath_type<scalar_t>;
  const int64_t total = out.numel();
  if (total == 0) return;
  const int64_t num_rois = rois.size(0);
  if (num_rois == 0) {
    out.zero_();
    return;
  }
  const int height = static_cast<int>(out.size(2)), width = static_cast<int>(out.size(3));
  const int64_t rows = s.batch * height;
  const auto opts = grad.options();

  at::Tensor plans = at::empty({num_rois * static_cast<int64_t>(sizeof(RoiPlan<T>))}, opts.dtype(at::kByte));
  at::Tensor image = at::empty({num_rois}, opts.dtype(at::kLong));
  at::Tensor row_tables = at::empty({2, height, num_rois}, opts.dtype(at::kInt));
  at::Tensor col_tables = at::empty({2, num_rois, width}, opts.dtype(at::kInt));
  int* row_first = row_tables.mutable_data_ptr<int>();
  int* row_last = row_first + static_cast<int64_t>(height) * num_rois;
  int* col_first = col_tables.mutable_data_ptr<int>();
  int* col_last = col_first + num_rois * width;
  RoiPlan<T>* plan_ptr = reinterpret_cast<RoiPlan<T>*>(plans.mutable_data_ptr());

  roi_align_plan_kernel<T><<<grid_size(num_rois), kThreads, 0, stream>>>(
      rois.const_data_ptr<T>(), levels, level, static_cast<T>(spatial_scale), s, height, width, num_rois, plan_ptr,
      image.mutable_data_ptr<int64_t>(), row_first, row_last, col_first, col_last);
  PYDET_CUDA_CHECK_LAUNCH();

  // Lists: a RoI touches at most H rows, and at most 2 per sampling row (known here when the grid is fixed).
  at::Tensor counts = at::empty({rows}, opts.dtype(at::kLong));
  at::Tensor offsets = at::zeros({rows + 1}, opts.dtype(at::kLong));
  const int64_t sampled_rows =
      s.sampling_ratio > 0
          ? 2 * std::min<int64_t>(height, s.pooled_h) * std::min<int64_t>(height, s.sampling_ratio)  // no overflow
          : int64_t(height);
  const int64_t rows_per_roi = std::min<int64_t>(height, sampled_rows);
  at::Tensor ids = at::empty({num_rois * rows_per_roi}, opts.dtype(at::kInt));
  const unsigned int list_blocks = grid_size(rows * 32);
  roi_align_row_lists_kernel<false><<<list_blocks, kThreads, 0, stream>>>(
      image.const_data_ptr<int64_t>(), row_first, num_rois, height, rows, nullptr,
      counts.mutable_data_ptr<int64_t>(), nullptr);
  PYDET_CUDA_CHECK_LAUNCH();
  at::Tensor tail = offsets.narrow(0, 1, rows);
  at::cumsum_out(tail, counts, 0);
  roi_align_row_lists_kernel<true><<<list_blocks, kThreads, 0, stream>>>(
      image.const_data_ptr<int64_t>(), row_first, num_rois, height, rows, offsets.const_data_ptr<int64_t>(),
      nullptr, ids.mutable_data_ptr<int>());
  PYDET_CUDA_CHECK_LAUNCH();

  const RoiStrides gs = roi_strides_of(grad);
  const auto launch = [&](auto kernel) {
    kernel<<<grid_size(total), kThreads, 0, stream>>>(
        grad.const_data_ptr<scalar_t>(), gs, plan_ptr, row_first, row_last, col_first, col_last,
        offsets.const_data_ptr<int64_t>(), ids.const_data_ptr<int>(), num_rois, s, height, width, total,
        out.mutable_data_ptr<scalar_t>());
    PYDET_CUDA_CHECK_LAUNCH();
  };
  if (roi_layout_of(out) == at::MemoryFormat::ChannelsLast) {
    launch(roi_align_backward_gather_kernel<scalar_t, true>);
  } else {
    launch(roi_align_backward_gather_kernel<scalar_t, false>);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Backward entry shared by both ops
// ---------------------------------------------------------------------------------------------------------

// The gradient of each map, sizes[l] = [N, C, H, W] (N == s.batch, C == s.channels), in grad's dtype and
// `format`. `rois`: [K, 5] in the arithmetic type, contiguous; `levels` as for the forward.
inline std::vector<at::Tensor> roi_align_backward_maps(const at::Tensor& grad, const at::Tensor& rois,
                                                       const int* levels,
                                                       const std::vector<std::array<int64_t, 4>>& sizes,
                                                       at::ArrayRef<double> scales, const PoolShape& s,
                                                       at::MemoryFormat format) {
  const auto stream = at::cuda::getCurrentCUDAStream();
  std::vector<at::Tensor> out;
  if (grad.numel() == 0) {
    for (const auto& size : sizes) out.push_back(zeros_in(size, grad.options(), format));
    return out;
  }
  bool deterministic = at::globalContext().deterministicAlgorithms();
  if (deterministic && rois.size(0) > INT_MAX) {
    at::globalContext().alertNotDeterministic("roi_align backward with more than 2^31 - 1 RoIs");
    deterministic = false;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_backward_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    if (deterministic) {
      // Every element is written once, in the final dtype: no staging buffer.
      for (size_t l = 0; l < sizes.size(); ++l) {
        at::Tensor g = at::empty(sizes[l], grad.options().memory_format(format));
        gather_map_gradient<scalar_t>(grad, rois, levels, static_cast<int>(l), scales[l], s, g, stream);
        out.push_back(g);
      }
      return;
    }
    // Half types accumulate in float32 buffers, converted once at the end.
    std::vector<RoiMap> maps;
    for (size_t l = 0; l < sizes.size(); ++l) {
      out.push_back(
          zeros_in(sizes[l], grad.options().dtype(c10::CppTypeToScalarType<T>::value), format));
      maps.push_back(roi_map_of(out.back(), scales[l]));
    }
    const int64_t total = grad.numel();
    const RoiStrides gs = roi_strides_of(grad);
    for (size_t first = 0; first < maps.size(); first += kMaxLevels) {
      const RoiMapTable table = roi_map_table(maps, first);
      const auto launch = [&](auto kernel) {
        kernel<<<grid_size(total), kThreads, 0, stream>>>(table, grad.const_data_ptr<scalar_t>(), gs,
                                                          rois.const_data_ptr<T>(), levels, s, total);
        PYDET_CUDA_CHECK_LAUNCH();
      };
      if (format == at::MemoryFormat::ChannelsLast) {
        launch(roi_align_backward_atomic_kernel<scalar_t, true>);
      } else {
        launch(roi_align_backward_atomic_kernel<scalar_t, false>);
      }
    }
    if (!std::is_same<T, scalar_t>::value) {
      for (auto& g : out) g = g.to(grad.scalar_type());
    }
  });
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace pydet_ops
