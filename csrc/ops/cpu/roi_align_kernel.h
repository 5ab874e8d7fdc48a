// Per-ISA entry points of the RoI align and RoI pool kernels (bodies in roi_align_loops.h, roi_pool_loops.h).
#pragma once

#include <cstdint>

#include "common/macros.h"
#include "cpu/cpu_capability.h"

namespace pydet_ops {
namespace cpu {

// Element type of the feature map (and of the output / gradient tensors); arithmetic is float32 for every
// type but float64.
enum class ElementType : int { kFloat = 0, kDouble = 1, kHalf = 2, kBFloat16 = 3 };

// A feature map or gradient map [B, C, H, W] with arbitrary element strides (NCHW, channels_last, ...).
struct MapView {
  void* data;
  int64_t batch, channels, height, width;
  int64_t stride_n, stride_c, stride_h, stride_w;
};

// Parameters shared by forward and backward. `rois` is [K, 5] (batch index, x1, y1, x2, y2) in the
// compute type (double for float64 maps, float otherwise), contiguous, batch indices already validated.
struct RoiAlignParams {
  const void* rois;
  int64_t num_rois;
  double spatial_scale;
  int pooled_h, pooled_w;
  int sampling_ratio;
  bool aligned;
  ElementType type;
};

// Forward for RoIs [roi_begin, roi_end) and channels [c_begin, c_end): output[k, c, ph, pw] is the average
// of the bilinear samples of bin (ph, pw). `output` is a [K, C, ph, pw] view of the same element type.
#define PYDET_ROI_ALIGN_FORWARD_DECL                                                                       \
  void roi_align_forward(const RoiAlignParams& p, const MapView& input, const MapView& output, int64_t roi_begin, \
                         int64_t roi_end, int64_t c_begin, int64_t c_end)

// Backward for image `n`, channels [c_begin, c_end) and grad_input rows [row_begin, row_end): adds every
// RoI of image n's contribution to those cells of grad_input (zero-initialised) in RoI, bin, sample, tap
// order. `roi_ids` lists the RoIs of image n in ascending order. The caller partitions (image, row band) so
// no two calls touch the same cell; every cell then sums in torchvision's order whatever the partition.
#define PYDET_ROI_ALIGN_BACKWARD_DECL                                                                        \
  void roi_align_backward(const RoiAlignParams& p, const MapView& grad_output, const MapView& grad_input, \
                          const int64_t* roi_ids, int64_t num_ids, int64_t c_begin, int64_t c_end,       \
                          int64_t row_begin, int64_t row_end)

// RoI max pooling (Fast R-CNN). `rois` as in RoiAlignParams (sampling_ratio and aligned unused).
// Forward writes output and argmax (int32 plane index h * W + w, -1 for an empty bin) for RoIs
// [roi_begin, roi_end) and channels [c_begin, c_end); backward adds grad_output at the argmax cells of the
// RoIs of one image, in RoI order.
#define PYDET_ROI_POOL_FORWARD_DECL                                                                         \
  void roi_pool_forward(const RoiAlignParams& p, const MapView& input, const MapView& output, int32_t* argmax, \
                        int64_t roi_begin, int64_t roi_end, int64_t c_begin, int64_t c_end)
#define PYDET_ROI_POOL_BACKWARD_DECL                                                                              \
  void roi_pool_backward(const RoiAlignParams& p, const MapView& grad_output, const int32_t* argmax,               \
                         const MapView& grad_input, const int64_t* roi_ids, int64_t num_ids, int64_t c_begin, \
                         int64_t c_end)

using RoiAlignForwardFn = void (*)(const RoiAlignParams&, const MapView&, const MapView&, int64_t, int64_t, int64_t,
                                   int64_t);
using RoiAlignBackwardFn = void (*)(const RoiAlignParams&, const MapView&, const MapView&, const int64_t*, int64_t,
                                    int64_t, int64_t, int64_t, int64_t);

using RoiPoolForwardFn = void (*)(const RoiAlignParams&, const MapView&, const MapView&, int32_t*, int64_t, int64_t,
                                  int64_t, int64_t);
using RoiPoolBackwardFn = void (*)(const RoiAlignParams&, const MapView&, const int32_t*, const MapView&,
                                   const int64_t*, int64_t, int64_t, int64_t);

PYDET_DECLARE_PER_ISA(PYDET_ROI_ALIGN_FORWARD_DECL)
PYDET_DECLARE_PER_ISA(PYDET_ROI_ALIGN_BACKWARD_DECL)
PYDET_DECLARE_PER_ISA(PYDET_ROI_POOL_FORWARD_DECL)
PYDET_DECLARE_PER_ISA(PYDET_ROI_POOL_BACKWARD_DECL)

}  // namespace cpu
}  // namespace pydet_ops
