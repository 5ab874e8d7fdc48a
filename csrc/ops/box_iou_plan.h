// Argument checks and broadcasting of the pairwise overlap ops, shared by every backend: the kernels see
// `batches` pairs of contiguous [n, 4] / [m, 4] box sets in the compute dtype and fill [batches, n, m].
#pragma once

#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>

#include <vector>

#include "ops/checks.h"

namespace pydet_ops {

struct PairwisePlan {
  at::ScalarType compute;
  int64_t batches, n, m;
  std::vector<int64_t> out_shape;  // broadcast leading dimensions, then [n, m]
  at::Tensor a, b;                 // [batches, n, 4] and [batches, m, 4], contiguous, compute dtype
};

inline PairwisePlan plan_pairwise(const at::Tensor& boxes1, const at::Tensor& boxes2, const char* op) {
  check_boxes(boxes1, op, "boxes1", 2, false);
  check_boxes(boxes2, op, "boxes2", 2, false);
  check_same_device(boxes1, "boxes1", boxes2, "boxes2", op);
  PairwisePlan p;
  p.compute = compute_type_of(at::promote_types(boxes1.scalar_type(), boxes2.scalar_type()));
  p.n = boxes1.size(-2);
  p.m = boxes2.size(-2);
  const auto lead1 = boxes1.sizes().slice(0, boxes1.dim() - 2);
  const auto lead2 = boxes2.sizes().slice(0, boxes2.dim() - 2);
  std::vector<int64_t> batch_shape;
  try {
    batch_shape = at::infer_size(lead1, lead2);
  } catch (const c10::Error&) {
    TORCH_CHECK(false, op, ": the leading dimensions of boxes1 ", boxes1.sizes(), " and boxes2 ", boxes2.sizes(),
                " do not broadcast");
  }
  p.batches = 1;
  for (int64_t s : batch_shape) p.batches *= s;
  p.out_shape = batch_shape;
  p.out_shape.push_back(p.n);
  p.out_shape.push_back(p.m);
  if (p.batches * p.n == 0 || p.m == 0) {
    return p;  // empty result: a and b stay undefined
  }
  auto flatten = [&](const at::Tensor& boxes, int64_t count) {
    std::vector<int64_t> shape(batch_shape);
    shape.push_back(count);
    shape.push_back(4);
    return boxes.expand(shape).reshape({p.batches, count, 4}).to(p.compute).contiguous();
  };
  p.a = flatten(boxes1, p.n);
  p.b = flatten(boxes2, p.m);
  return p;
}

}  // namespace pydet_ops
