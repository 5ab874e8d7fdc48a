// Loads and stores of one box (four consecutive values) for the box coding and anchor kernels: with `kVec`
// the box moves in aligned accesses of up to 16 bytes (one for float, two for double), so a warp touches
// whole sectors in one instruction instead of four strided ones; callers pick `kVec` after checking
// `quad_aligned` on every pointer.
#pragma once

#include <cstdint>

namespace pydet_ops {
namespace cuda {

template <typename T>
struct Quad {
  static constexpr int kBytes = 4 * sizeof(T) < 16 ? static_cast<int>(4 * sizeof(T)) : 16;
  static constexpr int kPer = kBytes / static_cast<int>(sizeof(T));  // values per access
  struct alignas(kBytes) Part {
    T v[kPer];
  };
};

template <typename T>
inline bool quad_aligned(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % Quad<T>::kBytes == 0;
}

template <typename T, bool kVec>
__device__ __forceinline__ void load_quad(const T* __restrict__ p, T (&v)[4]) {
  if constexpr (kVec) {
    using Part = typename Quad<T>::Part;
    constexpr int kPer = Quad<T>::kPer;
    const Part* q = reinterpret_cast<const Part*>(p);
#pragma unroll
    for (int s = 0; s < 4 / kPer; ++s) {
      const Part part = q[s];
#pragma unroll
      for (int j = 0; j < kPer; ++j) v[s * kPer + j] = part.v[j];
    }
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = p[j];
  }
}

template <typename T, bool kVec>
__device__ __forceinline__ void store_quad(T* __restrict__ p, const T (&v)[4]) {
  if constexpr (kVec) {
    using Part = typename Quad<T>::Part;
    constexpr int kPer = Quad<T>::kPer;
    Part* q = reinterpret_cast<Part*>(p);
#pragma unroll
    for (int s = 0; s < 4 / kPer; ++s) {
      Part part;
#pragma unroll
      for (int j = 0; j < kPer; ++j) part.v[j] = v[s * kPer + j];
      q[s] = part;
    }
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) p[j] = v[j];
  }
}

}  // namespace cuda
}  // namespace pydet_ops
