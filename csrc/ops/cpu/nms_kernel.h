// Per-ISA entry points of the greedy NMS kernels (bodies in nms_greedy.h).
#pragma once

#include <cstdint>

#include "common/macros.h"
#include "common/nms_math.h"
#include "cpu/cpu_capability.h"

namespace pydet_ops {
namespace cpu {

// One run of boxes in descending score order, as structure of arrays; area = (x2 - x1) * (y2 - y1).
template <typename T>
struct SortedBoxes {
  const T* x1;
  const T* y1;
  const T* x2;
  const T* y2;
  const T* area;
  int64_t n;
};

// Greedy NMS over `boxes` with torchvision's rule: box j is dropped when some kept box i before it has
// inter / (area_i + area_j - inter) > iou_threshold. Sets keep[k] to 1 or 0 for every k < boxes.n.
#define PYDET_GREEDY_NMS_DECL(T) void greedy_nms(const SortedBoxes<T>& boxes, double iou_threshold, uint8_t* keep)

template <typename T>
using GreedyNmsFn = void (*)(const SortedBoxes<T>&, double, uint8_t*);

PYDET_DECLARE_PER_ISA(PYDET_GREEDY_NMS_DECL(float))
PYDET_DECLARE_PER_ISA(PYDET_GREEDY_NMS_DECL(double))

}  // namespace cpu
}  // namespace pydet_ops
