// CPU kernels of the pairwise overlap ops: validation, broadcasting, threading. The per-pair math is
// common/box_math.h; the vectorised row loop is box_iou_rows.h, compiled per ISA.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "cpu/memory.h"
#include "ops/box_iou_plan.h"
#include "ops/cpu/box_iou_kernel.h"

namespace pydet_ops {
namespace cpu {
namespace {

using box_math::IouKind;

// Structure-of-arrays copy of `batches` sets of `n` boxes (an [B, n, 4] contiguous tensor) together with the
// per-box terms the overlap measure needs, each computed once per box.
template <typename T>
class ColumnStore {
 public:
  ColumnStore(const at::Tensor& boxes, int64_t batches, int64_t n, IouKind kind)
      : n_(n), total_(batches * n), centred_(kind == IouKind::kDIoU || kind == IouKind::kCIoU),
        ciou_(kind == IouKind::kCIoU) {
    data_.resize(static_cast<size_t>((ciou_ ? 8 : centred_ ? 7 : 5) * total_));
    const T* src = boxes.const_data_ptr<T>();
    T* x1 = field(0);
    T* y1 = field(1);
    T* x2 = field(2);
    T* y2 = field(3);
    T* area = field(4);
    for (int64_t k = 0; k < total_; ++k) {
      x1[k] = src[4 * k + 0];
      y1[k] = src[4 * k + 1];
      x2[k] = src[4 * k + 2];
      y2[k] = src[4 * k + 3];
      area[k] = box_math::box_area(x1[k], y1[k], x2[k], y2[k]);
    }
    if (centred_) {
      T* cx = field(5);
      T* cy = field(6);
      for (int64_t k = 0; k < total_; ++k) {
        cx[k] = (x1[k] + x2[k]) / T(2);
        cy[k] = (y1[k] + y2[k]) / T(2);
      }
    }
    if (ciou_) {
      T* atan_ratio = field(7);
      for (int64_t k = 0; k < total_; ++k) {
        atan_ratio[k] = std::atan((x2[k] - x1[k]) / (y2[k] - y1[k]));
      }
    }
  }

  // The boxes of batch `b`.
  BoxColumns<T> columns(int64_t b) const {
    const int64_t offset = b * n_;
    BoxColumns<T> c{};
    c.x1 = field(0) + offset;
    c.y1 = field(1) + offset;
    c.x2 = field(2) + offset;
    c.y2 = field(3) + offset;
    c.area = field(4) + offset;
    c.cx = centred_ ? field(5) + offset : nullptr;
    c.cy = centred_ ? field(6) + offset : nullptr;
    c.atan_ratio = ciou_ ? field(7) + offset : nullptr;
    return c;
  }

 private:
  T* field(int64_t f) { return data_.data() + f * total_; }
  const T* field(int64_t f) const { return data_.data() + f * total_; }

  int64_t n_;
  int64_t total_;
  bool centred_;
  bool ciou_;
  std::vector<T> data_;
};

at::Tensor pairwise_overlap_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2, IouKind kind, double eps,
                                const char* op) {
  PairwisePlan plan = plan_pairwise(boxes1, boxes2, op);
  TORCH_CHECK(boxes1.device().is_cpu(), op, ": expected CPU tensors, got ", boxes1.device());
  at::Tensor out = empty_large(plan.out_shape, boxes1.options().dtype(plan.compute));
  if (out.numel() == 0) {
    return out;
  }
  const int64_t batches = plan.batches, n = plan.n, m = plan.m;
  const at::Tensor& a = plan.a;
  const at::Tensor& b = plan.b;

  AT_DISPATCH_FLOATING_TYPES(plan.compute, "pairwise_overlap_cpu", [&] {
    using T = scalar_t;
    const ColumnStore<T> rows(a, batches, n, kind);
    const ColumnStore<T> cols(b, batches, m, kind);
    const auto overlap_rows_fn = PYDET_SELECT_ISA(OverlapRowsFn<T>, overlap_rows);
    T* out_data = out.mutable_data_ptr<T>();
    const T eps_t = static_cast<T>(eps);
    // Enough pairs per task that scheduling is noise next to the arithmetic.
    const int64_t grain = std::max<int64_t>(1, 16384 / m);
    at::parallel_for(0, batches * n, grain, [&](int64_t begin, int64_t end) {
      while (begin < end) {
        const int64_t batch = begin / n;
        const int64_t row = begin - batch * n;
        const int64_t row_end = std::min<int64_t>(n, row + (end - begin));
        overlap_rows_fn(kind, rows.columns(batch), row, row_end, cols.columns(batch), m, eps_t,
                        out_data + (batch * n + row) * m);
        begin += row_end - row;
      }
    });
  });
  return out;
}

at::Tensor box_iou_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  return pairwise_overlap_cpu(boxes1, boxes2, IouKind::kIoU, 0.0, "box_iou");
}

at::Tensor generalized_box_iou_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  return pairwise_overlap_cpu(boxes1, boxes2, IouKind::kGIoU, 0.0, "generalized_box_iou");
}

at::Tensor distance_box_iou_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2, double eps) {
  return pairwise_overlap_cpu(boxes1, boxes2, IouKind::kDIoU, eps, "distance_box_iou");
}

at::Tensor complete_box_iou_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2, double eps) {
  return pairwise_overlap_cpu(boxes1, boxes2, IouKind::kCIoU, eps, "complete_box_iou");
}

}  // namespace

TORCH_LIBRARY_IMPL(pydet_ops, CPU, m) {
  m.impl("box_iou", TORCH_FN(box_iou_cpu));
  m.impl("generalized_box_iou", TORCH_FN(generalized_box_iou_cpu));
  m.impl("distance_box_iou", TORCH_FN(distance_box_iou_cpu));
  m.impl("complete_box_iou", TORCH_FN(complete_box_iou_cpu));
}

}  // namespace cpu
}  // namespace pydet_ops
