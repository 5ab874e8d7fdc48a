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
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cub/cub.cuh>

#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>

#include "common/box_math.h"
#include "common/nms_math.h"
#include "cuda/launch.h"
#include "ops/nms_checks.h"

namespace pydet_ops {
namespace cuda {
namespace {

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

// Ascending key order == descending score order, NaN (either sign) first, -0 tied with +0: the CPU's
// descending_score_key. For float the CPU's 64-bit key never exceeds 2^32 - 1, so 32 bits hold it.
__device__ __forceinline__ uint32_t descending_score_key(float score) {
  if (score != score) return 0u;
  if (score == 0.0f) score = 0.0f;
  const uint32_t bits = __float_as_uint(score);
  const uint32_t ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return ~ascending + 1u;  // ~ascending <= 0xff800000 for any non-NaN, so no wrap-around
}

__device__ __forceinline__ uint64_t descending_score_key(double score) {
  if (score != score) return 0ull;
  if (score == 0.0) score = 0.0;
  const uint64_t bits = static_cast<uint64_t>(__double_as_longlong(score));
  constexpr uint64_t kSign = 1ull << 63;
  const uint64_t ascending = (bits & kSign) ? ~bits : (bits | kSign);
  return ~ascending + 1ull;
}

// Ascending key order == ascending signed category.
__device__ __forceinline__ uint64_t class_key(int64_t id) {
  return static_cast<uint64_t>(id) ^ (1ull << 63);
}

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

// Greedy pass over the 64 boxes of one word, by a whole warp (every lane gets the result). `avail` holds
// the boxes not yet removed, diag_row[b] the boxes of the same word that box b suppresses (bits above b
// only; read for boxes of `avail` only). Instead of walking the bits one by one, each round keeps every
// undecided box that no undecided box suppresses: its possible suppressors are all decided and not kept,
// so the sequential pass keeps it too. The lowest undecided box always qualifies, and the boxes the new
// ones suppress drop out. Rounds = the longest chain of suppressions inside the word, usually 1-3.
__device__ __forceinline__ uint64_t greedy_word(uint64_t avail, const uint64_t* diag_row) {
  const int lane = threadIdx.x & 31;
  const uint64_t d_lo = ((avail >> lane) & 1ull) ? diag_row[lane] : 0ull;
  const uint64_t d_hi = ((avail >> (lane + 32)) & 1ull) ? diag_row[lane + 32] : 0ull;
  uint64_t undecided = avail;
  uint64_t keep = 0;
  while (undecided != 0) {  // uniform: every lane holds the same value
    const uint64_t suppressed =
        warp_or64((((undecided >> lane) & 1ull) ? d_lo : 0ull) | (((undecided >> (lane + 32)) & 1ull) ? d_hi : 0ull));
    const uint64_t fresh = undecided & ~suppressed;
    keep |= fresh;
    const uint64_t dropped =
        warp_or64((((fresh >> lane) & 1ull) ? d_lo : 0ull) | (((fresh >> (lane + 32)) & 1ull) ? d_hi : 0ull));
    undecided &= ~(fresh | dropped);
  }
  return keep;
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

// ---------------------------------------------------------------------------------------------------------
// b. Greedy pass over one chunk, one block.

// Exclusive prefix sums of the popcounts of bits[0 .. nw) (nw <= 128) into prefix[], their sum into *total.
// Every thread of the block must call it.
__device__ void block_scan_popc(const uint32_t* bits, int nw, int* prefix, int* warp_totals, int* total) {
  const int t = threadIdx.x;
  const int lane = t & 31;
  const int warp = t >> 5;
  int count = 0;
  int inclusive = 0;
  if (t < 128) {  // whole warps 0..3
    count = t < nw ? __popc(bits[t]) : 0;
    inclusive = count;
    for (int offset = 1; offset < 32; offset <<= 1) {
      const int y = __shfl_up_sync(kFullWarp, inclusive, offset);
      if (lane >= offset) inclusive += y;
    }
    if (lane == 31) warp_totals[warp] = inclusive;
  }
  __syncthreads();
  if (t < 128) {
    int offset = 0;
    for (int w = 0; w < warp; ++w) offset += warp_totals[w];
    prefix[t] = offset + inclusive - count;
    if (t == 127) *total = offset + inclusive;
  }
  __syncthreads();
}

// Rows of row block s (all 64; rows not kept are masked out later) against words s+1 .. w_last, in the
// element order of reduce_segment_block.
__device__ __forceinline__ void load_row_block(const uint64_t* __restrict__ mask, int wb, int s, int w_last,
                                               uint64_t (&v)[kBlockOrIters]) {
  const int total = (w_last - s) * 64;
  const uint64_t* row_block = mask + (static_cast<int64_t>(s) * wb + s + 1) * 64;
#pragma unroll
  for (int q = 0; q < kBlockOrIters; ++q) {
    const int idx = threadIdx.x + q * kReduceThreads;
    v[q] = idx < total ? row_block[idx] : 0ull;
  }
}

// The whole block resolves the category occupying chunk positions [a, b), word by word. Every thread
// computes the same `keep` from shared memory, so the branch around __syncthreads is uniform, and a word
// with nothing to keep costs no barrier (nothing was written). The next row block is loaded while the
// current one is reduced, so the serial chain per word is shared-memory work and one barrier.
__device__ void reduce_segment_block(int a, int b, const uint64_t* __restrict__ mask, int wb, const uint64_t* diag,
                                     unsigned long long* rem, unsigned long long* kept) {
  const int w_first = a >> 6;
  const int w_last = (b - 1) >> 6;
  const int lane = threadIdx.x & 31;
  uint64_t v[kBlockOrIters];
  load_row_block(mask, wb, w_first, w_last, v);
  for (int s = w_first; s <= w_last; ++s) {
    uint64_t next[kBlockOrIters];
    load_row_block(mask, wb, s < w_last ? s + 1 : s, w_last, next);
    const uint64_t avail = ~static_cast<uint64_t>(rem[s]) & bit_range(max(a - 64 * s, 0), min(b - 64 * s, 64));
    const uint64_t keep = greedy_word(avail, diag + 64 * s);
    if (keep != 0) {
      if (threadIdx.x == 0) atomicOr(&kept[s], static_cast<unsigned long long>(keep));
      // Element idx is row idx % 64 against word s + 1 + idx / 64; a warp's 32 consecutive elements share
      // one word, so the warp reduces them to one atomic.
      const int total = (w_last - s) * 64;
#pragma unroll
      for (int q = 0; q < kBlockOrIters; ++q) {
        const int idx = threadIdx.x + q * kReduceThreads;
        if (idx < total) {  // uniform per warp: total is a multiple of 64
          const uint64_t r = warp_or64(((keep >> (idx & 63)) & 1ull) ? v[q] : 0ull);
          if (lane == 0 && r != 0) atomicOr(&rem[s + 1 + (idx >> 6)], static_cast<unsigned long long>(r));
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int q = 0; q < kBlockOrIters; ++q) v[q] = next[q];
  }
}

// One warp resolves a category spanning at most kWarpSpan words. Other warps may work on the categories
// that share its first and last words; they touch other bits of those words only, through atomics.
__device__ void reduce_segment_warp(int a, int b, const uint64_t* __restrict__ mask, int wb, const uint64_t* diag,
                                    unsigned long long* rem, unsigned long long* kept) {
  const int w_first = a >> 6;
  const int w_last = (b - 1) >> 6;
  const int lane = threadIdx.x & 31;
  for (int s = w_first; s <= w_last; ++s) {
    // Another warp may be setting other bits of this word with atomicOr right now: a volatile load (a
    // relaxed load in the memory model) keeps the access free of a data race; this warp's own bits are
    // only ever set by this warp.
    const uint64_t word = *static_cast<const volatile unsigned long long*>(&rem[s]);
    const uint64_t avail = ~word & bit_range(max(a - 64 * s, 0), min(b - 64 * s, 64));
    const uint64_t keep = greedy_word(avail, diag + 64 * s);
    if (keep == 0) continue;
    if (lane == 0) atomicOr(&kept[s], static_cast<unsigned long long>(keep));
    const bool keep_lo = (keep >> lane) & 1ull;
    const bool keep_hi = (keep >> (lane + 32)) & 1ull;
    uint64_t v[kWarpSpan - 1];
#pragma unroll
    for (int q = 0; q < kWarpSpan - 1; ++q) {
      const int w = s + 1 + q;
      v[q] = 0;
      if (w <= w_last) {
        const uint64_t* tile = mask + (static_cast<int64_t>(s) * wb + w) * 64;
        if (keep_lo) v[q] |= tile[lane];
        if (keep_hi) v[q] |= tile[lane + 32];
      }
    }
#pragma unroll
    for (int q = 0; q < kWarpSpan - 1; ++q) {
      const int w = s + 1 + q;
      if (w <= w_last) {
        const uint64_t r = warp_or64(v[q]);
        if (lane == 0 && r != 0) atomicOr(&rem[w], static_cast<unsigned long long>(r));
      }
    }
    __syncwarp();  // the next word's `rem` is read by every lane
  }
}

// Greedy pass over chunk c (sorted positions r0 .. r0 + len - 1), given the boxes removed by earlier
// chunks (`removed`, one bit per position). Appends the kept positions, ascending, to kept_pos from
// chunk_off[c] on and writes chunk_off[c + 1]; cross_begin[c] is where, among them, the boxes of the
// chunk's last category start (the only ones that can suppress a later chunk's box). Batched mode also
// marks kept boxes by score rank in `flags`.
template <bool kBatched>
__global__ void __launch_bounds__(kReduceThreads)
    nms_chunk_reduce_kernel(const uint64_t* __restrict__ mask, int wb, int64_t r0, int len,
                            const uint64_t* __restrict__ cls, const uint64_t* __restrict__ removed, int c,
                            int32_t* __restrict__ chunk_off, int32_t* __restrict__ cross_begin,
                            int32_t* __restrict__ kept_pos, const int32_t* __restrict__ rank_of_pos,
                            uint8_t* __restrict__ flags) {
  __shared__ uint64_t diag[kChunk];
  __shared__ unsigned long long rem[kChunkWords];
  __shared__ unsigned long long kept[kChunkWords];
  __shared__ uint32_t start_bits[kChunkWords * 2];
  __shared__ int prefix[kChunkWords * 2];
  __shared__ int warp_totals[4];
  __shared__ uint16_t seg_start[kChunk + 1];
  __shared__ int block_segments[kMaxBlockSegments];
  __shared__ int num_segs;
  __shared__ int num_block_segs;
  __shared__ int total_kept;

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int nb = (len + 63) >> 6;
  const int nw32 = (len + 31) >> 5;
  const int64_t word0 = r0 >> 6;

  for (int k = tid; k < len; k += kReduceThreads) {
    const int s = k >> 6;
    diag[k] = mask[(static_cast<int64_t>(s) * wb + s) * 64 + (k & 63)];
  }
  for (int w = tid; w < nb; w += kReduceThreads) {
    rem[w] = removed[word0 + w];
    kept[w] = 0;
  }
  if (tid == 0) num_block_segs = 0;

  // Category runs of the chunk.
  if (kBatched) {
    for (int p0 = warp * 32; p0 < nw32 * 32; p0 += kReduceThreads) {
      const int p = p0 + lane;
      bool start = false;
      if (p < len) start = p == 0 || cls[r0 + p] != cls[r0 + p - 1];
      const unsigned bits = __ballot_sync(kFullWarp, start);
      if (lane == 0) start_bits[p0 >> 5] = bits;
    }
    __syncthreads();
    block_scan_popc(start_bits, nw32, prefix, warp_totals, &num_segs);
    for (int p = tid; p < len; p += kReduceThreads) {
      const uint32_t word = start_bits[p >> 5];
      const int bit = p & 31;
      if ((word >> bit) & 1u) {
        seg_start[prefix[p >> 5] + __popc(word & ((1u << bit) - 1u))] = static_cast<uint16_t>(p);
      }
    }
    if (tid == 0) seg_start[num_segs] = static_cast<uint16_t>(len);
  } else {
    if (tid == 0) {
      num_segs = 1;
      seg_start[0] = 0;
      seg_start[1] = static_cast<uint16_t>(len);
    }
  }
  __syncthreads();

  for (int seg = tid; seg < num_segs; seg += kReduceThreads) {
    const int a = seg_start[seg], b = seg_start[seg + 1];
    if (((b - 1) >> 6) - (a >> 6) + 1 > kWarpSpan) {
      block_segments[atomicAdd(&num_block_segs, 1)] = seg;
    }
  }
  __syncthreads();

  // Categories are independent: long ones one after the other with the whole block, then short ones in
  // parallel, one per warp.
  for (int k = 0; k < num_block_segs; ++k) {
    const int seg = block_segments[k];
    reduce_segment_block(seg_start[seg], seg_start[seg + 1], mask, wb, diag, rem, kept);
  }
  __syncthreads();
  for (int seg = warp; seg < num_segs; seg += kReduceWarps) {
    const int a = seg_start[seg], b = seg_start[seg + 1];
    if (((b - 1) >> 6) - (a >> 6) + 1 <= kWarpSpan) {
      reduce_segment_warp(a, b, mask, wb, diag, rem, kept);
    }
  }
  __syncthreads();

  // Append the kept positions in ascending order.
  const uint32_t* kept32 = reinterpret_cast<const uint32_t*>(kept);
  block_scan_popc(kept32, nw32, prefix, warp_totals, &total_kept);
  const int base = chunk_off[c];
  for (int p = tid; p < len; p += kReduceThreads) {
    const uint32_t word = kept32[p >> 5];
    const int bit = p & 31;
    if ((word >> bit) & 1u) {
      const int64_t pos = r0 + p;
      kept_pos[base + prefix[p >> 5] + __popc(word & ((1u << bit) - 1u))] = static_cast<int32_t>(pos);
      if (kBatched) flags[rank_of_pos[pos]] = 1;
    }
  }
  if (tid == 0) {
    chunk_off[c + 1] = base + total_kept;
    const int last = seg_start[num_segs - 1];
    const uint32_t word = kept32[last >> 5];
    cross_begin[c] = base + prefix[last >> 5] + __popc(word & ((1u << (last & 31)) - 1u));
  }
}

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
