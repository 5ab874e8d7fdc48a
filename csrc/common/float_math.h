// exp and log of float arguments, correctly rounded to float in all but a vanishing fraction of cases
// (the result is computed in double to ~1e-15 relative error, then rounded once), written as plain branch-free
// arithmetic: the same bits on every backend, and loops calling them vectorise (no library call).
//
// Special values follow IEEE/C: exp(NaN) = NaN, exp(+inf) = inf, exp(-inf) = 0, overflow -> inf,
// underflow -> 0 (or a subnormal); log(NaN) = NaN, log(x < 0) = NaN, log(0) = -inf, log(inf) = inf.
// Both require IEEE double arithmetic without fused multiply-add contraction.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/macros.h"

namespace pydet_ops {
namespace float_math {

PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE int64_t bits_of(double v) {
  int64_t b;
  memcpy(&b, &v, sizeof(b));
  return b;
}

PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE double from_bits(int64_t b) {
  double v;
  memcpy(&v, &b, sizeof(v));
  return v;
}

// ln 2 split so that n * kLn2Hi is exact for |n| < 2^11 (kLn2Hi has 32 significant bits).
constexpr double kLn2Hi = 6.93147180369123816490e-01;
constexpr double kLn2Lo = 1.90821492927058770002e-10;

PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE float exp(float xf) {
  double x = static_cast<double>(xf);
  // Beyond these bounds the float result is inf or 0 anyway; clamping keeps 2^n a normal double.
  // (NaN fails both comparisons and stays NaN.)
  x = x < -110.0 ? -110.0 : x;
  x = x > 100.0 ? 100.0 : x;
  // n = round(x / ln 2) by the 1.5 * 2^52 shifter: t's low bits hold n as an integer.
  constexpr double kShifter = 6755399441055744.0;
  const double t = x * 1.44269504088896338700e+00 + kShifter;
  const double n = t - kShifter;
  const double r = (x - n * kLn2Hi) - n * kLn2Lo;  // |r| <= ln2 / 2
  // exp(r): Taylor series to r^12 / 12! (truncation < 2e-16 relative on |r| <= 0.347).
  double p = 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const int64_t ni = bits_of(t) - bits_of(kShifter);
  const double scale = from_bits((ni + 1023) << 52);
  return static_cast<float>(p * scale);
}

PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE float log(float xf) {
  const double x = static_cast<double>(xf);
  // x = m * 2^e with m in [sqrt(1/2), sqrt(2)); every positive finite float is a normal double.
  const int64_t b = bits_of(x);
  int64_t e = ((b >> 52) & 0x7ff) - 1023;
  double m = from_bits((b & 0x000fffffffffffffLL) | 0x3ff0000000000000LL);
  // (Both sides are computed and one is selected: branch-free, so loops if-convert and vectorise.)
  const bool high = m > 1.41421356237309504880;
  const double m_half = m * 0.5;
  const int64_t e_up = e + 1;
  m = high ? m_half : m;
  e = high ? e_up : e;
  // log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172: odd series to s^21 (< 1e-17 truncation).
  const double s = (m - 1.0) / (m + 1.0);
  const double z = s * s;
  double p = 1.0 / 21.0;
  p = p * z + 1.0 / 19.0;
  p = p * z + 1.0 / 17.0;
  p = p * z + 1.0 / 15.0;
  p = p * z + 1.0 / 13.0;
  p = p * z + 1.0 / 11.0;
  p = p * z + 1.0 / 9.0;
  p = p * z + 1.0 / 7.0;
  p = p * z + 1.0 / 5.0;
  p = p * z + 1.0 / 3.0;
  p = p * z + 1.0;
  const double ed = static_cast<double>(e);
  double r = ed * kLn2Hi + (ed * kLn2Lo + 2.0 * s * p);
  const double inf = from_bits(0x7ff0000000000000LL);
  const double nan = from_bits(0x7ff8000000000000LL);
  r = x == inf ? inf : r;
  r = x > 0.0 ? r : (x == 0.0 ? -inf : nan);
  return static_cast<float>(r);
}

}  // namespace float_math
}  // namespace pydet_ops
