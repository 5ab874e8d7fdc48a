// Order-preserving integer keys of NMS, shared by every backend.
//
// NMS needs "indices by descending score, ties by ascending index, NaN first" (torch.sort's order) and
// batched NMS then a stable regrouping by class. Mapping scores and class ids to unsigned keys whose integer
// order is the wanted order turns both into stable radix sorts.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/macros.h"

namespace pydet_ops {
namespace score_keys {

PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE uint32_t bits_of(float v) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(v);
#else
  uint32_t b;
  std::memcpy(&b, &v, sizeof(b));
  return b;
#endif
}

PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE uint64_t bits_of(double v) {
#ifdef __CUDA_ARCH__
  return static_cast<uint64_t>(__double_as_longlong(v));
#else
  uint64_t b;
  std::memcpy(&b, &v, sizeof(b));
  return b;
#endif
}

// Ascending key order == descending score order; NaN (either sign) sorts first, -0 ties with +0. The key
// has the width of the score (uint32_t for float, uint64_t for double).
template <typename T>
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE auto descending_score_key(T score) -> decltype(bits_of(score)) {
  using Bits = decltype(bits_of(score));
  constexpr Bits kSign = Bits(1) << (8 * sizeof(Bits) - 1);
  if (score != score) return Bits(0);
  if (score == T(0)) score = T(0);
  const Bits bits = bits_of(score);
  const Bits ascending = (bits & kSign) ? static_cast<Bits>(~bits) : static_cast<Bits>(bits | kSign);
  // The largest score has the largest `ascending`; NaN took 0, so shift everything up by one after
  // inverting. ~ascending is at most ~(+inf's key) < all ones for any non-NaN: no wrap-around.
  return static_cast<Bits>(static_cast<Bits>(~ascending) + Bits(1));
}

// Ascending key order == ascending signed class id.
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE uint64_t class_key(int64_t id) {
  return static_cast<uint64_t>(id) ^ (uint64_t(1) << 63);
}

}  // namespace score_keys
}  // namespace pydet_ops
