// Reused memory for the kernels' large CPU tensors, results and temporaries alike.
//
// A fresh multi-megabyte buffer comes straight from mmap, and its first write costs a page fault per page;
// on virtual machines that is several times the kernel's own pass over it (a 50 MB RoI align output:
// 19 ms to allocate and zero, most of it faults; converting a 55 MB map to channels_last: 38 ms into a new
// buffer, 15 ms into a touched one). Large tensors here are allocated from a pool: when the last reference to
// one goes away, its memory goes back to the pool, already faulted in, for the next call of a similar size.
// They are ordinary (resizable) CPU tensors otherwise.
//
// The pool keeps at most PYDET_OPS_CPU_CACHE_MB megabytes of idle memory (default 512; 0 turns it off) and
// pydet_ops.empty_cpu_cache() releases it, as torch.cuda.empty_cache() does for CUDA's caching allocator.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace pydet_ops {
namespace cpu {

// An uninitialised CPU tensor of `shape` in `format`: pooled memory when large (huge pages, faulted in).
at::Tensor pooled_empty(at::IntArrayRef shape, const at::TensorOptions& options, at::MemoryFormat format);

// Idle bytes kept for reuse now, and releasing them.
int64_t pool_cached_bytes();
void empty_pool();

}  // namespace cpu
}  // namespace pydet_ops
