// CUDA kernels of nms, batched_nms, nms_fixed and batched_nms_fixed.
//
// Same results as the CPU kernel, index for index: boxes are ordered by the CPU's sort keys (descending
// score, ties by ascending index, NaN first; batched: stably regrouped by category), and a box is dropped
// when an earlier kept box of its category overlaps it by more than the threshold, with the CPU's overlap
// formula evaluated in the CPU's compute type.
//
// Pipeline, all on the current stream:
//   1. sort keys -> cub radix sort (stable) -> score order; batched: a second stable sort by category;
//   2. boxes gathered into that order (structure of arrays, with areas);
//   3. the sorted boxes are resolved in chunks of kChunk rows, three launches per chunk:
//      a. mask:   64x64 tiles of "row suppresses column" bits for pairs inside the chunk (rows already
//                 removed, and tiles whose rows and columns lie in different categories, are skipped);
//      b. reduce: one block runs the greedy pass over the chunk on the device (removed bits and the
//                 mask's diagonal words in shared memory); in batched mode the categories of a chunk are
//                 independent, so small ones go to different warps in parallel;
//      c. cross:  every later box not yet removed (of the chunk's last category, when batched) is tested
//                 against the boxes the chunk kept, stopping at the first hit.
//      So extra memory is O(N) plus one kChunk x kChunk bit mask (2 MiB), whatever N is, and pairs across
//      chunks are only tested as (kept box, later live box).
//   4. kept indices: plain NMS appends kept positions in order, which is already the global score order;
//      batched marks kept boxes by score rank and compacts them in rank order.
// Nothing is copied to the host except, for nms / batched_nms, the number of kept boxes (to size the
// result); the _fixed variants never synchronise and can be captured in a CUDA graph.
//
// This file holds the host side (ordering, the chunk loop, allocation) and the entry points; the kernels
// are in cuda/nms_mask.cuh (keys, ordering, 3a), cuda/nms_reduce.cuh (3b) and cuda/nms_select.cuh (3c, 4).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cub/cub.cuh>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>

#include "common/nms_math.h"
#include "cuda/launch.h"
#include "cuda/nms_mask.cuh"
#include "cuda/nms_reduce.cuh"
#include "cuda/nms_select.cuh"
#include "ops/nms_checks.h"

namespace pydet_ops {
namespace cuda {
namespace {

using namespace nms_detail;

// ---------------------------------------------------------------------------------------------------------
// Host side.

at::Tensor cub_temp(size_t bytes, const at::TensorOptions& options) {
  return at::empty({static_cast<int64_t>(bytes > 0 ? bytes : 1)}, options.dtype(at::kByte));
}

template <typename KeyT>
void stable_sort_pairs(const KeyT* keys_in, KeyT* keys_out, const int32_t* values_in, int32_t* values_out, int n,
                       const at::TensorOptions& options, cudaStream_t stream) {
  size_t bytes = 0;
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, keys_in, keys_out, values_in, values_out, n, 0,
                                                 static_cast<int>(sizeof(KeyT) * 8), stream));
  at::Tensor temp = cub_temp(bytes, options);
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data_ptr(), bytes, keys_in, keys_out, values_in, values_out, n,
                                                 0, static_cast<int>(sizeof(KeyT) * 8), stream));
}

// The kept boxes, still on the device: keep[t] = map[list[t]] (or list[t] when map is undefined) for
// t < count[0], in nms's output order.
struct DeviceKept {
  at::Tensor list;   // int32
  at::Tensor map;    // int32 or undefined
  at::Tensor count;  // int32 [1]
};

template <typename T>
DeviceKept nms_on_device(const at::Tensor& boxes_in, const at::Tensor& scores_in, const at::Tensor* idxs,
                         double iou_threshold) {
  using KeyT = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  constexpr at::ScalarType kKeyType = sizeof(T) == 4 ? at::kInt : at::kLong;
  const at::ScalarType compute = c10::CppTypeToScalarType<T>::value;
  const at::Tensor boxes = boxes_in.to(compute).contiguous();
  const at::Tensor scores = scores_in.to(compute).contiguous();
  const int64_t n = boxes.size(0);
  const int ni = static_cast<int>(n);  // checked: n <= 2^31 - 1
  const at::TensorOptions options = boxes.options();
  const at::TensorOptions i32 = options.dtype(at::kInt);
  const at::TensorOptions i64 = options.dtype(at::kLong);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const unsigned int blocks_n = grid_size(n);

  // 1. Order.
  at::Tensor by_score = at::empty({n}, i32);
  {
    at::Tensor keys = at::empty({n}, options.dtype(kKeyType));
    at::Tensor sorted_keys = at::empty({n}, options.dtype(kKeyType));
    at::Tensor iota = at::empty({n}, i32);
    KeyT* k = reinterpret_cast<KeyT*>(keys.data_ptr());
    score_key_kernel<T, KeyT><<<blocks_n, kThreads, 0, stream>>>(scores.const_data_ptr<T>(), n, k,
                                                                 iota.mutable_data_ptr<int32_t>());
    PYDET_CUDA_CHECK_LAUNCH();
    stable_sort_pairs<KeyT>(k, reinterpret_cast<KeyT*>(sorted_keys.data_ptr()), iota.const_data_ptr<int32_t>(),
                            by_score.mutable_data_ptr<int32_t>(), ni, options, stream);
  }
  at::Tensor rank_of_pos;  // batched: score rank of each sorted position
  at::Tensor cls_sorted;   // batched: category key of each sorted position
  if (idxs != nullptr) {
    const at::Tensor ids = idxs->to(at::kLong).contiguous();
    at::Tensor keys = at::empty({n}, i64);
    at::Tensor iota = at::empty({n}, i32);
    cls_sorted = at::empty({n}, i64);
    rank_of_pos = at::empty({n}, i32);
    class_key_kernel<<<blocks_n, kThreads, 0, stream>>>(ids.const_data_ptr<int64_t>(),
                                                         by_score.const_data_ptr<int32_t>(), n,
                                                         reinterpret_cast<uint64_t*>(keys.data_ptr()),
                                                         iota.mutable_data_ptr<int32_t>());
    PYDET_CUDA_CHECK_LAUNCH();
    stable_sort_pairs<uint64_t>(reinterpret_cast<const uint64_t*>(keys.data_ptr()),
                                reinterpret_cast<uint64_t*>(cls_sorted.data_ptr()), iota.const_data_ptr<int32_t>(),
                                rank_of_pos.mutable_data_ptr<int32_t>(), ni, options, stream);
  }
  const bool batched = idxs != nullptr;
  const int32_t* rank_ptr = batched ? rank_of_pos.const_data_ptr<int32_t>() : nullptr;
  const uint64_t* cls = batched ? reinterpret_cast<const uint64_t*>(cls_sorted.data_ptr()) : nullptr;

  // 2. Sorted boxes.
  at::Tensor soa_t = at::empty({5, n}, options);
  gather_sorted_kernel<T><<<blocks_n, kThreads, 0, stream>>>(boxes.const_data_ptr<T>(),
                                                              by_score.const_data_ptr<int32_t>(), rank_ptr, n,
                                                              soa_t.mutable_data_ptr<T>());
  PYDET_CUDA_CHECK_LAUNCH();
  const T* soa = soa_t.const_data_ptr<T>();

  // 3. Chunks.
  const int64_t chunks = ceil_div(n, kChunk);
  const int wb = static_cast<int>(ceil_div(std::min<int64_t>(n, kChunk), 64));
  at::Tensor removed = at::zeros({ceil_div(n, 64)}, i64);
  at::Tensor chunk_off = at::zeros({chunks + 1}, i32);
  at::Tensor cross_begin = at::empty({chunks}, i32);
  at::Tensor kept_pos = at::empty({n}, i32);
  // Zeroed once: tiles a chunk skips are never used, but then hold earlier chunks' words, not garbage.
  at::Tensor mask = at::zeros({static_cast<int64_t>(wb) * wb * 64}, i64);
  at::Tensor flags = batched ? at::zeros({n}, options.dtype(at::kByte)) : at::Tensor();
  uint64_t* removed_ptr = reinterpret_cast<uint64_t*>(removed.data_ptr());
  uint64_t* mask_ptr = reinterpret_cast<uint64_t*>(mask.data_ptr());
  int32_t* chunk_off_ptr = chunk_off.mutable_data_ptr<int32_t>();
  int32_t* cross_begin_ptr = cross_begin.mutable_data_ptr<int32_t>();
  int32_t* kept_pos_ptr = kept_pos.mutable_data_ptr<int32_t>();
  uint8_t* flags_ptr = batched ? flags.mutable_data_ptr<uint8_t>() : nullptr;
  const T threshold = threshold_in<T>(iou_threshold);

  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t r0 = c * kChunk;
    const int len = static_cast<int>(std::min<int64_t>(kChunk, n - r0));
    const int nb = (len + 63) / 64;
    const dim3 mask_grid(nb, nb);
    if (batched) {
      nms_chunk_mask_kernel<T, true><<<mask_grid, 64, 0, stream>>>(soa, n, r0, len, wb, cls, removed_ptr, threshold,
                                                                   mask_ptr);
    } else {
      nms_chunk_mask_kernel<T, false><<<mask_grid, 64, 0, stream>>>(soa, n, r0, len, wb, cls, removed_ptr,
                                                                    threshold, mask_ptr);
    }
    PYDET_CUDA_CHECK_LAUNCH();
    if (batched) {
      nms_chunk_reduce_kernel<true><<<1, kReduceThreads, 0, stream>>>(mask_ptr, wb, r0, len, cls, removed_ptr,
                                                                      static_cast<int>(c), chunk_off_ptr,
                                                                      cross_begin_ptr, kept_pos_ptr, rank_ptr,
                                                                      flags_ptr);
    } else {
      nms_chunk_reduce_kernel<false><<<1, kReduceThreads, 0, stream>>>(mask_ptr, wb, r0, len, cls, removed_ptr,
                                                                       static_cast<int>(c), chunk_off_ptr,
                                                                       cross_begin_ptr, kept_pos_ptr, rank_ptr,
                                                                       flags_ptr);
    }
    PYDET_CUDA_CHECK_LAUNCH();
    const int64_t r1 = r0 + len;
    if (r1 < n) {
      const unsigned int cross_blocks = static_cast<unsigned int>(ceil_div(n - r1, kCrossThreads));
      uint32_t* removed32 = reinterpret_cast<uint32_t*>(removed_ptr);
      if (batched) {
        nms_cross_kernel<T, true><<<cross_blocks, kCrossThreads, 0, stream>>>(
            soa, n, r1, cls, static_cast<int>(c), chunk_off_ptr, cross_begin_ptr, kept_pos_ptr, threshold,
            removed32);
      } else {
        nms_cross_kernel<T, false><<<cross_blocks, kCrossThreads, 0, stream>>>(
            soa, n, r1, cls, static_cast<int>(c), chunk_off_ptr, cross_begin_ptr, kept_pos_ptr, threshold,
            removed32);
      }
      PYDET_CUDA_CHECK_LAUNCH();
    }
  }

  // 4. Kept indices in the global score order.
  if (!batched) {
    // Positions are score ranks and were appended in ascending order.
    return {kept_pos, by_score, chunk_off.narrow(0, chunks, 1)};
  }
  at::Tensor selected = at::empty({n}, i32);
  at::Tensor num_selected = at::empty({1}, i32);
  size_t bytes = 0;
  C10_CUDA_CHECK(cub::DeviceSelect::Flagged(nullptr, bytes, by_score.const_data_ptr<int32_t>(), flags_ptr,
                                            selected.mutable_data_ptr<int32_t>(),
                                            num_selected.mutable_data_ptr<int32_t>(), ni, stream));
  at::Tensor temp = cub_temp(bytes, options);
  C10_CUDA_CHECK(cub::DeviceSelect::Flagged(temp.data_ptr(), bytes, by_score.const_data_ptr<int32_t>(), flags_ptr,
                                            selected.mutable_data_ptr<int32_t>(),
                                            num_selected.mutable_data_ptr<int32_t>(), ni, stream));
  return {selected, at::Tensor(), num_selected};
}

DeviceKept run_on_device(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor* idxs,
                         double iou_threshold) {
  if (compute_type_of(boxes.scalar_type()) == at::kDouble) {
    return nms_on_device<double>(boxes, scores, idxs, iou_threshold);
  }
  return nms_on_device<float>(boxes, scores, idxs, iou_threshold);
}

void launch_finalize(const DeviceKept& kept, int64_t m, at::Tensor& keep, int64_t* count_out) {
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  nms_finalize_kernel<<<grid_size(std::max<int64_t>(m, 1)), kThreads, 0, stream>>>(
      kept.list.const_data_ptr<int32_t>(), kept.map.defined() ? kept.map.const_data_ptr<int32_t>() : nullptr,
      kept.count.const_data_ptr<int32_t>(), m, keep.mutable_data_ptr<int64_t>(), count_out);
  PYDET_CUDA_CHECK_LAUNCH();
}

// Variable-size result: the one host synchronisation is reading the number of kept boxes.
at::Tensor kept_indices(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor* idxs,
                        double iou_threshold) {
  const at::TensorOptions out_options = boxes.options().dtype(at::kLong);
  if (boxes.size(0) == 0) {
    return at::empty({0}, out_options);
  }
  const DeviceKept kept = run_on_device(boxes, scores, idxs, iou_threshold);
  const int64_t count = kept.count.item<int32_t>();
  at::Tensor out = at::empty({count}, out_options);
  if (count > 0) {
    launch_finalize(kept, count, out, nullptr);
  }
  return out;
}

// Fixed-size result: no host synchronisation.
std::tuple<at::Tensor, at::Tensor> kept_indices_fixed(const at::Tensor& boxes, const at::Tensor& scores,
                                                      const at::Tensor* idxs, double iou_threshold,
                                                      int64_t max_output) {
  const at::TensorOptions out_options = boxes.options().dtype(at::kLong);
  if (boxes.size(0) == 0) {
    return {at::full({max_output}, -1, out_options), at::zeros({}, out_options)};
  }
  const DeviceKept kept = run_on_device(boxes, scores, idxs, iou_threshold);
  at::Tensor keep = at::empty({max_output}, out_options);
  at::Tensor count = at::empty({}, out_options);
  launch_finalize(kept, max_output, keep, count.mutable_data_ptr<int64_t>());
  return {keep, count};
}

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  check_nms_inputs(boxes, scores, "nms");
  TORCH_CHECK(boxes.is_cuda(), "nms: expected CUDA tensors, got ", boxes.device());
  c10::cuda::CUDAGuard guard(boxes.device());
  return kept_indices(boxes, scores, nullptr, iou_threshold);
}

at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold) {
  check_nms_inputs(boxes, scores, "batched_nms");
  check_nms_categories(boxes, idxs, "batched_nms");
  TORCH_CHECK(boxes.is_cuda(), "batched_nms: expected CUDA tensors, got ", boxes.device());
  c10::cuda::CUDAGuard guard(boxes.device());
  return kept_indices(boxes, scores, &idxs, iou_threshold);
}

std::tuple<at::Tensor, at::Tensor> nms_fixed_cuda(const at::Tensor& boxes, const at::Tensor& scores,
                                                  double iou_threshold, int64_t max_output) {
  check_nms_inputs(boxes, scores, "nms_fixed");
  check_max_output(max_output, "nms_fixed");
  TORCH_CHECK(boxes.is_cuda(), "nms_fixed: expected CUDA tensors, got ", boxes.device());
  c10::cuda::CUDAGuard guard(boxes.device());
  return kept_indices_fixed(boxes, scores, nullptr, iou_threshold, max_output);
}

std::tuple<at::Tensor, at::Tensor> batched_nms_fixed_cuda(const at::Tensor& boxes, const at::Tensor& scores,
                                                          const at::Tensor& idxs, double iou_threshold,
                                                          int64_t max_output) {
  check_nms_inputs(boxes, scores, "batched_nms_fixed");
  check_nms_categories(boxes, idxs, "batched_nms_fixed");
  check_max_output(max_output, "batched_nms_fixed");
  TORCH_CHECK(boxes.is_cuda(), "batched_nms_fixed: expected CUDA tensors, got ", boxes.device());
  c10::cuda::CUDAGuard guard(boxes.device());
  return kept_indices_fixed(boxes, scores, &idxs, iou_threshold, max_output);
}

}  // namespace

TORCH_LIBRARY_IMPL(pydet_ops, CUDA, m) {
  m.impl("nms", TORCH_FN(nms_cuda));
  m.impl("batched_nms", TORCH_FN(batched_nms_cuda));
  m.impl("nms_fixed", TORCH_FN(nms_fixed_cuda));
  m.impl("batched_nms_fixed", TORCH_FN(batched_nms_fixed_cuda));
}

}  // namespace cuda
}  // namespace pydet_ops
