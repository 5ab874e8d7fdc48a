// Greedy NMS, ISA level: avx512.
#define PYDET_ISA_LEVEL 2
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "ops/cpu/nms_kernel.h"

#include "cpu/isa_begin.h"
#include "ops/cpu/nms_greedy.h"
#include "cpu/isa_end.h"
