// CPU kernel of grid_anchors: every anchor of every level written once, straight into the output.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "cpu/memory.h"
#include "ops/anchors_checks.h"

namespace pydet_ops {
namespace cpu {
namespace {

constexpr const char* kOp = "grid_anchors";

using Level = AnchorLevel;

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
  check_cell_anchors(cell_anchors, kOp);
  TORCH_CHECK(cell_anchors.device().is_cpu(), kOp, ": expected a CPU tensor, got ", cell_anchors.device());
  check_anchor_offset(offset, kOp);
  int64_t total = 0;
  const std::vector<Level> plan =
      plan_anchor_levels(cell_anchors, anchors_per_level, grid_sizes, strides, &total, kOp);
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
