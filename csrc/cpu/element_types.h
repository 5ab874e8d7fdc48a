// Storage types of the kernels' tensors and their conversion to and from the arithmetic type, written as
// branch-light integer/float code that vectorises inside the per-ISA regions (no library calls).
//
// float16 and bfloat16 are read as raw 16-bit patterns and computed in float32; results are rounded back
// to nearest-even, as c10::Half / c10::BFloat16 do.
#pragma once

#include <cstdint>

#include "common/macros.h"

namespace pydet_ops {
namespace cpu {

struct HalfBits {
  uint16_t bits;
};
struct BFloat16Bits {
  uint16_t bits;
};

template <typename E>
struct Element;

template <>
struct Element<float> {
  using Acc = float;
  static PYDET_ALWAYS_INLINE float load(float v) { return v; }
  static PYDET_ALWAYS_INLINE float store(float v) { return v; }
};

template <>
struct Element<double> {
  using Acc = double;
  static PYDET_ALWAYS_INLINE double load(double v) { return v; }
  static PYDET_ALWAYS_INLINE double store(double v) { return v; }
};

template <>
struct Element<BFloat16Bits> {
  using Acc = float;
  static PYDET_ALWAYS_INLINE float load(BFloat16Bits v) {
    return __builtin_bit_cast(float, static_cast<uint32_t>(v.bits) << 16);
  }
  static PYDET_ALWAYS_INLINE BFloat16Bits store(float f) {
    const uint32_t u = __builtin_bit_cast(uint32_t, f);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
    return BFloat16Bits{static_cast<uint16_t>(nan ? 0x7fc0u : rounded)};
  }
};

template <>
struct Element<HalfBits> {
  using Acc = float;
  static PYDET_ALWAYS_INLINE float load(HalfBits v) {
    const uint32_t sign = static_cast<uint32_t>(v.bits & 0x8000u) << 16;
    const uint32_t magnitude = v.bits & 0x7fffu;
    // Exponent and mantissa moved into float position, then rebiased by 2^(127-15) with one exact multiply
    // (this also handles subnormals); infinities and NaNs keep an all-ones exponent.
    const float scaled = __builtin_bit_cast(float, magnitude << 13) * 0x1.0p112f;
    const uint32_t finite_bits = __builtin_bit_cast(uint32_t, scaled);
    const uint32_t special_bits = (magnitude << 13) | 0x7f800000u;
    return __builtin_bit_cast(float, (magnitude >= 0x7c00u ? special_bits : finite_bits) | sign);
  }
  static PYDET_ALWAYS_INLINE HalfBits store(float f) {
    uint32_t x = __builtin_bit_cast(uint32_t, f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    uint32_t h;
    if (x > 0x7f800000u) {
      h = 0x7e00u;  // NaN
    } else if (x >= 0x477ff000u) {
      h = 0x7c00u;  // rounds to infinity
    } else if (x < 0x38800000u) {
      // Half subnormal or zero: adding 0.5 puts the value's half-ulp grid (2^-24) in the float mantissa,
      // and the float addition rounds to nearest-even.
      h = __builtin_bit_cast(uint32_t, __builtin_bit_cast(float, x) + 0.5f) - 0x3f000000u;
    } else {
      // Normal: rebias the exponent by (15 - 127) and round the 13 dropped bits to nearest-even.
      h = (x + 0xc8000fffu + ((x >> 13) & 1u)) >> 13;
    }
    return HalfBits{static_cast<uint16_t>(h | sign)};
  }
};

}  // namespace cpu
}  // namespace pydet_ops
