// encode_boxes for inputs of two dtypes, shared by every backend. torchvision computes each box set's width
// and centre in that set's own dtype and the rest in the promoted dtype, with the weights taken in the
// reference boxes' dtype; a rare case, computed here with the same tensor operations so the results are
// identical. The weights stay host 0-dim tensors, which device ops take as scalars (no copy, no sync).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <vector>

namespace pydet_ops {

inline at::Tensor encode_mixed_dtypes(const at::Tensor& reference_boxes, const at::Tensor& proposals,
                                      at::ArrayRef<double> weights) {
  auto frame = [](const at::Tensor& b) {
    const at::Tensor w = b.select(1, 2) - b.select(1, 0);
    const at::Tensor h = b.select(1, 3) - b.select(1, 1);
    return std::array<at::Tensor, 4>{w, h, b.select(1, 0) + 0.5 * w, b.select(1, 1) + 0.5 * h};
  };
  const auto g = frame(reference_boxes);
  const auto p = frame(proposals);
  const at::Tensor wt = at::tensor(std::vector<double>(weights.begin(), weights.end()),
                                   at::TensorOptions().dtype(at::kDouble).device(at::kCPU))
                            .to(reference_boxes.scalar_type());
  const at::Tensor dx = wt[0] * (g[2] - p[2]) / p[0];
  const at::Tensor dy = wt[1] * (g[3] - p[3]) / p[1];
  const at::Tensor dw = wt[2] * at::log(g[0] / p[0]);
  const at::Tensor dh = wt[3] * at::log(g[1] / p[1]);
  return at::stack({dx, dy, dw, dh}, 1);
}

}  // namespace pydet_ops
