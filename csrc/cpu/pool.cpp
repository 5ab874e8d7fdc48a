#include "cpu/pool.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace pydet_ops {
namespace cpu {
namespace {

constexpr size_t kHugePage = size_t(1) << 21;
constexpr size_t kMinPooledBytes = size_t(1) << 23;  // smaller tensors come from the ordinary allocator

// Advises [ptr, ptr + bytes) (2 MiB aligned) as transparent huge pages and faults it in, in one call:
// threads that later write the buffer in interleaved order would otherwise queue on the same faults.
void advise_and_populate(void* ptr, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  (void)madvise(ptr, bytes, MADV_HUGEPAGE);  // advice only: without THP support, ordinary pages
  constexpr int kPopulateWrite = 23;         // MADV_POPULATE_WRITE, Linux >= 5.14; ignored before
  (void)madvise(ptr, bytes, kPopulateWrite);
#else
  (void)ptr;
  (void)bytes;
#endif
}

size_t limit_from_env() {
  const char* env = std::getenv("PYDET_OPS_CPU_CACHE_MB");
  if (env == nullptr || *env == '\0') return size_t(512) << 20;
  long long mb = -1;
  try {
    mb = std::stoll(env);
  } catch (const std::logic_error&) {
  }
  TORCH_CHECK(mb >= 0, "PYDET_OPS_CPU_CACHE_MB must be a non-negative number of megabytes, got '", env, "'");
  return static_cast<size_t>(mb) << 20;
}

struct Block {
  void* ptr;
  size_t bytes;
};

class Pool {
 public:
  static Pool& instance() {
    static Pool* pool = new Pool();  // never destroyed: tensors may be freed during exit
    return *pool;
  }

  size_t limit() const { return limit_; }

  // A block of at least `bytes` and at most twice that (a small request does not pin a large block).
  Block acquire(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      size_t best = idle_.size();
      for (size_t i = 0; i < idle_.size(); ++i) {
        const size_t b = idle_[i].bytes;
        if (b >= bytes && b <= 2 * bytes && (best == idle_.size() || b < idle_[best].bytes)) best = i;
      }
      if (best != idle_.size()) {
        const Block block = idle_[best];
        idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(best));
        cached_ -= block.bytes;
        return block;
      }
    }
    const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    void* ptr = std::aligned_alloc(kHugePage, rounded);
    TORCH_CHECK(ptr != nullptr, "pydet_ops: out of memory allocating ", rounded, " bytes");
    advise_and_populate(ptr, rounded);
    return Block{ptr, rounded};
  }

  void release(Block block) {
    std::vector<Block> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      idle_.push_back(block);
      cached_ += block.bytes;
      while (cached_ > limit_ && !idle_.empty()) {  // oldest out first
        evicted.push_back(idle_.front());
        cached_ -= idle_.front().bytes;
        idle_.erase(idle_.begin());
      }
    }
    for (const Block& b : evicted) std::free(b.ptr);
  }

  size_t cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }

  void clear() {
    std::vector<Block> all;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      all.swap(idle_);
      cached_ = 0;
    }
    for (const Block& b : all) std::free(b.ptr);
  }

 private:
  Pool() : limit_(limit_from_env()) {}

  std::mutex mutex_;
  std::vector<Block> idle_;
  size_t cached_ = 0;
  const size_t limit_;
};

void release_block(void* ctx) {
  Block* block = static_cast<Block*>(ctx);
  Pool::instance().release(*block);
  delete block;
}

// Large requests from the pool, small ones from PyTorch's CPU allocator (also when a pooled tensor is
// resized down to a small size).
class PoolAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    Pool& pool = Pool::instance();
    if (n < kMinPooledBytes || pool.limit() == 0) return c10::GetCPUAllocator()->allocate(n);
    Block* block = new Block(pool.acquire(n));
    return {block->ptr, block, &release_block, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

PoolAllocator& allocator() {
  static PoolAllocator* a = new PoolAllocator();
  return *a;
}

}  // namespace

at::Tensor pooled_empty(at::IntArrayRef shape, const at::TensorOptions& options, at::MemoryFormat format) {
  TORCH_INTERNAL_ASSERT(options.device().is_cpu());
  return at::Tensor(at::detail::empty_generic(shape, &allocator(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                              c10::typeMetaToScalarType(options.dtype()), format));
}

int64_t pool_cached_bytes() {
  return static_cast<int64_t>(Pool::instance().cached());
}

void empty_pool() {
  Pool::instance().clear();
}

TORCH_LIBRARY_FRAGMENT(pydet_ops, m) {
  m.def("_cpu_cache_bytes() -> int", &pool_cached_bytes);
  m.def("_empty_cpu_cache() -> ()", &empty_pool);
}

}  // namespace cpu
}  // namespace pydet_ops
