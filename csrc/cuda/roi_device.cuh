// Pieces shared by the CUDA kernels of the RoI ops (roi_align, multi_scale_roi_align, roi_pool): strides,
// zeroed tensors in a memory format, the element numbering of a pass and the image a RoI reads.
//
// Batch indices: the CPU kernels reject a RoI whose batch index is outside [0, N) (or NaN); checking that
// here would need a device-to-host copy, so such a RoI instead pools to zero (roi_pool: argmax -1) and
// receives no gradient.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace pydet_ops {
namespace cuda {

// Element strides of a [N, C, H, W] tensor.
struct RoiStrides {
  int64_t n, c, h, w;
};

inline RoiStrides roi_strides_of(const at::Tensor& t) {
  return RoiStrides{t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// Zeros of `shape` in `format`: at::zeros would drop a memory format passed in the options.
inline at::Tensor zeros_in(at::IntArrayRef shape, const at::TensorOptions& options, at::MemoryFormat format) {
  return at::empty(shape, options.memory_format(format)).zero_();
}

// Element i of a [N, C, H, W] tensor dense in its memory format. A pass numbers its elements in that order,
// so consecutive threads touch consecutive addresses: W innermost for NCHW, channels for channels_last.
struct Coord4 {
  int64_t n, c;
  int h, w;
};

template <bool kChannelsLast>
__device__ __forceinline__ Coord4 unravel(int64_t i, int64_t channels, int height, int width) {
  Coord4 e;
  if (kChannelsLast) {
    e.c = i % channels;
    int64_t rest = i / channels;
    e.w = static_cast<int>(rest % width);
    rest /= width;
    e.h = static_cast<int>(rest % height);
    e.n = rest / height;
  } else {
    e.w = static_cast<int>(i % width);
    int64_t rest = i / width;
    e.h = static_cast<int>(rest % height);
    rest /= height;
    e.c = rest % channels;
    e.n = rest / channels;
  }
  return e;
}

// The image RoI `roi` pools from, or -1 for a batch index outside [0, batch) or NaN (see the top of this
// file). Truncated toward zero as the CPU kernel does, so the test is index > -1.
template <typename T>
__device__ __forceinline__ int64_t roi_image(const T* roi, int64_t batch) {
  const T index = roi[0];
  return (index > T(-1) && index < static_cast<T>(batch)) ? static_cast<int64_t>(index) : int64_t(-1);
}

}  // namespace cuda
}  // namespace pydet_ops
