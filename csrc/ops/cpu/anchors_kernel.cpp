// CPU kernel of grid_anchors: every anchor of every level written once, straight into the output.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "cpu/memory.h"

namespace pydet_ops {
namespace cpu {
namespace {

constexpr const char* kOp = "grid_anchors";

struct Level {
  int64_t height, width, stride_y, stride_x;
  int64_t first_cell;  // row of cell_anchors where this level's anchors start
  int64_t cells;       // anchors per location
  int64_t first_row;   // first output anchor of this level
};

std::vector<Level> plan_levels(const at::Tensor& cell_anchors, at::IntArrayRef anchors_per_level,
                               at::IntArrayRef grid_sizes, at::IntArrayRef strides, int64_t* total) {
  const int64_t levels = static_cast<int64_t>(anchors_per_level.size());
  TORCH_CHECK(static_cast<int64_t>(grid_sizes.size()) == 2 * levels, kOp,
              ": grid_sizes must hold (height, width) for each of the ", levels,
              " levels of anchors_per_level, got ", grid_sizes.size(), " values");
  TORCH_CHECK(static_cast<int64_t>(strides.size()) == 2 * levels, kOp,
              ": strides must hold (stride_y, stride_x) for each of the ", levels,
              " levels of anchors_per_level, got ", strides.size(), " values");
  std::vector<Level> plan(levels);
  int64_t cell = 0;
  int64_t row = 0;
  for (int64_t l = 0; l < levels; ++l) {
    Level& lv = plan[l];
    lv.cells = anchors_per_level[l];
    lv.height = grid_sizes[2 * l];
    lv.width = grid_sizes[2 * l + 1];
    lv.stride_y = strides[2 * l];
    lv.stride_x = strides[2 * l + 1];
    TORCH_CHECK(lv.cells >= 0, kOp, ": anchors_per_level must be non-negative, got ", lv.cells, " at level ", l);
    TORCH_CHECK(lv.height >= 0 && lv.width >= 0, kOp, ": grid_sizes must be non-negative, got (", lv.height, ", ",
                lv.width, ") at level ", l);
    TORCH_CHECK(lv.stride_y >= 0 && lv.stride_x >= 0, kOp, ": strides must be non-negative, got (", lv.stride_y,
                ", ", lv.stride_x, ") at level ", l);
    constexpr int64_t kLimit = int64_t(1) << 40;  // far beyond any memory, far below overflow
    TORCH_CHECK(lv.height < kLimit && lv.width < kLimit && lv.stride_y < kLimit && lv.stride_x < kLimit &&
                    lv.height * lv.width < kLimit / std::max<int64_t>(1, lv.cells),
                kOp, ": level ", l, " is too large (", lv.height, " x ", lv.width, " locations, ", lv.cells,
                " anchors each)");
    lv.first_cell = cell;
    lv.first_row = row;
    cell += lv.cells;
    row += lv.height * lv.width * lv.cells;
    TORCH_CHECK(row < kLimit, kOp, ": too many anchors (more than 2^40)");
  }
  TORCH_CHECK(cell == cell_anchors.size(0), kOp, ": anchors_per_level sums to ", cell, " but cell_anchors has ",
              cell_anchors.size(0), " rows");
  *total = row;
  return plan;
}

template <typename T>
void fill_anchors(const std::vector<Level>& plan, const T* cells, double offset, T* out) {
  using Acc = at::opmath_type<T>;
  // Work items are grid rows of all levels, numbered level after level.
  std::vector<int64_t> row_start(plan.size() + 1, 0);
  for (size_t l = 0; l < plan.size(); ++l) row_start[l + 1] = row_start[l] + plan[l].height;
  const int64_t rows = row_start.back();
  int64_t anchors_per_row = 1;
  for (const Level& lv : plan) anchors_per_row = std::max(anchors_per_row, lv.width * lv.cells);
  const bool shifted = offset != 0.0;
  const Acc off = static_cast<Acc>(offset);
  // A shift is the integer position converted to the anchors' dtype, then (optionally) offset.
  auto shift_of = [&](int64_t v) {
    const Acc s = static_cast<Acc>(static_cast<T>(v));
    return shifted ? static_cast<Acc>(static_cast<T>(s + off)) : s;
  };
  const int64_t grain = std::max<int64_t>(1, 8192 / anchors_per_row);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    size_t l = 0;
    std::vector<Acc> cell;
    for (int64_t r = begin; r < end; ++r) {
      bool new_level = cell.empty();
      while (r >= row_start[l + 1]) {
        ++l;
        new_level = true;
      }
      const Level& lv = plan[l];
      if (new_level) {
        cell.resize(static_cast<size_t>(4 * lv.cells));
        for (int64_t k = 0; k < 4 * lv.cells; ++k) cell[k] = static_cast<Acc>(cells[4 * lv.first_cell + k]);
      }
      const int64_t y = r - row_start[l];
      const Acc sy = shift_of(y * lv.stride_y);
      T* dst = out + 4 * (lv.first_row + y * lv.width * lv.cells);
      for (int64_t x = 0; x < lv.width; ++x) {
        const Acc sx = shift_of(x * lv.stride_x);
        for (int64_t a = 0; a < lv.cells; ++a) {
          const Acc* c = cell.data() + 4 * a;
          dst[0] = static_cast<T>(sx + c[0]);
          dst[1] = static_cast<T>(sy + c[1]);
          dst[2] = static_cast<T>(sx + c[2]);
          dst[3] = static_cast<T>(sy + c[3]);
          dst += 4;
        }
      }
    }
  });
}

at::Tensor grid_anchors_cpu(const at::Tensor& cell_anchors, at::IntArrayRef anchors_per_level,
                            at::IntArrayRef grid_sizes, at::IntArrayRef strides, double offset) {
  TORCH_CHECK(cell_anchors.defined() && cell_anchors.dim() == 2 && cell_anchors.size(1) == 4, kOp,
              ": cell_anchors must be a tensor of shape [A, 4], got shape ",
              cell_anchors.defined() ? cell_anchors.sizes() : at::IntArrayRef{});
  TORCH_CHECK(at::isFloatingType(cell_anchors.scalar_type()), kOp,
              ": cell_anchors must be a floating-point tensor, got ", cell_anchors.scalar_type());
  TORCH_CHECK(cell_anchors.device().is_cpu(), kOp, ": expected a CPU tensor, got ", cell_anchors.device());
  TORCH_CHECK(std::isfinite(offset), kOp, ": offset must be finite, got ", offset);
  int64_t total = 0;
  const std::vector<Level> plan = plan_levels(cell_anchors, anchors_per_level, grid_sizes, strides, &total);
  at::Tensor out = empty_large({total, 4}, cell_anchors.options());
  if (total == 0) return out;
  const at::Tensor cells = cell_anchors.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cells.scalar_type(), "grid_anchors_cpu", [&] {
    fill_anchors<scalar_t>(plan, cells.const_data_ptr<scalar_t>(), offset, out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pydet_ops, CPU, m) {
  m.impl("grid_anchors", TORCH_FN(grid_anchors_cpu));
}

}  // namespace cpu
}  // namespace pydet_ops
