// Float32 loops of the box coders, compiled once per ISA level (see cpu/isa_begin.h).
// Include only from csrc/ops/cpu/isa/box_coder_*.cpp, after cpu/isa_begin.h.
//
// The per-box math is common/box_coding.h; its exp and log (common/float_math.h) are branch-free
// arithmetic, so these loops vectorise across boxes (decode: across the classes of a box).

namespace pydet_ops {
namespace cpu {
namespace PYDET_ISA_NAMESPACE {

PYDET_DECODE_ROWS_DECL {
  for (int64_t i = begin; i < end; ++i) {
    const float* b = boxes + 4 * i;
    const auto frame = box_coding::box_frame<float, float>(b[0], b[1], b[2], b[3]);
    const float* PYDET_RESTRICT c = codes + 4 * classes * i;
    float* PYDET_RESTRICT o = out + 4 * classes * i;
    for (int64_t j = 0; j < classes; ++j) {
      box_coding::decode_one<float, float>(c[4 * j], c[4 * j + 1], c[4 * j + 2], c[4 * j + 3], frame, weights,
                                           o + 4 * j);
    }
  }
}

PYDET_ENCODE_ROWS_DECL {
  const float* PYDET_RESTRICT g = reference;
  const float* PYDET_RESTRICT p = proposals;
  float* PYDET_RESTRICT o = out;
  for (int64_t i = begin; i < end; ++i) {
    const auto gf = box_coding::box_frame<float, float>(g[4 * i], g[4 * i + 1], g[4 * i + 2], g[4 * i + 3]);
    const auto pf = box_coding::box_frame<float, float>(p[4 * i], p[4 * i + 1], p[4 * i + 2], p[4 * i + 3]);
    box_coding::encode_one<float, float>(gf, pf, weights, o + 4 * i);
  }
}

}  // namespace PYDET_ISA_NAMESPACE
}  // namespace cpu
}  // namespace pydet_ops
