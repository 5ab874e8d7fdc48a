// Per-ISA entry points of the pairwise overlap kernels (bodies in box_iou_rows.h).
#pragma once

#include <cstdint>

#include "common/box_math.h"
#include "cpu/cpu_capability.h"

namespace pydet_ops {
namespace cpu {

// Structure-of-arrays view of a set of boxes and the per-box terms the overlap measures need.
// `cx`, `cy` are only read by DIoU/CIoU, `atan_ratio` only by CIoU (may be null otherwise).
template <typename T>
struct BoxColumns {
  const T* x1;
  const T* y1;
  const T* x2;
  const T* y2;
  const T* area;
  const T* cx;
  const T* cy;
  const T* atan_ratio;
};

// Writes out[(i - row_begin) * m + j] = overlap(rows box i, cols box j) for i in [row_begin, row_end), j < m.
#define PYDET_OVERLAP_ROWS_DECL(T)                                                                       \
  void overlap_rows(box_math::IouKind kind, const BoxColumns<T>& rows, int64_t row_begin, int64_t row_end, \
                    const BoxColumns<T>& cols, int64_t m, T eps, T* out)

template <typename T>
using OverlapRowsFn = void (*)(box_math::IouKind, const BoxColumns<T>&, int64_t, int64_t, const BoxColumns<T>&, int64_t,
                               T, T*);

PYDET_DECLARE_PER_ISA(PYDET_OVERLAP_ROWS_DECL(float))
PYDET_DECLARE_PER_ISA(PYDET_OVERLAP_ROWS_DECL(double))

}  // namespace cpu
}  // namespace pydet_ops
