// Device code of the CUDA NMS kernels (ops/cuda/nms_kernel.cu), second part: the greedy pass over one
// chunk (step 3b), one block per chunk with the removed bits and the mask's diagonal words in shared
// memory; long categories are resolved by the whole block, short ones by one warp each.
#pragma once

#include <cstdint>

#include "cuda/nms_mask.cuh"

namespace pydet_ops {
namespace cuda {
namespace nms_detail {

// ---------------------------------------------------------------------------------------------------------
// b. Greedy pass over one chunk, one block.

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

}  // namespace nms_detail
}  // namespace cuda
}  // namespace pydet_ops
