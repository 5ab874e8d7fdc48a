// RoI align and RoI pool loops, ISA level: avx512.
#define PYDET_ISA_LEVEL 2
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/roi_align_math.h"
#include "cpu/transpose.h"
#include "cpu/element_types.h"
#include "ops/cpu/roi_align_kernel.h"

#include "cpu/isa_begin.h"
#include "ops/cpu/roi_align_loops.h"
#include "ops/cpu/roi_pool_loops.h"
#include "cpu/isa_end.h"
