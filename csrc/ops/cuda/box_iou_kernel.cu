// CUDA kernels of the pairwise overlap ops (IoU, GIoU, DIoU, CIoU): one fused pass, one thread per output
// value, the per-pair math of common/box_math.h (the CPU kernels' math, operation for operation).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

#include "common/box_math.h"
#include "cuda/launch.h"
#include "ops/box_iou_plan.h"

namespace pydet_ops {
namespace cuda {
namespace {

using box_math::IouKind;

// Boxes of one set in the compute dtype, with the terms every pair needs.
template <typename T>
struct Box {
  T x1, y1, x2, y2, area, cx, cy, atan_ratio;
};

template <IouKind kKind, typename T>
__device__ __forceinline__ Box<T> load_box(const T* p) {
  Box<T> b;
  b.x1 = p[0];
  b.y1 = p[1];
  b.x2 = p[2];
  b.y2 = p[3];
  b.area = box_math::box_area(b.x1, b.y1, b.x2, b.y2);
  b.cx = b.cy = b.atan_ratio = T(0);
  if (kKind == IouKind::kDIoU || kKind == IouKind::kCIoU) {
    b.cx = (b.x1 + b.x2) / T(2);
    b.cy = (b.y1 + b.y2) / T(2);
  }
  if (kKind == IouKind::kCIoU) {
    b.atan_ratio = ::atan((b.x2 - b.x1) / (b.y2 - b.y1));
  }
  return b;
}

// Block (x: column tile, y: row tile). Each block stages kTileRows row boxes in shared memory and every
// thread walks one column across them, so column boxes are read once per tile and the writes coalesce.
constexpr int kTileRows = 16;

template <IouKind kKind, typename T>
__global__ void pairwise_overlap_kernel(const T* __restrict__ a, const T* __restrict__ b, int64_t batches, int64_t n,
                                        int64_t m, T eps, T* __restrict__ out) {
  __shared__ Box<T> rows[kTileRows];
  const int64_t row_tiles = (n + kTileRows - 1) / kTileRows;
  const T four_over_pi_sq = static_cast<T>(0.40528473456935108577551785283891);  // as the CPU kernels
  for (int64_t tile = blockIdx.y; tile < batches * row_tiles; tile += gridDim.y) {
    const int64_t batch = tile / row_tiles;
    const int64_t row0 = (tile - batch * row_tiles) * kTileRows;
    const int rows_here = static_cast<int>(n - row0 < kTileRows ? n - row0 : kTileRows);
    __syncthreads();
    if (threadIdx.x < rows_here) {
      rows[threadIdx.x] = load_box<kKind>(a + (batch * n + row0 + threadIdx.x) * 4);
    }
    __syncthreads();
    for (int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; col < m;
         col += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const Box<T> c = load_box<kKind>(b + (batch * m + col) * 4);
      T* dst = out + (batch * n + row0) * m + col;
      for (int r = 0; r < rows_here; ++r) {
        const Box<T>& q = rows[r];
        dst[r * m] = box_math::pairwise_overlap<kKind, T>(q.x1, q.y1, q.x2, q.y2, q.area, q.cx, q.cy, q.atan_ratio,
                                                         c.x1, c.y1, c.x2, c.y2, c.area, c.cx, c.cy,
                                                         c.atan_ratio, eps, four_over_pi_sq);
      }
    }
  }
}

template <IouKind kKind>
at::Tensor pairwise_overlap_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2, double eps, const char* op) {
  // A CPU + CUDA mix reaches this kernel whichever argument is on the CPU: report it as a device mismatch
  // naming both arguments before insisting on CUDA (plan_pairwise repeats these checks).
  check_boxes(boxes1, op, "boxes1", 2, false);
  check_boxes(boxes2, op, "boxes2", 2, false);
  check_same_device(boxes1, "boxes1", boxes2, "boxes2", op);
  TORCH_CHECK(boxes1.is_cuda(), op, ": expected CUDA tensors, got ", boxes1.device());
  c10::cuda::CUDAGuard guard(boxes1.device());
  PairwisePlan plan = plan_pairwise(boxes1, boxes2, op);
  at::Tensor out = at::empty(plan.out_shape, boxes1.options().dtype(plan.compute));
  if (out.numel() == 0) {
    return out;
  }
  const int threads = plan.m >= kThreads ? kThreads : (plan.m >= 128 ? 128 : 64);
  const int64_t col_blocks = ceil_div(plan.m, threads);
  const int64_t row_tiles = plan.batches * ceil_div(plan.n, kTileRows);
  const dim3 grid(static_cast<unsigned int>(std::min<int64_t>(col_blocks, 1 << 16)),
                  static_cast<unsigned int>(std::min<int64_t>(row_tiles, 65535)));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(plan.compute, "pairwise_overlap_cuda", [&] {
    pairwise_overlap_kernel<kKind, scalar_t><<<grid, threads, 0, stream>>>(
        plan.a.const_data_ptr<scalar_t>(), plan.b.const_data_ptr<scalar_t>(), plan.batches, plan.n, plan.m,
        static_cast<scalar_t>(eps), out.mutable_data_ptr<scalar_t>());
    PYDET_CUDA_CHECK_LAUNCH();
  });
  return out;
}

at::Tensor box_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  return pairwise_overlap_cuda<IouKind::kIoU>(boxes1, boxes2, 0.0, "box_iou");
}

at::Tensor generalized_box_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  return pairwise_overlap_cuda<IouKind::kGIoU>(boxes1, boxes2, 0.0, "generalized_box_iou");
}

at::Tensor distance_box_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2, double eps) {
  return pairwise_overlap_cuda<IouKind::kDIoU>(boxes1, boxes2, eps, "distance_box_iou");
}

at::Tensor complete_box_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2, double eps) {
  return pairwise_overlap_cuda<IouKind::kCIoU>(boxes1, boxes2, eps, "complete_box_iou");
}

}  // namespace

TORCH_LIBRARY_IMPL(pydet_ops, CUDA, m) {
  m.impl("box_iou", TORCH_FN(box_iou_cuda));
  m.impl("generalized_box_iou", TORCH_FN(generalized_box_iou_cuda));
  m.impl("distance_box_iou", TORCH_FN(distance_box_iou_cuda));
  m.impl("complete_box_iou", TORCH_FN(complete_box_iou_cuda));
}

}  // namespace cuda
}  // namespace pydet_ops
