// Per-ISA 32-bit matrix transpose of a block (bodies in transpose_block.h): dst[c * rows + r] = src[r * cols + c]
// for r in [r0, r1), c in [c0, c1). The AVX2 / AVX-512 versions move 8x8 / 16x16 squares through registers.
#pragma once

#include <cstdint>

#include "cpu/cpu_capability.h"

namespace pydet_ops {
namespace cpu {

#define PYDET_TRANSPOSE_BLOCK_DECL                                                                   \
  void transpose_block(const uint32_t* src, uint32_t* dst, int64_t rows, int64_t cols, int64_t r0, \
                       int64_t r1, int64_t c0, int64_t c1)
using TransposeBlockFn = void (*)(const uint32_t*, uint32_t*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                  int64_t);

PYDET_DECLARE_PER_ISA(PYDET_TRANSPOSE_BLOCK_DECL)

}  // namespace cpu
}  // namespace pydet_ops
