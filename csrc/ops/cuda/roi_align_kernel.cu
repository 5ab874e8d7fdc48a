// CUDA kernels of roi_align and _roi_align_backward: argument checks and layout choice here, the kernels in
// cuda/roi_align_forward.cuh and cuda/roi_align_backward.cuh (shared with multi_scale_roi_align). Results
// are in the memory format of the input (forward) or of grad (backward), as on the CPU.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cuda/roi_align_backward.cuh"
#include "cuda/roi_align_forward.cuh"
#include "ops/checks.h"
#include "ops/roi_checks.h"

namespace pydet_ops {
namespace cuda {
namespace {

at::Tensor roi_align_forward_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  const char* op = "roi_align";
  check_roi_forward_tensors(input, rois, op);
  TORCH_CHECK(input.is_cuda(), op, ": expected CUDA tensors, got ", input.device());
  check_roi_forward_scalars(pooled_height, pooled_width, spatial_scale, op);
  check_sampling_ratio(sampling_ratio, op);

  c10::cuda::CUDAGuard guard(input.device());
  const at::MemoryFormat format = roi_layout_of(input);
  const int64_t num_rois = rois.size(0), channels = input.size(1);
  at::Tensor output =
      at::empty({num_rois, channels, pooled_height, pooled_width}, input.options().memory_format(format));
  if (output.numel() == 0) return output;

  // RoIs are converted to the arithmetic type, as the CPU kernel does (float32 for half types).
  const at::Tensor r = rois.to(compute_type_of(input.scalar_type())).contiguous();
  const at::Tensor map = input.contiguous(format);
  const PoolShape s{input.size(0),
                    channels,
                    static_cast<int>(pooled_height),
                    static_cast<int>(pooled_width),
                    static_cast<int>(sampling_ratio),
                    aligned};
  const std::vector<RoiMap> maps{roi_map_of(map, spatial_scale)};
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_forward_cuda", [&] {
    launch_roi_align_forward<scalar_t>(maps, r, /*levels=*/nullptr, s, output, stream);
  });
  return output;
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                   int64_t pooled_height, int64_t pooled_width, int64_t batch_size, int64_t channels,
                                   int64_t height, int64_t width, int64_t sampling_ratio, bool aligned) {
  const char* op = "_roi_align_backward";
  check_roi_align_backward_tensors(grad, rois, op);
  TORCH_CHECK(grad.is_cuda(), op, ": expected CUDA tensors, got ", grad.device());
  check_roi_align_backward_sizes(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height,
                                 width, sampling_ratio, op);

  c10::cuda::CUDAGuard guard(grad.device());
  // The CPU kernel returns grad's layout (autograd passes grad in the forward input's layout).
  const at::MemoryFormat format = roi_layout_of(grad);
  if (grad.numel() == 0 || batch_size == 0 || height == 0 || width == 0) {
    return zeros_in({batch_size, channels, height, width}, grad.options(), format);
  }
  const at::Tensor r = rois.to(compute_type_of(grad.scalar_type())).contiguous();
  const PoolShape s{batch_size,
                    channels,
                    static_cast<int>(pooled_height),
                    static_cast<int>(pooled_width),
                    static_cast<int>(sampling_ratio),
                    aligned};
  const std::vector<double> scales{spatial_scale};
  return roi_align_backward_maps(grad, r, /*levels=*/nullptr, {{batch_size, channels, height, width}}, scales, s,
                                 format)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(pydet_ops, CUDA, m) {
  m.impl("roi_align", TORCH_FN(roi_align_forward_cuda));
  m.impl("_roi_align_backward", TORCH_FN(roi_align_backward_cuda));
}

}  // namespace cuda
}  // namespace pydet_ops
