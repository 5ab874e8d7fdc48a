// CUDA kernel of grid_anchors: one thread per output anchor, every level in one launch (up to kMaxLevels
// levels per launch), the CPU kernel's arithmetic in the CPU kernel's order and dtypes.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "cuda/box_coder_quad.h"
#include "cuda/launch.h"
#include "ops/anchors_checks.h"

namespace pydet_ops {
namespace cuda {
namespace {

constexpr const char* kOp = "grid_anchors";

// Levels travel as a kernel argument (a few hundred bytes), so no host-to-device copy is needed.
constexpr int kMaxLevels = 16;

struct LevelArgs {
  int64_t first;  // first anchor of the level, counted from the launch's first anchor
  int64_t count;  // anchors of the level (> 0)
  int64_t width, cells, stride_y, stride_x;
  int64_t first_cell;  // row of cell_anchors where this level's anchors start
};

struct LevelTable {
  LevelArgs level[kMaxLevels];
  int levels;
};

// The CPU kernel's shift: the integer position converted to the anchors' dtype, then (optionally) offset
// and rounded to that dtype again.
template <typename T>
__device__ __forceinline__ at::opmath_type<T> shift_of(int64_t v, at::opmath_type<T> off, bool shifted) {
  using Acc = at::opmath_type<T>;
  const Acc s = static_cast<Acc>(static_cast<T>(v));
  return shifted ? static_cast<Acc>(static_cast<T>(s + off)) : s;
}

// __grid_constant__ lets threads index the table where it lies (the constant bank) instead of copying
// it to local memory.
template <typename T, bool kVec>
__global__ void grid_anchors_kernel(const __grid_constant__ LevelTable table, const T* __restrict__ cells,
                                    int64_t count, at::opmath_type<T> off, bool shifted, T* __restrict__ out) {
  using Acc = at::opmath_type<T>;
  PYDET_CUDA_KERNEL_LOOP(t, count) {
    int l = 0;
    for (int j = 1; j < table.levels; ++j) l = t >= table.level[j].first ? j : l;
    const LevelArgs& lv = table.level[l];
    const int64_t r = t - lv.first;  // anchor within the level: ((y * width) + x) * cells + a
    int64_t a, x, y;
    if (lv.count <= static_cast<int64_t>(std::numeric_limits<uint32_t>::max())) {
      // r, cells and width all fit 32 bits (cells and width are at most count): far cheaper divisions.
      const uint32_t r32 = static_cast<uint32_t>(r);
      const uint32_t c32 = static_cast<uint32_t>(lv.cells);
      const uint32_t w32 = static_cast<uint32_t>(lv.width);
      const uint32_t loc = r32 / c32;
      const uint32_t y32 = loc / w32;
      a = r32 - loc * c32;
      x = loc - y32 * w32;
      y = y32;
    } else {
      const int64_t loc = r / lv.cells;
      a = r - loc * lv.cells;
      y = loc / lv.width;
      x = loc - y * lv.width;
    }
    const Acc sx = shift_of<T>(x * lv.stride_x, off, shifted);
    const Acc sy = shift_of<T>(y * lv.stride_y, off, shifted);
    const T* c = cells + 4 * (lv.first_cell + a);
    T o[4];
    o[0] = static_cast<T>(sx + static_cast<Acc>(c[0]));
    o[1] = static_cast<T>(sy + static_cast<Acc>(c[1]));
    o[2] = static_cast<T>(sx + static_cast<Acc>(c[2]));
    o[3] = static_cast<T>(sy + static_cast<Acc>(c[3]));
    store_quad<T, kVec>(out + 4 * t, o);
  }
}

at::Tensor grid_anchors_cuda(const at::Tensor& cell_anchors, at::IntArrayRef anchors_per_level,
                             at::IntArrayRef grid_sizes, at::IntArrayRef strides, double offset) {
  check_cell_anchors(cell_anchors, kOp);
  TORCH_CHECK(cell_anchors.is_cuda(), kOp, ": expected a CUDA tensor, got ", cell_anchors.device());
  check_anchor_offset(offset, kOp);
  int64_t total = 0;
  const std::vector<AnchorLevel> plan =
      plan_anchor_levels(cell_anchors, anchors_per_level, grid_sizes, strides, &total, kOp);
  c10::cuda::CUDAGuard guard(cell_anchors.device());
  at::Tensor out = at::empty({total, 4}, cell_anchors.options());
  if (total == 0) return out;
  const at::Tensor cells = cell_anchors.contiguous();
  // Levels without anchors write nothing; the others lie back to back in the output.
  std::vector<AnchorLevel> busy;
  for (const AnchorLevel& lv : plan) {
    if (lv.height * lv.width * lv.cells > 0) busy.push_back(lv);
  }
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cells.scalar_type(), "grid_anchors_cuda", [&] {
    using Acc = at::opmath_type<scalar_t>;
    const Acc off = static_cast<Acc>(offset);
    const bool shifted = offset != 0.0;
    const scalar_t* c = cells.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    for (size_t first = 0; first < busy.size(); first += kMaxLevels) {
      const size_t last = std::min(busy.size(), first + static_cast<size_t>(kMaxLevels));
      const int64_t begin = busy[first].first_row;
      LevelTable table{};
      int64_t count = 0;
      for (size_t j = first; j < last; ++j) {
        const AnchorLevel& lv = busy[j];
        LevelArgs& d = table.level[j - first];
        d.first = lv.first_row - begin;
        d.count = lv.height * lv.width * lv.cells;
        d.width = lv.width;
        d.cells = lv.cells;
        d.stride_y = lv.stride_y;
        d.stride_x = lv.stride_x;
        d.first_cell = lv.first_cell;
        count += d.count;
      }
      table.levels = static_cast<int>(last - first);
      scalar_t* dst = o + 4 * begin;
      const unsigned int blocks = grid_size(count);
      if (quad_aligned<scalar_t>(dst)) {
        grid_anchors_kernel<scalar_t, true><<<blocks, kThreads, 0, stream>>>(table, c, count, off, shifted, dst);
      } else {
        grid_anchors_kernel<scalar_t, false><<<blocks, kThreads, 0, stream>>>(table, c, count, off, shifted, dst);
      }
      PYDET_CUDA_CHECK_LAUNCH();
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pydet_ops, CUDA, m) {
  m.impl("grid_anchors", TORCH_FN(grid_anchors_cuda));
}

}  // namespace cuda
}  // namespace pydet_ops
