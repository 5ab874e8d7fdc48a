// A stable LSD radix sort on the order-preserving keys of common/score_keys.h (NMS's score order and its
// regrouping by class, each one O(n) sort).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common/score_keys.h"

namespace pydet_ops {
namespace cpu {

// The keys of common/score_keys.h, widened to 64 bits for one radix sort over either width.
template <typename T>
inline uint64_t descending_score_key(T score) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "float or double");
  return static_cast<uint64_t>(score_keys::descending_score_key(score));
}

using score_keys::class_key;

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
