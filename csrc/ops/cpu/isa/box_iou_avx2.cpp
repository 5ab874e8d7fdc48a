// box_iou family hot loop, ISA level: avx2.
#define PYDET_ISA_LEVEL 1
#include <cmath>
#include <cstdint>

#include "ops/cpu/box_iou_kernel.h"

#include "cpu/isa_begin.h"
#include "ops/cpu/box_iou_rows.h"
#include "cpu/isa_end.h"
