// Box coding float32 loops, ISA level: avx2.
#define PYDET_ISA_LEVEL 1
#include <cstdint>

#include "ops/cpu/box_coder_kernel.h"

#include "cpu/isa_begin.h"
#include "ops/cpu/box_coder_rows.h"
#include "cpu/isa_end.h"
