// RoI align geometry and bilinear sampling, shared by every backend.
//
// Written in the operation order of torchvision's kernels so float32 results agree bit for bit: where a
// RoI's bins start, how many sampling points each bin gets, where each point lies, and which four pixels
// it reads with which weights.
#pragma once

#include <cmath>

#include "common/macros.h"

namespace pydet_ops {
namespace roi_math {

// Where the bins of one RoI lie on the feature map, and how densely they are sampled.
template <typename T>
struct RoiAlignGeometry {
  T start_h, start_w;  // top-left corner in feature-map coordinates
  T bin_h, bin_w;      // bin size
  int grid_h, grid_w;  // sampling points per bin along each axis
  T count;             // grid_h * grid_w, at least 1 (the divisor of the bin average)
};

// `box` is (x1, y1, x2, y2) in image coordinates. A negative or zero `sampling_ratio` means adaptive:
// ceil(roi size / pooled size) points per bin. With aligned=false, RoIs smaller than one pixel are
// stretched to one pixel (torchvision's legacy rule). A RoI with a NaN or infinite coordinate (after
// scaling) gets a zero-point grid: it pools to zero and receives no gradient. torchvision leaves such RoIs
// undefined; with aligned=false it widens an x2 / y2 of -inf to one pixel.
template <typename T>
PYDET_HOST_DEVICE inline RoiAlignGeometry<T> roi_align_geometry(T x1, T y1, T x2, T y2, T spatial_scale,
                                                                int pooled_h, int pooled_w, int sampling_ratio,
                                                                bool aligned) {
  RoiAlignGeometry<T> g;
  const T offset = aligned ? T(0.5) : T(0);
  g.start_w = x1 * spatial_scale - offset;
  g.start_h = y1 * spatial_scale - offset;
  const T end_w = x2 * spatial_scale - offset;
  const T end_h = y2 * spatial_scale - offset;
  if (!(std::isfinite(g.start_w) && std::isfinite(g.start_h) && std::isfinite(end_w) && std::isfinite(end_h))) {
    g.bin_h = g.bin_w = T(0);
    g.grid_h = g.grid_w = 0;
    g.count = T(1);
    return g;
  }
  T roi_w = end_w - g.start_w;
  T roi_h = end_h - g.start_h;
  if (!aligned) {
    roi_w = roi_w < T(1) ? T(1) : roi_w;
    roi_h = roi_h < T(1) ? T(1) : roi_h;
  }
  g.bin_h = roi_h / static_cast<T>(pooled_h);
  g.bin_w = roi_w / static_cast<T>(pooled_w);
  if (sampling_ratio > 0) {
    g.grid_h = sampling_ratio;
    g.grid_w = sampling_ratio;
  } else {
    // ceil of a huge size would overflow int: such a RoI gets no sampling points.
    const T ch = std::ceil(roi_h / static_cast<T>(pooled_h));
    const T cw = std::ceil(roi_w / static_cast<T>(pooled_w));
    g.grid_h = (ch >= T(0) && ch < T(1 << 20)) ? static_cast<int>(ch) : 0;
    g.grid_w = (cw >= T(0) && cw < T(1 << 20)) ? static_cast<int>(cw) : 0;
  }
  const int n = g.grid_h * g.grid_w;
  g.count = static_cast<T>(n > 1 ? n : 1);
  return g;
}

// Coordinate of sampling point `i` of bin `p` along one axis.
template <typename T>
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE T sample_coord(T start, T bin, int p, int i, int grid) {
  return start + static_cast<T>(p) * bin + static_cast<T>(i + .5f) * bin / static_cast<T>(grid);
}

// Bilinear interpolation along one axis: the two neighbouring pixels of coordinate v and the weight of
// each (`frac` for `high`, `rest` = 1 - frac for `low`). Bilinear sampling is separable: a point's taps
// are those of its y and of its x, so a RoI's taps can be worked out once per row and once per column of
// sampling points.
template <typename T>
struct AxisTap {
  int low, high;
  T frac, rest;
};

// Returns false for v outside [-1, size] (or NaN): such a point contributes nothing.
template <typename T>
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE bool axis_tap(T v, int size, AxisTap<T>& t) {
  if (!(v >= T(-1) && v <= static_cast<T>(size))) return false;
  if (v <= T(0)) v = T(0);
  t.low = static_cast<int>(v);
  if (t.low >= size - 1) {
    t.high = t.low = size - 1;
    v = static_cast<T>(t.low);
  } else {
    t.high = t.low + 1;
  }
  t.frac = v - static_cast<T>(t.low);
  t.rest = T(1) - t.frac;
  return true;
}

// The four pixels around a sampling point (y, x) and their bilinear weights, from the taps of its y and x
// (a point outside [-1, height] x [-1, width] has no taps: axis_tap returns false for it).
template <typename T>
struct BilinearTaps {
  int y_low, x_low, y_high, x_high;
  T w1, w2, w3, w4;  // (y_low, x_low), (y_low, x_high), (y_high, x_low), (y_high, x_high)
};

template <typename T>
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE void combine_taps(const AxisTap<T>& ty, const AxisTap<T>& tx,
                                                        BilinearTaps<T>& t) {
  t.y_low = ty.low;
  t.y_high = ty.high;
  t.x_low = tx.low;
  t.x_high = tx.high;
  t.w1 = ty.rest * tx.rest;
  t.w2 = ty.rest * tx.frac;
  t.w3 = ty.frac * tx.rest;
  t.w4 = ty.frac * tx.frac;
}


}  // namespace roi_math
}  // namespace pydet_ops

namespace pydet_ops {
namespace roi_math {

// RoI max pooling (Fast R-CNN) geometry: the RoI snapped to whole feature-map pixels, as torchvision does.
// Coordinates beyond +-2^28 pixels are clamped there, so sizes and bin bounds stay far inside int range;
// a NaN coordinate makes the RoI empty (every bin outputs 0 with argmax -1).
struct RoiPoolGeometry {
  int start_h, start_w;
  int roi_h, roi_w;
  bool valid;
};

template <typename T>
PYDET_HOST_DEVICE inline int snap_to_pixel(T v) {
  const T limit = static_cast<T>(1 << 28);
  T r = std::round(v);
  r = r < -limit ? -limit : (r > limit ? limit : r);
  return static_cast<int>(r);
}

template <typename T>
PYDET_HOST_DEVICE inline RoiPoolGeometry roi_pool_geometry(T x1, T y1, T x2, T y2, T spatial_scale) {
  RoiPoolGeometry g;
  g.valid = !(std::isnan(x1) || std::isnan(y1) || std::isnan(x2) || std::isnan(y2));
  if (!g.valid) {
    g.start_h = g.start_w = 0;
    g.roi_h = g.roi_w = 1;
    return g;
  }
  g.start_w = snap_to_pixel(x1 * spatial_scale);
  g.start_h = snap_to_pixel(y1 * spatial_scale);
  const int end_w = snap_to_pixel(x2 * spatial_scale);
  const int end_h = snap_to_pixel(y2 * spatial_scale);
  // Malformed RoIs are forced to 1x1.
  g.roi_w = end_w - g.start_w + 1 > 1 ? end_w - g.start_w + 1 : 1;
  g.roi_h = end_h - g.start_h + 1 > 1 ? end_h - g.start_h + 1 : 1;
  return g;
}

// Pixel range [begin, end) of bin `p` of `pooled` bins over `size` pixels starting at `start`, clipped to
// [0, limit).
template <typename T>
PYDET_HOST_DEVICE inline void roi_pool_bin(int p, int pooled, int size, int start, int limit, int& begin, int& end) {
  const T bin = static_cast<T>(size) / static_cast<T>(pooled);
  begin = static_cast<int>(std::floor(static_cast<T>(p) * bin)) + start;
  end = static_cast<int>(std::ceil(static_cast<T>(p + 1) * bin)) + start;
  begin = begin < 0 ? 0 : (begin > limit ? limit : begin);
  end = end < 0 ? 0 : (end > limit ? limit : end);
}

}  // namespace roi_math
}  // namespace pydet_ops

namespace pydet_ops {
namespace roi_math {

// FPN level of a box (torchvision's LevelMapper, Feature Pyramid Networks eq. 1):
//   floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6), clamped to [k_min, k_max],
// returned relative to k_min. Computed in T with torchvision's operation order. A box with a NaN or
// negative area has no level (-1): its pooled output stays zero.
template <typename T>
PYDET_HOST_DEVICE inline int fpn_level(T x1, T y1, T x2, T y2, int canonical_scale, int canonical_level, int k_min,
                                       int k_max) {
  const T area = (x2 - x1) * (y2 - y1);
  const T s = std::sqrt(area);
  const T level = std::floor(static_cast<T>(canonical_level) + std::log2(s / static_cast<T>(canonical_scale)) +
                             static_cast<T>(1e-6));
  if (std::isnan(level)) return -1;
  const T clamped = level < static_cast<T>(k_min) ? static_cast<T>(k_min)
                                                  : (level > static_cast<T>(k_max) ? static_cast<T>(k_max) : level);
  return static_cast<int>(clamped) - k_min;
}

}  // namespace roi_math
}  // namespace pydet_ops
