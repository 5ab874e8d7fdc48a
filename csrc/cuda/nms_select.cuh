// Device code of the CUDA NMS kernels (ops/cuda/nms_kernel.cu), third part: later boxes tested against
// the boxes a chunk kept (step 3c), and the output of the kept indices (step 4).
#pragma once

#include <cstdint>

#include "cuda/launch.h"
#include "cuda/nms_mask.cuh"

namespace pydet_ops {
namespace cuda {
namespace nms_detail {

// ---------------------------------------------------------------------------------------------------------
// c. Later boxes against the boxes chunk c kept: one thread per later position j >= r1, live ones only,
// stopping at the first kept box that suppresses it. Sets the removed bit of every suppressed j.
template <typename T, bool kBatched>
__global__ void __launch_bounds__(kCrossThreads)
    nms_cross_kernel(const T* __restrict__ soa, int64_t n, int64_t r1, const uint64_t* __restrict__ cls, int c,
                     const int32_t* __restrict__ chunk_off, const int32_t* __restrict__ cross_begin,
                     const int32_t* __restrict__ kept_pos, T threshold, uint32_t* __restrict__ removed32) {
  __shared__ T kx1[kCrossThreads], ky1[kCrossThreads], kx2[kCrossThreads], ky2[kCrossThreads],
      karea[kCrossThreads];
  const int64_t j = r1 + static_cast<int64_t>(blockIdx.x) * kCrossThreads + threadIdx.x;
  const int kb = cross_begin[c];
  const int ke = chunk_off[c + 1];
  bool active = j < n && kb < ke;
  if (active) active = ((removed32[j >> 5] >> (j & 31)) & 1u) == 0;
  // Only the chunk's last category continues past it (positions are sorted by category).
  if (kBatched && active) active = cls[j] == cls[r1 - 1];
  if (!__syncthreads_or(active)) return;
  T jx1 = T(0), jy1 = T(0), jx2 = T(0), jy2 = T(0), jarea = T(0);
  if (active) {
    jx1 = soa[j];
    jy1 = soa[n + j];
    jx2 = soa[2 * n + j];
    jy2 = soa[3 * n + j];
    jarea = soa[4 * n + j];
  }
  bool hit = false;
  for (int t0 = kb; t0 < ke; t0 += kCrossThreads) {
    const int count = min(kCrossThreads, ke - t0);
    if (static_cast<int>(threadIdx.x) < count) {
      const int64_t p = kept_pos[t0 + threadIdx.x];
      kx1[threadIdx.x] = soa[p];
      ky1[threadIdx.x] = soa[n + p];
      kx2[threadIdx.x] = soa[2 * n + p];
      ky2[threadIdx.x] = soa[3 * n + p];
      karea[threadIdx.x] = soa[4 * n + p];
    }
    __syncthreads();
    if (active && !hit) {
      for (int q = 0; q < count; ++q) {
        if (nms_overlap(kx1[q], ky1[q], kx2[q], ky2[q], karea[q], jx1, jy1, jx2, jy2, jarea) > threshold) {
          hit = true;
          break;
        }
      }
    }
    // Also the barrier before the next tile overwrites shared memory.
    if (!__syncthreads_or(active && !hit)) break;
  }
  // r1 is a multiple of 64 and blocks are whole warps, so lane 0's j starts this warp's own 32-bit word.
  const unsigned bits = __ballot_sync(kFullWarp, hit);
  if ((threadIdx.x & 31) == 0 && bits != 0) removed32[j >> 5] |= bits;
}

// ---------------------------------------------------------------------------------------------------------
// 4. Output: keep[t] = map[src[t]] (or src[t]) for t < min(*count, m), then -1; *count_out = that number.
__global__ void nms_finalize_kernel(const int32_t* __restrict__ src, const int32_t* __restrict__ map,
                                    const int32_t* __restrict__ count, int64_t m, int64_t* __restrict__ keep,
                                    int64_t* __restrict__ count_out) {
  const int64_t k = min(static_cast<int64_t>(*count), m);
  PYDET_CUDA_KERNEL_LOOP(t, m) {
    keep[t] = t < k ? static_cast<int64_t>(map != nullptr ? map[src[t]] : src[t]) : int64_t(-1);
  }
  if (count_out != nullptr && blockIdx.x == 0 && threadIdx.x == 0) *count_out = k;
}

}  // namespace nms_detail
}  // namespace cuda
}  // namespace pydet_ops
