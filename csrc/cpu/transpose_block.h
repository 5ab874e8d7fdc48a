// 32-bit block transpose, compiled once per ISA level (see cpu/isa_begin.h and cpu/transpose.h).
// Include only from csrc/ops/cpu/isa/transpose_*.cpp, after cpu/isa_begin.h.

namespace pydet_ops {
namespace cpu {
namespace PYDET_ISA_NAMESPACE {
namespace {

inline void transpose_scalar(const uint32_t* src, uint32_t* dst, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                             int64_t c0, int64_t c1) {
  for (int64_t c = c0; c < c1; ++c) {
    for (int64_t r = r0; r < r1; ++r) dst[c * rows + r] = src[r * cols + c];
  }
}

#if PYDET_ISA_LEVEL == 2
constexpr int64_t kSquare = 16;

// The 16x16 square at (r, c): rows of src become columns of dst.
inline void transpose_square(const uint32_t* src, uint32_t* dst, int64_t rows, int64_t cols, int64_t r, int64_t c) {
  __m512 a[16], b[16];
  for (int i = 0; i < 16; ++i) a[i] = _mm512_loadu_ps(src + (r + i) * cols + c);
  // Pairs of rows interleaved, then pairs of pairs: 4x4 squares transposed inside each 128-bit lane.
  for (int i = 0; i < 16; i += 2) {
    b[i] = _mm512_unpacklo_ps(a[i], a[i + 1]);
    b[i + 1] = _mm512_unpackhi_ps(a[i], a[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    a[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(b[i]), _mm512_castps_pd(b[i + 2])));
    a[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(b[i]), _mm512_castps_pd(b[i + 2])));
    a[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(b[i + 1]), _mm512_castps_pd(b[i + 3])));
    a[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(b[i + 1]), _mm512_castps_pd(b[i + 3])));
  }
  // Then the 128-bit lanes: across groups of 4 rows, then of 8.
  for (int i = 0; i < 4; ++i) {
    b[i] = _mm512_shuffle_f32x4(a[i], a[i + 4], 0x88);
    b[i + 4] = _mm512_shuffle_f32x4(a[i], a[i + 4], 0xdd);
    b[i + 8] = _mm512_shuffle_f32x4(a[i + 8], a[i + 12], 0x88);
    b[i + 12] = _mm512_shuffle_f32x4(a[i + 8], a[i + 12], 0xdd);
  }
  for (int i = 0; i < 8; ++i) {
    a[i] = _mm512_shuffle_f32x4(b[i], b[i + 8], 0x88);
    a[i + 8] = _mm512_shuffle_f32x4(b[i], b[i + 8], 0xdd);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + (c + i) * rows + r, a[i]);
}
#elif PYDET_ISA_LEVEL == 1
constexpr int64_t kSquare = 8;

inline void transpose_square(const uint32_t* src, uint32_t* dst, int64_t rows, int64_t cols, int64_t r, int64_t c) {
  __m256 a[8], b[8];
  for (int i = 0; i < 8; ++i) a[i] = _mm256_loadu_ps(reinterpret_cast<const float*>(src + (r + i) * cols + c));
  for (int i = 0; i < 8; i += 2) {
    b[i] = _mm256_unpacklo_ps(a[i], a[i + 1]);
    b[i + 1] = _mm256_unpackhi_ps(a[i], a[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    a[i] = _mm256_shuffle_ps(b[i], b[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    a[i + 1] = _mm256_shuffle_ps(b[i], b[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    a[i + 2] = _mm256_shuffle_ps(b[i + 1], b[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    a[i + 3] = _mm256_shuffle_ps(b[i + 1], b[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    b[i] = _mm256_permute2f128_ps(a[i], a[i + 4], 0x20);
    b[i + 4] = _mm256_permute2f128_ps(a[i], a[i + 4], 0x31);
  }
  for (int i = 0; i < 8; ++i) _mm256_storeu_ps(reinterpret_cast<float*>(dst + (c + i) * rows + r), b[i]);
}
#endif

}  // namespace

PYDET_TRANSPOSE_BLOCK_DECL {
#if PYDET_ISA_LEVEL >= 1
  // Whole squares through registers, the ragged right and bottom edges element by element.
  const int64_t r_end = r0 + (r1 - r0) / kSquare * kSquare;
  const int64_t c_end = c0 + (c1 - c0) / kSquare * kSquare;
  for (int64_t r = r0; r < r_end; r += kSquare) {
    for (int64_t c = c0; c < c_end; c += kSquare) transpose_square(src, dst, rows, cols, r, c);
  }
  transpose_scalar(src, dst, rows, cols, r0, r_end, c_end, c1);
  transpose_scalar(src, dst, rows, cols, r_end, r1, c0, c1);
#else
  transpose_scalar(src, dst, rows, cols, r0, r1, c0, c1);
#endif
}

}  // namespace PYDET_ISA_NAMESPACE
}  // namespace cpu
}  // namespace pydet_ops
