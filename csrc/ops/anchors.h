// Anchor boxes over the feature maps of a pyramid.
#pragma once

#include <ATen/ATen.h>

namespace pydet_ops {

// All anchors of all levels of one image, level-major, then row-major over the grid, then cell anchor:
//   anchor[level][y][x][a] = (shift + offset) + cell_anchors[level's a-th row],  shift = (x * sx, y * sy, x * sx, y * sy)
// cell_anchors: [A, 4], the anchors of one location, levels concatenated (anchors_per_level[l] rows each).
// grid_sizes: (height, width) per level, flattened; strides: (stride_y, stride_x) per level, flattened.
// The result has cell_anchors' dtype and device: [sum_l H_l * W_l * A_l, 4].
at::Tensor grid_anchors(const at::Tensor& cell_anchors, at::IntArrayRef anchors_per_level, at::IntArrayRef grid_sizes,
                        at::IntArrayRef strides, double offset = 0.0);

}  // namespace pydet_ops
