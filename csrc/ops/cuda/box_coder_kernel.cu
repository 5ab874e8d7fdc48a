// CUDA kernels of encode_boxes and decode_boxes: one thread per output box, the per-box math of
// common/box_coding.h, so every value goes through the CPU kernels' operations in the CPU kernels' order.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "common/box_coding.h"
#include "cuda/box_coder_quad.h"
#include "cuda/launch.h"
#include "ops/box_coder_checks.h"
#include "ops/box_coder_mixed.h"

namespace pydet_ops {
namespace cuda {
namespace {

template <typename T>
using CoderWeightsOf = box_coding::CoderWeights<at::opmath_type<T>>;

template <typename T, bool kVec>
__global__ void encode_kernel(const T* __restrict__ reference, const T* __restrict__ proposals, int64_t n,
                              const CoderWeightsOf<T> wt, T* __restrict__ out) {
  using Acc = at::opmath_type<T>;
  PYDET_CUDA_KERNEL_LOOP(i, n) {
    T g[4], p[4], o[4];
    load_quad<T, kVec>(reference + 4 * i, g);
    load_quad<T, kVec>(proposals + 4 * i, p);
    const auto gf = box_coding::box_frame<T, Acc>(static_cast<Acc>(g[0]), static_cast<Acc>(g[1]),
                                                  static_cast<Acc>(g[2]), static_cast<Acc>(g[3]));
    const auto pf = box_coding::box_frame<T, Acc>(static_cast<Acc>(p[0]), static_cast<Acc>(p[1]),
                                                  static_cast<Acc>(p[2]), static_cast<Acc>(p[3]));
    box_coding::encode_one<T, Acc>(gf, pf, wt, o);
    store_quad<T, kVec>(out + 4 * i, o);
  }
}

// Output box i is class (i % classes) of row (i / classes). `narrow`: every index fits 32 bits, where the
// division is far cheaper.
template <typename T, bool kVec>
__global__ void decode_kernel(const T* __restrict__ codes, const T* __restrict__ boxes, int64_t total,
                              int64_t classes, bool narrow, const CoderWeightsOf<T> wt, T* __restrict__ out) {
  using Acc = at::opmath_type<T>;
  PYDET_CUDA_KERNEL_LOOP(i, total) {
    const int64_t row = narrow ? static_cast<int64_t>(static_cast<uint32_t>(i) / static_cast<uint32_t>(classes))
                               : i / classes;
    T b[4], c[4], o[4];
    load_quad<T, kVec>(boxes + 4 * row, b);
    load_quad<T, kVec>(codes + 4 * i, c);
    const auto frame = box_coding::box_frame<T, Acc>(static_cast<Acc>(b[0]), static_cast<Acc>(b[1]),
                                                     static_cast<Acc>(b[2]), static_cast<Acc>(b[3]));
    box_coding::decode_one<T, Acc>(static_cast<Acc>(c[0]), static_cast<Acc>(c[1]), static_cast<Acc>(c[2]),
                                   static_cast<Acc>(c[3]), frame, wt, o);
    store_quad<T, kVec>(out + 4 * i, o);
  }
}

at::Tensor encode_boxes_cuda(const at::Tensor& reference_boxes, const at::Tensor& proposals,
                             at::ArrayRef<double> weights) {
  constexpr const char* op = "encode_boxes";
  check_encode_tensors(reference_boxes, proposals, op);
  TORCH_CHECK(reference_boxes.is_cuda(), op, ": expected CUDA tensors, got ", reference_boxes.device());
  check_encode_sizes(reference_boxes, proposals, weights, op);
  c10::cuda::CUDAGuard guard(reference_boxes.device());
  if (reference_boxes.scalar_type() != proposals.scalar_type()) {
    return encode_mixed_dtypes(reference_boxes, proposals, weights);
  }
  const auto dtype = reference_boxes.scalar_type();
  const at::Tensor ref = reference_boxes.contiguous();
  const at::Tensor prop = proposals.contiguous();
  const int64_t n = ref.size(0);
  at::Tensor out = at::empty({n, 4}, ref.options());
  if (n == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "encode_boxes_cuda", [&] {
    using Acc = at::opmath_type<scalar_t>;
    // As the CPU kernel: the weights rounded to the boxes' dtype (torchvision holds them in a tensor of it).
    auto as_t = [](double v) { return static_cast<Acc>(static_cast<scalar_t>(v)); };
    const CoderWeightsOf<scalar_t> wt{as_t(weights[0]), as_t(weights[1]), as_t(weights[2]), as_t(weights[3]),
                                      Acc(0)};
    const scalar_t* g = ref.const_data_ptr<scalar_t>();
    const scalar_t* p = prop.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const unsigned int blocks = grid_size(n);
    if (quad_aligned<scalar_t>(g) && quad_aligned<scalar_t>(p) && quad_aligned<scalar_t>(o)) {
      encode_kernel<scalar_t, true><<<blocks, kThreads, 0, stream>>>(g, p, n, wt, o);
    } else {
      encode_kernel<scalar_t, false><<<blocks, kThreads, 0, stream>>>(g, p, n, wt, o);
    }
    PYDET_CUDA_CHECK_LAUNCH();
  });
  return out;
}

at::Tensor decode_boxes_cuda(const at::Tensor& rel_codes, const at::Tensor& boxes, at::ArrayRef<double> weights,
                             double bbox_xform_clip) {
  constexpr const char* op = "decode_boxes";
  check_decode_tensors(rel_codes, boxes, op);
  TORCH_CHECK(rel_codes.is_cuda(), op, ": expected CUDA tensors, got ", rel_codes.device());
  check_decode_sizes(rel_codes, boxes, weights, bbox_xform_clip, op);
  c10::cuda::CUDAGuard guard(rel_codes.device());
  const at::Tensor codes = rel_codes.contiguous();
  const at::Tensor ref = boxes.to(codes.scalar_type()).contiguous();
  const int64_t n = codes.size(0);
  const int64_t k = codes.size(1) / 4;
  at::Tensor out = at::empty({n, 4 * k}, codes.options());
  if (out.numel() == 0) return out;
  const int64_t total = n * k;  // output boxes; k >= 1 here
  const bool narrow = total <= static_cast<int64_t>(std::numeric_limits<uint32_t>::max());
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, codes.scalar_type(), "decode_boxes_cuda", [&] {
    using Acc = at::opmath_type<scalar_t>;
    // As the CPU kernel: torchvision divides by the weights as Python scalars and clamps with the clip in
    // the codes' dtype.
    const CoderWeightsOf<scalar_t> wt{static_cast<Acc>(weights[0]), static_cast<Acc>(weights[1]),
                                      static_cast<Acc>(weights[2]), static_cast<Acc>(weights[3]),
                                      static_cast<Acc>(static_cast<scalar_t>(bbox_xform_clip))};
    const scalar_t* c = codes.const_data_ptr<scalar_t>();
    const scalar_t* b = ref.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const unsigned int blocks = grid_size(total);
    if (quad_aligned<scalar_t>(c) && quad_aligned<scalar_t>(b) && quad_aligned<scalar_t>(o)) {
      decode_kernel<scalar_t, true><<<blocks, kThreads, 0, stream>>>(c, b, total, k, narrow, wt, o);
    } else {
      decode_kernel<scalar_t, false><<<blocks, kThreads, 0, stream>>>(c, b, total, k, narrow, wt, o);
    }
    PYDET_CUDA_CHECK_LAUNCH();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pydet_ops, CUDA, m) {
  m.impl("encode_boxes", TORCH_FN(encode_boxes_cuda));
  m.impl("decode_boxes", TORCH_FN(decode_boxes_cuda));
}

}  // namespace cuda
}  // namespace pydet_ops
