// Box coding math shared by every backend: the (dx, dy, dw, dh) parameterisation of R-CNN.
//
// encode: how to move and scale `proposal` onto `reference` (a ground-truth box), scaled by the weights:
//   dx = wx * (ref_cx - prop_cx) / prop_w    dw = ww * log(ref_w / prop_w)    (dy, dh alike)
// decode: the inverse, with dw and dh clamped from above at `clip` before exp so that no box explodes:
//   cx = dx / wx * w + box_cx    w' = exp(min(dw / ww, clip)) * w    corners = centre -/+ w' / 2
//
// The operation order is torchvision's BoxCoder, one tensor op per step. `Acc` is the arithmetic type and
// every step rounds back to the storage type `T` (a no-op for float and double; for float16 and bfloat16
// it reproduces the rounding of a chain of reduced-precision tensor ops). No fused multiply-add may
// contract these expressions (-ffp-contract=off on the host, --fmad=false on the device).
#pragma once

#include <cmath>

#include "common/float_math.h"
#include "common/macros.h"

namespace pydet_ops {
namespace box_coding {

// exp and log: float arguments correctly rounded and identical on every backend (common/float_math.h);
// torch's own float exp and log are within an ulp or two of these. double uses the math library.
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE float exp_(float v) {
  return float_math::exp(v);
}
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE double exp_(double v) {
  return ::exp(v);
}
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE float log_(float v) {
  return float_math::log(v);
}
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE double log_(double v) {
  return ::log(v);
}

// Rounds an intermediate through the storage type.
template <typename T, typename Acc>
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE Acc rnd(Acc v) {
  return static_cast<Acc>(static_cast<T>(v));
}

// Width, height and centre of one (x1, y1, x2, y2) box.
template <typename Acc>
struct BoxFrame {
  Acc w, h, cx, cy;
};

template <typename T, typename Acc>
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE BoxFrame<Acc> box_frame(Acc x1, Acc y1, Acc x2, Acc y2) {
  BoxFrame<Acc> f;
  f.w = rnd<T>(x2 - x1);
  f.h = rnd<T>(y2 - y1);
  f.cx = rnd<T>(x1 + rnd<T>(Acc(0.5) * f.w));
  f.cy = rnd<T>(y1 + rnd<T>(Acc(0.5) * f.h));
  return f;
}

// Weights as the kernels use them. Encode multiplies by weights held in the boxes' dtype; decode divides
// by them as scalars of the arithmetic type; the clip is compared in the storage type.
template <typename Acc>
struct CoderWeights {
  Acc wx, wy, ww, wh;
  Acc clip;
};

// Deltas taking `proposal` (frame p) to `reference` (frame g).
template <typename T, typename Acc>
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE void encode_one(const BoxFrame<Acc>& g, const BoxFrame<Acc>& p,
                                                      const CoderWeights<Acc>& wt, T* out) {
  out[0] = static_cast<T>(rnd<T>(wt.wx * rnd<T>(g.cx - p.cx)) / p.w);
  out[1] = static_cast<T>(rnd<T>(wt.wy * rnd<T>(g.cy - p.cy)) / p.h);
  out[2] = static_cast<T>(wt.ww * rnd<T>(log_(rnd<T>(g.w / p.w))));
  out[3] = static_cast<T>(wt.wh * rnd<T>(log_(rnd<T>(g.h / p.h))));
}

// torch.clamp(v, max=hi): NaN stays NaN.
template <typename Acc>
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE Acc clamp_max(Acc v, Acc hi) {
  return v > hi ? hi : v;
}

// The box that deltas (dx, dy, dw, dh) make of the box with frame b.
template <typename T, typename Acc>
PYDET_HOST_DEVICE PYDET_ALWAYS_INLINE void decode_one(Acc dx, Acc dy, Acc dw, Acc dh, const BoxFrame<Acc>& b,
                                                      const CoderWeights<Acc>& wt, T* out) {
  dx = rnd<T>(dx / wt.wx);
  dy = rnd<T>(dy / wt.wy);
  dw = clamp_max(rnd<T>(dw / wt.ww), wt.clip);
  dh = clamp_max(rnd<T>(dh / wt.wh), wt.clip);
  const Acc cx = rnd<T>(rnd<T>(dx * b.w) + b.cx);
  const Acc cy = rnd<T>(rnd<T>(dy * b.h) + b.cy);
  const Acc half_w = rnd<T>(Acc(0.5) * rnd<T>(rnd<T>(exp_(dw)) * b.w));
  const Acc half_h = rnd<T>(Acc(0.5) * rnd<T>(rnd<T>(exp_(dh)) * b.h));
  out[0] = static_cast<T>(cx - half_w);
  out[1] = static_cast<T>(cy - half_h);
  out[2] = static_cast<T>(cx + half_w);
  out[3] = static_cast<T>(cy + half_h);
}

}  // namespace box_coding
}  // namespace pydet_ops
