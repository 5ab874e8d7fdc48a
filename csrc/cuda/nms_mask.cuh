// Device code of the CUDA NMS kernels (ops/cuda/nms_kernel.cu, whose top comment describes the pipeline),
// first part: the chunk sizes shared by every stage, the sort keys, the bit and warp primitives of the
// later stages, the ordering and gather kernels (steps 1-2) and the suppression mask of one chunk (3a).
#pragma once

#include <cstdint>

#include "common/box_math.h"
#include "common/nms_math.h"
#include "common/score_keys.h"
#include "cuda/launch.h"

namespace pydet_ops {
namespace cuda {
namespace nms_detail {

// Rows (boxes in sorted order) resolved per chunk. The mask of a chunk is kChunk * kChunk / 8 bytes, and
// the reduce kernel keeps one diagonal word per row in shared memory (kChunk * 8 bytes).
constexpr int kChunk = 4096;
constexpr int kChunkWords = kChunk / 64;
constexpr int kReduceThreads = 512;
constexpr int kReduceWarps = kReduceThreads / 32;
// A category spanning at most this many 64-bit words of a chunk is resolved by one warp, a longer one by
// the whole block. At most kChunkWords / (kWarpSpan - 1) + 1 categories of a chunk are longer (each owns
// its kWarpSpan - 1 or more interior words).
constexpr int kWarpSpan = 8;
constexpr int kMaxBlockSegments = kChunkWords / (kWarpSpan - 1) + 1;
// Loads per thread when the whole block ORs one 64-row block of the mask into the later words.
constexpr int kBlockOrIters = ((kChunkWords - 1) * 64 + kReduceThreads - 1) / kReduceThreads;
constexpr int kCrossThreads = 256;
constexpr unsigned kFullWarp = 0xffffffffu;

static_assert(kChunk % 64 == 0 && kChunkWords * 2 <= 128, "block_scan_popc handles at most 128 words");
static_assert(kReduceThreads >= 128 && kReduceThreads % 32 == 0, "block_scan_popc uses the first four warps");
static_assert(kChunk <= 65535, "segment starts are stored as uint16");

// ---------------------------------------------------------------------------------------------------------
// Per-pair and per-key math, as the CPU kernel computes it.

using nms_math::nms_overlap;
using nms_math::threshold_in;

// The CPU's keys (common/score_keys.h): 32 bits for float scores, 64 for double.
using score_keys::class_key;
using score_keys::descending_score_key;

// OR of v over the 32 lanes of a (fully active) warp, in every lane.
__device__ __forceinline__ uint64_t warp_or64(uint64_t v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned lo = __reduce_or_sync(kFullWarp, static_cast<unsigned>(v));
  const unsigned hi = __reduce_or_sync(kFullWarp, static_cast<unsigned>(v >> 32));
  return (static_cast<uint64_t>(hi) << 32) | lo;
#else
  for (int offset = 16; offset > 0; offset >>= 1) {
    v |= __shfl_xor_sync(kFullWarp, v, offset);
  }
  return v;
#endif
}

// Bits [lo, hi) of a 64-bit word, 0 <= lo < hi <= 64.
__device__ __forceinline__ uint64_t bit_range(int lo, int hi) {
  const uint64_t below_hi = hi >= 64 ? ~0ull : ((1ull << hi) - 1ull);
  return below_hi & ~((1ull << lo) - 1ull);
}

// ---------------------------------------------------------------------------------------------------------
// Ordering.

template <typename T, typename KeyT>
__global__ void score_key_kernel(const T* __restrict__ scores, int64_t n, KeyT* __restrict__ keys,
                                 int32_t* __restrict__ iota) {
  PYDET_CUDA_KERNEL_LOOP(i, n) {
    keys[i] = descending_score_key(scores[i]);
    iota[i] = static_cast<int32_t>(i);
  }
}

// Category keys in score order, to be sorted stably: categories ascending, score order inside each.
__global__ void class_key_kernel(const int64_t* __restrict__ ids, const int32_t* __restrict__ by_score, int64_t n,
                                 uint64_t* __restrict__ keys, int32_t* __restrict__ iota) {
  PYDET_CUDA_KERNEL_LOOP(r, n) {
    keys[r] = class_key(ids[by_score[r]]);
    iota[r] = static_cast<int32_t>(r);
  }
}

// Boxes in processing order as structure of arrays [x1 | y1 | x2 | y2 | area], each of length n. Position p
// holds the box of score rank rank_of_pos[p] (batched) or p (plain).
template <typename T>
__global__ void gather_sorted_kernel(const T* __restrict__ boxes, const int32_t* __restrict__ by_score,
                                     const int32_t* __restrict__ rank_of_pos, int64_t n, T* __restrict__ soa) {
  PYDET_CUDA_KERNEL_LOOP(p, n) {
    const int64_t r = rank_of_pos != nullptr ? rank_of_pos[p] : p;
    const T* b = boxes + 4 * static_cast<int64_t>(by_score[r]);
    const T x1 = b[0], y1 = b[1], x2 = b[2], y2 = b[3];
    soa[p] = x1;
    soa[n + p] = y1;
    soa[2 * n + p] = x2;
    soa[3 * n + p] = y2;
    soa[4 * n + p] = box_math::box_area(x1, y1, x2, y2);
  }
}

// ---------------------------------------------------------------------------------------------------------
// a. Suppression mask of one chunk (rows and columns r0 .. r0 + len - 1 of the sorted boxes).
//
// Layout, tile-major: word (rb, cb, t) = mask[(rb * wb + cb) * 64 + t] holds, for row rb * 64 + t, the bits
// of columns cb * 64 .. cb * 64 + 63 (chunk-relative) that it suppresses. The 64 rows of one tile are
// contiguous, so both the writes here and the reduce kernel's reads of a row block coalesce.
// Only tiles with cb >= rb are written, only for rows not removed yet (the reduce kernel reads rows it
// keeps, which were live when the chunk started), and in batched mode only tiles that can hold a pair of
// one category (the reduce kernel reads no others). Bits of columns already removed stay 0: removing a box
// twice changes nothing.
template <typename T, bool kBatched>
__global__ void __launch_bounds__(64)
    nms_chunk_mask_kernel(const T* __restrict__ soa, int64_t n, int64_t r0, int len, int wb,
                          const uint64_t* __restrict__ cls, const uint64_t* __restrict__ removed, T threshold,
                          uint64_t* __restrict__ mask) {
  const int rb = blockIdx.y;
  const int cb = blockIdx.x;
  if (cb < rb) return;
  const int row0 = rb * 64;
  const int col0 = cb * 64;
  const int rows_here = min(64, len - row0);
  const int cols_here = min(64, len - col0);
  const int64_t word0 = r0 >> 6;  // r0 is a multiple of 64
  const uint64_t live_rows = ~removed[word0 + rb] & bit_range(0, rows_here);
  if (live_rows == 0) return;
  if (kBatched) {
    // Positions are sorted by category: when the first column's category is above the last row's, no
    // pair of this tile shares a category. (Never true on the diagonal.)
    if (cls[r0 + col0] > cls[r0 + row0 + rows_here - 1]) return;
  }
  __shared__ T cx1[64], cy1[64], cx2[64], cy2[64], carea[64];
  __shared__ uint64_t ccls[64];
  const int t = threadIdx.x;
  if (t < cols_here) {
    const int64_t j = r0 + col0 + t;
    cx1[t] = soa[j];
    cy1[t] = soa[n + j];
    cx2[t] = soa[2 * n + j];
    cy2[t] = soa[3 * n + j];
    carea[t] = soa[4 * n + j];
    if (kBatched) ccls[t] = cls[j];
  }
  __syncthreads();
  if (((live_rows >> t) & 1ull) == 0) return;
  const int64_t i = r0 + row0 + t;
  const T ix1 = soa[i], iy1 = soa[n + i], ix2 = soa[2 * n + i], iy2 = soa[3 * n + i], iarea = soa[4 * n + i];
  const uint64_t icls = kBatched ? cls[i] : 0;
  uint64_t cols = ~removed[word0 + cb] & bit_range(0, cols_here);
  if (cb == rb) cols &= t == 63 ? 0ull : (~0ull << (t + 1));  // only columns after the row
  uint64_t bits = 0;
  while (cols != 0) {
    const int b = __ffsll(static_cast<long long>(cols)) - 1;
    cols &= cols - 1;
    if (kBatched && ccls[b] != icls) continue;
    const T ovr = nms_overlap(ix1, iy1, ix2, iy2, iarea, cx1[b], cy1[b], cx2[b], cy2[b], carea[b]);
    if (ovr > threshold) bits |= 1ull << b;
  }
  mask[(static_cast<int64_t>(rb) * wb + cb) * 64 + t] = bits;
}

}  // namespace nms_detail
}  // namespace cuda
}  // namespace pydet_ops
