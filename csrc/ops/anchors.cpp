// Schema and C++ entry point of the anchor op.
#include "ops/anchors.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace pydet_ops {

at::Tensor grid_anchors(const at::Tensor& cell_anchors, at::IntArrayRef anchors_per_level, at::IntArrayRef grid_sizes,
                        at::IntArrayRef strides, double offset) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pydet_ops::grid_anchors", "")
                       .typed<at::Tensor(const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, double)>();
  return op.call(cell_anchors, anchors_per_level, grid_sizes, strides, offset);
}

TORCH_LIBRARY_FRAGMENT(pydet_ops, m) {
  m.def("grid_anchors(Tensor cell_anchors, int[] anchors_per_level, int[] grid_sizes, int[] strides, "
        "float offset=0.) -> Tensor");
}

}  // namespace pydet_ops
