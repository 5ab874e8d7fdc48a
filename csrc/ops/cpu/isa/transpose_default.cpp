// 32-bit block transpose (layout conversion), ISA level: default.
#define PYDET_ISA_LEVEL 0
#include <immintrin.h>

#include <cstdint>

#include "cpu/transpose.h"

// GCC 12's AVX-512 intrinsics headers trip -Wuninitialized on their own _mm512_undefined placeholders.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "cpu/isa_begin.h"
#include "cpu/transpose_block.h"
#include "cpu/isa_end.h"
#pragma GCC diagnostic pop
