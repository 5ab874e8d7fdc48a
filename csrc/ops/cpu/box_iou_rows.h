// Hot loop of the pairwise overlap kernels, compiled once per ISA level (see cpu/isa_begin.h).
// Include only from csrc/ops/cpu/isa/box_iou_*.cpp, after cpu/isa_begin.h.
//
// The inner loop runs over the columns of one output row in structure-of-arrays form with no branches, so
// the compiler vectorises it at the width of the ISA in force (16 floats with AVX-512).

namespace pydet_ops {
namespace cpu {
namespace PYDET_ISA_NAMESPACE {
namespace {

template <box_math::IouKind kKind, typename T>
void overlap_rows_impl(const BoxColumns<T>& rows, int64_t row_begin, int64_t row_end,
                       const BoxColumns<T>& cols, int64_t m, T eps, T* PYDET_RESTRICT out) {
  const T* PYDET_RESTRICT bx1 = cols.x1;
  const T* PYDET_RESTRICT by1 = cols.y1;
  const T* PYDET_RESTRICT bx2 = cols.x2;
  const T* PYDET_RESTRICT by2 = cols.y2;
  const T* PYDET_RESTRICT barea = cols.area;
  const bool centred = kKind == box_math::IouKind::kDIoU || kKind == box_math::IouKind::kCIoU;
  const T* PYDET_RESTRICT bcx = centred ? cols.cx : cols.x1;
  const T* PYDET_RESTRICT bcy = centred ? cols.cy : cols.x1;
  const T* PYDET_RESTRICT batan = kKind == box_math::IouKind::kCIoU ? cols.atan_ratio : cols.x1;
  // 4 / pi^2 rounded to T, as torchvision's Python float scalar is when it multiplies a T tensor.
  const T four_over_pi_sq = static_cast<T>(0.40528473456935108577551785283891);

  for (int64_t i = row_begin; i < row_end; ++i) {
    const T ax1 = rows.x1[i], ay1 = rows.y1[i], ax2 = rows.x2[i], ay2 = rows.y2[i];
    const T aarea = rows.area[i];
    const T acx = centred ? rows.cx[i] : T(0);
    const T acy = centred ? rows.cy[i] : T(0);
    const T aatan = kKind == box_math::IouKind::kCIoU ? rows.atan_ratio[i] : T(0);
    T* PYDET_RESTRICT o = out + (i - row_begin) * m;
    for (int64_t j = 0; j < m; ++j) {
      o[j] = box_math::pairwise_overlap<kKind, T>(ax1, ay1, ax2, ay2, aarea, acx, acy, aatan, bx1[j], by1[j],
                                                  bx2[j], by2[j], barea[j], bcx[j], bcy[j], batan[j], eps,
                                                  four_over_pi_sq);
    }
  }
}

template <typename T>
void overlap_rows_any(box_math::IouKind kind, const BoxColumns<T>& rows, int64_t row_begin, int64_t row_end,
                      const BoxColumns<T>& cols, int64_t m, T eps, T* out) {
  using box_math::IouKind;
  switch (kind) {
    case IouKind::kIoU:
      return overlap_rows_impl<IouKind::kIoU>(rows, row_begin, row_end, cols, m, eps, out);
    case IouKind::kGIoU:
      return overlap_rows_impl<IouKind::kGIoU>(rows, row_begin, row_end, cols, m, eps, out);
    case IouKind::kDIoU:
      return overlap_rows_impl<IouKind::kDIoU>(rows, row_begin, row_end, cols, m, eps, out);
    case IouKind::kCIoU:
      return overlap_rows_impl<IouKind::kCIoU>(rows, row_begin, row_end, cols, m, eps, out);
  }
}

}  // namespace

PYDET_OVERLAP_ROWS_DECL(float) { overlap_rows_any<float>(kind, rows, row_begin, row_end, cols, m, eps, out); }
PYDET_OVERLAP_ROWS_DECL(double) { overlap_rows_any<double>(kind, rows, row_begin, row_end, cols, m, eps, out); }

}  // namespace PYDET_ISA_NAMESPACE
}  // namespace cpu
}  // namespace pydet_ops
