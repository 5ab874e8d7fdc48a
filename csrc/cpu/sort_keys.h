// Order-preserving integer keys and a stable LSD radix sort on them.
//
// NMS needs "indices by descending score, ties by ascending index, NaN first" (torch.sort's order) and
// batched NMS then a stable regrouping by class. Mapping floats and class ids to unsigned keys whose
// integer order is the wanted order turns both into one O(n) stable radix sort.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace pydet_ops {
namespace cpu {

// Ascending key order == descending score order; NaN (either sign) sorts first, -0 ties with +0.
template <typename T>
inline uint64_t descending_score_key(T score) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "float or double");
  using Bits = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
  constexpr Bits kSign = Bits(1) << (8 * sizeof(T) - 1);
  if (std::isnan(score)) return 0;
  if (score == T(0)) score = T(0);
  Bits bits;
  std::memcpy(&bits, &score, sizeof(T));
  const Bits ascending = (bits & kSign) ? static_cast<Bits>(~bits) : static_cast<Bits>(bits | kSign);
  // The largest finite-or-inf score has the largest `ascending`; NaN took 0, so shift everything up by one
  // after inverting. ~ascending is never the all-ones value for a non-NaN (that would be -NaN).
  return static_cast<uint64_t>(static_cast<Bits>(~ascending)) + 1;
}

// Ascending key order == ascending signed class id.
inline uint64_t class_key(int64_t id) {
  return static_cast<uint64_t>(id) ^ (uint64_t(1) << 63);
}

// Stably reorders `order` (indices into `keys`) by ascending keys[order[k]]. Digits where every key agrees
// are skipped, so small keys (class ids) cost one pass.
inline void stable_sort_by_key(std::vector<int32_t>& order, const std::vector<uint64_t>& keys) {
  const size_t n = order.size();
  if (n < 2) return;
  if (n < 256) {
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return keys[a] < keys[b]; });
    return;
  }
  uint64_t all_or = 0, all_and = ~uint64_t(0);
  for (int32_t i : order) {
    all_or |= keys[i];
    all_and &= keys[i];
  }
  const uint64_t varying = all_or ^ all_and;
  constexpr int kBits = 11;
  constexpr uint64_t kMask = (uint64_t(1) << kBits) - 1;
  std::vector<int32_t> scratch(n);
  std::vector<uint32_t> count(size_t(1) << kBits);
  for (int shift = 0; shift < 64; shift += kBits) {
    if (((varying >> shift) & kMask) == 0) continue;
    std::fill(count.begin(), count.end(), 0u);
    for (int32_t i : order) ++count[(keys[i] >> shift) & kMask];
    uint32_t sum = 0;
    for (auto& c : count) {
      const uint32_t c0 = c;
      c = sum;
      sum += c0;
    }
    for (int32_t i : order) scratch[count[(keys[i] >> shift) & kMask]++] = i;
    order.swap(scratch);
  }
}

}  // namespace cpu
}  // namespace pydet_ops
