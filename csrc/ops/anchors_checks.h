// Argument checks and the per-level plan of grid_anchors, shared by every backend.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace pydet_ops {

// One level of anchors as the kernels see it.
struct AnchorLevel {
  int64_t height, width, stride_y, stride_x;
  int64_t first_cell;  // row of cell_anchors where this level's anchors start
  int64_t cells;       // anchors per location
  int64_t first_row;   // first output anchor of this level
};

inline void check_cell_anchors(const at::Tensor& cell_anchors, const char* op) {
  TORCH_CHECK(cell_anchors.defined() && cell_anchors.dim() == 2 && cell_anchors.size(1) == 4, op,
              ": cell_anchors must be a tensor of shape [A, 4], got shape ",
              cell_anchors.defined() ? cell_anchors.sizes() : at::IntArrayRef{});
  TORCH_CHECK(at::isFloatingType(cell_anchors.scalar_type()), op,
              ": cell_anchors must be a floating-point tensor, got ", cell_anchors.scalar_type());
}

inline void check_anchor_offset(double offset, const char* op) {
  TORCH_CHECK(std::isfinite(offset), op, ": offset must be finite, got ", offset);
}

// Checks the per-level lists against each other and against cell_anchors; `*total` receives the number of
// output anchors (below 2^40).
inline std::vector<AnchorLevel> plan_anchor_levels(const at::Tensor& cell_anchors, at::IntArrayRef anchors_per_level,
                                                   at::IntArrayRef grid_sizes, at::IntArrayRef strides, int64_t* total,
                                                   const char* op) {
  const int64_t levels = static_cast<int64_t>(anchors_per_level.size());
  TORCH_CHECK(static_cast<int64_t>(grid_sizes.size()) == 2 * levels, op,
              ": grid_sizes must hold (height, width) for each of the ", levels,
              " levels of anchors_per_level, got ", grid_sizes.size(), " values");
  TORCH_CHECK(static_cast<int64_t>(strides.size()) == 2 * levels, op,
              ": strides must hold (stride_y, stride_x) for each of the ", levels,
              " levels of anchors_per_level, got ", strides.size(), " values");
  std::vector<AnchorLevel> plan(levels);
  int64_t cell = 0;
  int64_t row = 0;
  for (int64_t l = 0; l < levels; ++l) {
    AnchorLevel& lv = plan[l];
    lv.cells = anchors_per_level[l];
    lv.height = grid_sizes[2 * l];
    lv.width = grid_sizes[2 * l + 1];
    lv.stride_y = strides[2 * l];
    lv.stride_x = strides[2 * l + 1];
    TORCH_CHECK(lv.cells >= 0, op, ": anchors_per_level must be non-negative, got ", lv.cells, " at level ", l);
    TORCH_CHECK(lv.height >= 0 && lv.width >= 0, op, ": grid_sizes must be non-negative, got (", lv.height, ", ",
                lv.width, ") at level ", l);
    TORCH_CHECK(lv.stride_y >= 0 && lv.stride_x >= 0, op, ": strides must be non-negative, got (", lv.stride_y,
                ", ", lv.stride_x, ") at level ", l);
    constexpr int64_t kLimit = int64_t(1) << 40;  // far beyond any memory, far below overflow
    TORCH_CHECK(lv.height < kLimit && lv.width < kLimit && lv.stride_y < kLimit && lv.stride_x < kLimit &&
                    // height * width could overflow: compare by division.
                    (lv.width == 0 || lv.height <= (kLimit / std::max<int64_t>(1, lv.cells) - 1) / lv.width),
                op, ": level ", l, " is too large (", lv.height, " x ", lv.width, " locations, ", lv.cells,
                " anchors each)");
    lv.first_cell = cell;
    lv.first_row = row;
    cell += lv.cells;
    row += lv.height * lv.width * lv.cells;
    TORCH_CHECK(row < kLimit, op, ": too many anchors (more than 2^40)");
  }
  TORCH_CHECK(cell == cell_anchors.size(0), op, ": anchors_per_level sums to ", cell, " but cell_anchors has ",
              cell_anchors.size(0), " rows");
  *total = row;
  return plan;
}

}  // namespace pydet_ops
