// Per-ISA entry points of the float32 box coding loops (bodies in box_coder_rows.h).
#pragma once

#include <cstdint>

#include "common/box_coding.h"
#include "cpu/cpu_capability.h"

namespace pydet_ops {
namespace cpu {

// out[i] = decode(codes[i, 4k .. 4k+3], boxes[i]) for rows i in [begin, end), k < classes.
#define PYDET_DECODE_ROWS_DECL                                                                                    \
  void decode_rows(const float* codes, const float* boxes, int64_t begin, int64_t end, int64_t classes, \
                   const box_coding::CoderWeights<float>& weights, float* out)
using DecodeRowsFn = void (*)(const float*, const float*, int64_t, int64_t, int64_t,
                              const box_coding::CoderWeights<float>&, float*);

// out[i] = encode(reference[i], proposals[i]) for rows i in [begin, end).
#define PYDET_ENCODE_ROWS_DECL                                                                         \
  void encode_rows(const float* reference, const float* proposals, int64_t begin, int64_t end, \
                   const box_coding::CoderWeights<float>& weights, float* out)
using EncodeRowsFn = void (*)(const float*, const float*, int64_t, int64_t, const box_coding::CoderWeights<float>&,
                              float*);

PYDET_DECLARE_PER_ISA(PYDET_DECODE_ROWS_DECL)
PYDET_DECLARE_PER_ISA(PYDET_ENCODE_ROWS_DECL)

}  // namespace cpu
}  // namespace pydet_ops
