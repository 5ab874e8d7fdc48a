// CPU kernels of encode_boxes and decode_boxes: one pass over the boxes, threads over rows.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>
#include <vector>

#include "common/box_coding.h"
#include "cpu/memory.h"
#include "ops/box_coder_checks.h"
#include "ops/box_coder_mixed.h"
#include "ops/cpu/box_coder_kernel.h"

namespace pydet_ops {
namespace cpu {
namespace {

template <typename T>
void encode_all(const T* g, const T* p, int64_t n, at::ArrayRef<double> weights, T* o) {
  using Acc = at::opmath_type<T>;
  // torchvision holds the weights in a tensor of the boxes' dtype.
  auto as_t = [](double v) { return static_cast<Acc>(static_cast<T>(v)); };
  const box_coding::CoderWeights<Acc> wt{as_t(weights[0]), as_t(weights[1]), as_t(weights[2]), as_t(weights[3]),
                                         Acc(0)};
  if constexpr (std::is_same_v<T, float>) {
    const auto encode_rows_fn = PYDET_SELECT_ISA(EncodeRowsFn, encode_rows);
    at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) { encode_rows_fn(g, p, begin, end, wt, o); });
  } else {
    at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const T* gi = g + 4 * i;
        const T* pi = p + 4 * i;
        const auto gf = box_coding::box_frame<T, Acc>(gi[0], gi[1], gi[2], gi[3]);
        const auto pf = box_coding::box_frame<T, Acc>(pi[0], pi[1], pi[2], pi[3]);
        box_coding::encode_one<T, Acc>(gf, pf, wt, o + 4 * i);
      }
    });
  }
}

template <typename T>
void decode_all(const T* c, const T* b, int64_t n, int64_t k, at::ArrayRef<double> weights, double clip, T* o) {
  using Acc = at::opmath_type<T>;
  // torchvision divides by the weights as Python scalars and clamps with the clip in the codes' dtype.
  const box_coding::CoderWeights<Acc> wt{static_cast<Acc>(weights[0]), static_cast<Acc>(weights[1]),
                                         static_cast<Acc>(weights[2]), static_cast<Acc>(weights[3]),
                                         static_cast<Acc>(static_cast<T>(clip))};
  const int64_t grain = std::max<int64_t>(1, 4096 / k);
  if constexpr (std::is_same_v<T, float>) {
    const auto decode_rows_fn = PYDET_SELECT_ISA(DecodeRowsFn, decode_rows);
    at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) { decode_rows_fn(c, b, begin, end, k, wt, o); });
  } else {
    at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const T* bi = b + 4 * i;
        const auto frame = box_coding::box_frame<T, Acc>(bi[0], bi[1], bi[2], bi[3]);
        const T* ci = c + 4 * k * i;
        T* oi = o + 4 * k * i;
        for (int64_t j = 0; j < k; ++j) {
          box_coding::decode_one<T, Acc>(ci[4 * j], ci[4 * j + 1], ci[4 * j + 2], ci[4 * j + 3], frame, wt,
                                         oi + 4 * j);
        }
      }
    });
  }
}

at::Tensor encode_boxes_cpu(const at::Tensor& reference_boxes, const at::Tensor& proposals,
                            at::ArrayRef<double> weights) {
  constexpr const char* op = "encode_boxes";
  check_encode_tensors(reference_boxes, proposals, op);
  TORCH_CHECK(reference_boxes.device().is_cpu(), op, ": expected CPU tensors, got ", reference_boxes.device());
  check_encode_sizes(reference_boxes, proposals, weights, op);
  if (reference_boxes.scalar_type() != proposals.scalar_type()) {
    return encode_mixed_dtypes(reference_boxes, proposals, weights);
  }
  const auto dtype = reference_boxes.scalar_type();
  const at::Tensor ref = reference_boxes.contiguous();
  const at::Tensor prop = proposals.contiguous();
  const int64_t n = ref.size(0);
  at::Tensor out = empty_large({n, 4}, ref.options());
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "encode_boxes_cpu", [&] {
    encode_all<scalar_t>(ref.const_data_ptr<scalar_t>(), prop.const_data_ptr<scalar_t>(), n, weights,
                         out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

at::Tensor decode_boxes_cpu(const at::Tensor& rel_codes, const at::Tensor& boxes, at::ArrayRef<double> weights,
                            double bbox_xform_clip) {
  constexpr const char* op = "decode_boxes";
  check_decode_tensors(rel_codes, boxes, op);
  TORCH_CHECK(rel_codes.device().is_cpu(), op, ": expected CPU tensors, got ", rel_codes.device());
  check_decode_sizes(rel_codes, boxes, weights, bbox_xform_clip, op);
  const at::Tensor codes = rel_codes.contiguous();
  const at::Tensor ref = boxes.to(codes.scalar_type()).contiguous();
  const int64_t n = codes.size(0);
  const int64_t k = codes.size(1) / 4;
  at::Tensor out = empty_large({n, 4 * k}, codes.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, codes.scalar_type(), "decode_boxes_cpu", [&] {
    decode_all<scalar_t>(codes.const_data_ptr<scalar_t>(), ref.const_data_ptr<scalar_t>(), n, k, weights,
                         bbox_xform_clip, out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pydet_ops, CPU, m) {
  m.impl("encode_boxes", TORCH_FN(encode_boxes_cpu));
  m.impl("decode_boxes", TORCH_FN(decode_boxes_cpu));
}

}  // namespace cpu
}  // namespace pydet_ops
