// Pairwise box overlap math shared by every backend.
//
// One definition of IoU / GIoU / DIoU / CIoU for a single pair of (x1, y1, x2, y2) boxes. The operation
// order mirrors torchvision's tensor formulas so that float32 results agree bit for bit wherever the
// formulas have no transcendental (IoU, GIoU, DIoU), and within an ulp or two for CIoU's atan.
//
// NaN rules (identical to torchvision): `clamp0` keeps NaN, so a NaN or an inf - inf anywhere in a pair
// gives NaN for that pair, never a silently clamped zero.
#pragma once

#include "common/macros.h"

namespace pydet_ops {
namespace box_math {

enum class IouKind : int { kIoU = 0, kGIoU = 1, kDIoU = 2, kCIoU = 3 };

template <typename T>
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE T max2(T a, T b) {
  return a > b ? a : b;
}

template <typename T>
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE T min2(T a, T b) {
  return a < b ? a : b;
}

// clamp(min=0) with torch semantics: NaN stays NaN.
template <typename T>
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE T clamp0(T v) {
  return v < T(0) ? T(0) : v;
}

template <typename T>
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE T box_area(T x1, T y1, T x2, T y2) {
  return (x2 - x1) * (y2 - y1);
}

// Per-box quantities that every pair needs; computed once per box, not once per pair.
template <typename T>
struct BoxTerms {
  T x1, y1, x2, y2;
  T area;
  T cx, cy;         // centre (DIoU, CIoU)
  T atan_ratio;     // atan(w / h) (CIoU)
};

// Overlap measure of box a (row) against box b (column). `eps` is only used by DIoU and CIoU.
template <IouKind kKind, typename T>
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE T pairwise_overlap(
    T ax1, T ay1, T ax2, T ay2, T a_area, T a_cx, T a_cy, T a_atan,
    T bx1, T by1, T bx2, T by2, T b_area, T b_cx, T b_cy, T b_atan,
    T eps, T four_over_pi_sq) {
  const T w = clamp0(min2(ax2, bx2) - max2(ax1, bx1));
  const T h = clamp0(min2(ay2, by2) - max2(ay1, by1));
  const T inter = w * h;
  const T uni = a_area + b_area - inter;
  const T iou = inter / uni;
  if (kKind == IouKind::kIoU) {
    return iou;
  }
  // Smallest enclosing box.
  const T wi = clamp0(max2(ax2, bx2) - min2(ax1, bx1));
  const T hi = clamp0(max2(ay2, by2) - min2(ay1, by1));
  if (kKind == IouKind::kGIoU) {
    const T area_i = wi * hi;
    return iou - (area_i - uni) / area_i;
  }
  const T diag_sq = wi * wi + hi * hi + eps;
  const T dx = a_cx - b_cx;
  const T dy = a_cy - b_cy;
  const T diou = iou - (dx * dx + dy * dy) / diag_sq;
  if (kKind == IouKind::kDIoU) {
    return diou;
  }
  const T dt = a_atan - b_atan;
  const T v = four_over_pi_sq * (dt * dt);
  const T alpha = v / (T(1) - iou + v + eps);
  return diou - alpha * v;
}

}  // namespace box_math
}  // namespace pydet_ops
