// CPU kernels of nms and batched_nms: validation, ordering, grouping by class, threading over classes.
// The greedy suppression itself is nms_greedy.h, compiled per ISA.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <tuple>
#include <vector>

#include "common/box_math.h"
#include "cpu/sort_keys.h"
#include "ops/nms_checks.h"
#include "ops/cpu/nms_kernel.h"

namespace pydet_ops {
namespace cpu {
namespace {

// Greedy NMS over `segments` (consecutive runs of `order`, each one category, each already in descending
// score order). Returns a keep flag per original box index.
template <typename T>
std::vector<uint8_t> keep_flags(const at::Tensor& boxes, const std::vector<int32_t>& order,
                                const std::vector<int64_t>& segment_starts, double iou_threshold) {
  const int64_t n = static_cast<int64_t>(order.size());
  const at::Tensor b = boxes.to(c10::CppTypeToScalarType<T>::value).contiguous();
  const T* src = b.const_data_ptr<T>();
  // Boxes in processing order, structure of arrays.
  std::vector<T> soa(static_cast<size_t>(5 * n));
  T* x1 = soa.data();
  T* y1 = x1 + n;
  T* x2 = y1 + n;
  T* y2 = x2 + n;
  T* area = y2 + n;
  for (int64_t k = 0; k < n; ++k) {
    const T* box = src + 4 * static_cast<int64_t>(order[k]);
    x1[k] = box[0];
    y1[k] = box[1];
    x2[k] = box[2];
    y2[k] = box[3];
    area[k] = box_math::box_area(x1[k], y1[k], x2[k], y2[k]);
  }
  std::vector<uint8_t> keep_sorted(static_cast<size_t>(n));
  const auto greedy = PYDET_SELECT_ISA(GreedyNmsFn<T>, greedy_nms);
  const int64_t num_segments = static_cast<int64_t>(segment_starts.size()) - 1;
  at::parallel_for(0, num_segments, 1, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      const int64_t lo = segment_starts[s], hi = segment_starts[s + 1];
      const SortedBoxes<T> run{x1 + lo, y1 + lo, x2 + lo, y2 + lo, area + lo, hi - lo};
      greedy(run, iou_threshold, keep_sorted.data() + lo);
    }
  });
  std::vector<uint8_t> keep(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) keep[order[k]] = keep_sorted[k];
  return keep;
}

// Indices 0..n-1 by descending score, ties by ascending index, NaN first (torch.sort's descending order).
template <typename T>
std::vector<int32_t> score_order(const at::Tensor& scores) {
  const int64_t n = scores.size(0);
  const at::Tensor s = scores.to(c10::CppTypeToScalarType<T>::value).contiguous();
  const T* data = s.const_data_ptr<T>();
  std::vector<uint64_t> keys(static_cast<size_t>(n));
  std::vector<int32_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    keys[i] = descending_score_key(data[i]);
    order[i] = static_cast<int32_t>(i);
  }
  stable_sort_by_key(order, keys);
  return order;
}

at::Tensor indices_of_kept(const std::vector<int32_t>& by_score, const std::vector<uint8_t>& keep) {
  int64_t count = 0;
  for (uint8_t k : keep) count += k;
  at::Tensor out = at::empty({count}, at::TensorOptions().dtype(at::kLong));
  int64_t* dst = out.mutable_data_ptr<int64_t>();
  for (int32_t i : by_score) {
    if (keep[i]) *dst++ = i;
  }
  return out;
}

template <typename T>
at::Tensor nms_impl(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor* idxs, double iou_threshold) {
  const int64_t n = boxes.size(0);
  const std::vector<int32_t> by_score = score_order<T>(scores);
  if (idxs == nullptr) {
    return indices_of_kept(by_score, keep_flags<T>(boxes, by_score, {0, n}, iou_threshold));
  }
  // Regroup by category, keeping descending score order inside each category.
  const at::Tensor ids = idxs->to(at::kLong).contiguous();
  const int64_t* id = ids.const_data_ptr<int64_t>();
  std::vector<uint64_t> keys(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) keys[i] = class_key(id[i]);
  std::vector<int32_t> by_class = by_score;
  stable_sort_by_key(by_class, keys);
  std::vector<int64_t> starts;
  for (int64_t k = 0; k < n; ++k) {
    if (k == 0 || keys[by_class[k]] != keys[by_class[k - 1]]) starts.push_back(k);
  }
  starts.push_back(n);
  // Kept boxes come out by descending score across categories because `by_score` is the global order.
  return indices_of_kept(by_score, keep_flags<T>(boxes, by_class, starts, iou_threshold));
}

at::Tensor run_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor* idxs, double iou_threshold) {
  if (boxes.size(0) == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  if (boxes.scalar_type() == at::kDouble) {
    return nms_impl<double>(boxes, scores, idxs, iou_threshold);
  }
  return nms_impl<float>(boxes, scores, idxs, iou_threshold);
}

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  check_nms_inputs(boxes, scores, "nms");
  TORCH_CHECK(boxes.device().is_cpu(), "nms: expected CPU tensors, got ", boxes.device());
  return run_nms(boxes, scores, nullptr, iou_threshold);
}

at::Tensor batched_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                           double iou_threshold) {
  check_nms_inputs(boxes, scores, "batched_nms");
  check_nms_categories(boxes, idxs, "batched_nms");
  TORCH_CHECK(boxes.device().is_cpu(), "batched_nms: expected CPU tensors, got ", boxes.device());
  return run_nms(boxes, scores, &idxs, iou_threshold);
}

// The first `max_output` kept indices padded with -1 to exactly max_output, and their count (a 0-d tensor).
std::tuple<at::Tensor, at::Tensor> pad_kept(const at::Tensor& kept, int64_t max_output) {
  const int64_t count = std::min<int64_t>(kept.size(0), max_output);
  at::Tensor keep = at::full({max_output}, -1, kept.options());
  keep.narrow(0, 0, count).copy_(kept.narrow(0, 0, count));
  return {keep, at::scalar_tensor(count, kept.options())};
}

std::tuple<at::Tensor, at::Tensor> nms_fixed_cpu(const at::Tensor& boxes, const at::Tensor& scores,
                                                 double iou_threshold, int64_t max_output) {
  check_nms_inputs(boxes, scores, "nms_fixed");
  check_max_output(max_output, "nms_fixed");
  TORCH_CHECK(boxes.device().is_cpu(), "nms_fixed: expected CPU tensors, got ", boxes.device());
  return pad_kept(run_nms(boxes, scores, nullptr, iou_threshold), max_output);
}

std::tuple<at::Tensor, at::Tensor> batched_nms_fixed_cpu(const at::Tensor& boxes, const at::Tensor& scores,
                                                         const at::Tensor& idxs, double iou_threshold,
                                                         int64_t max_output) {
  check_nms_inputs(boxes, scores, "batched_nms_fixed");
  check_nms_categories(boxes, idxs, "batched_nms_fixed");
  check_max_output(max_output, "batched_nms_fixed");
  TORCH_CHECK(boxes.device().is_cpu(), "batched_nms_fixed: expected CPU tensors, got ", boxes.device());
  return pad_kept(run_nms(boxes, scores, &idxs, iou_threshold), max_output);
}

}  // namespace

TORCH_LIBRARY_IMPL(pydet_ops, CPU, m) {
  m.impl("nms", TORCH_FN(nms_cpu));
  m.impl("batched_nms", TORCH_FN(batched_nms_cpu));
  m.impl("nms_fixed", TORCH_FN(nms_fixed_cpu));
  m.impl("batched_nms_fixed", TORCH_FN(batched_nms_fixed_cpu));
}

}  // namespace cpu
}  // namespace pydet_ops
