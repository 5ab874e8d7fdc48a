// The suppression test of NMS, shared by every backend.
#pragma once

#include <cmath>
#include <limits>

#include "common/macros.h"

namespace pydet_ops {
namespace nms_math {

// Overlap of kept box i (ix1..iarea) with a later box j, written exactly as torchvision's CPU kernel
// computes it: the std::max / std::min argument order fixes the result for NaN coordinates (a NaN width or
// height counts as 0). Not box_math::pairwise_overlap, whose clamp keeps NaN: NMS has its own rule.
template <typename T>
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE T nms_overlap(T ix1, T iy1, T ix2, T iy2, T iarea, T jx1, T jy1, T jx2, T jy2,
                                                    T jarea) {
  const T xx1 = ix1 < jx1 ? jx1 : ix1;
  const T yy1 = iy1 < jy1 ? jy1 : iy1;
  const T xx2 = jx2 < ix2 ? jx2 : ix2;
  const T yy2 = jy2 < iy2 ? jy2 : iy2;
  const T dw = xx2 - xx1;
  const T dh = yy2 - yy1;
  const T w = T(0) < dw ? dw : T(0);
  const T h = T(0) < dh ? dh : T(0);
  const T inter = w * h;
  return inter / (iarea + jarea - inter);
}

// The largest T that is <= threshold, so that `ovr > t` in T decides exactly as torchvision's
// `ovr > iou_threshold` does after promoting ovr to double. NaN stays NaN (suppresses nothing).
template <typename T>
inline T threshold_in(double threshold) {
  T t = static_cast<T>(threshold);
  if (static_cast<double>(t) > threshold) {
    t = std::nextafter(t, -std::numeric_limits<T>::infinity());
  }
  return t;
}

}  // namespace nms_math
}  // namespace pydet_ops
