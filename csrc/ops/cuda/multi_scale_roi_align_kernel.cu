// CUDA kernels of multi_scale_roi_align and its backward. Each RoI's FPN level is decided on the device
// (common/roi_align_math.h fpn_level, the CPU kernel's arguments); the pooling kernels of
// cuda/roi_align_forward.cuh and cuda/roi_align_backward.cuh then read each RoI straight from its level,
// with no per-level gather or scatter of RoIs or outputs. RoIs without a level pool to zero and receive no
// gradient.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <vector>

#include "common/roi_align_math.h"
#include "cuda/roi_align_backward.cuh"
#include "cuda/roi_align_forward.cuh"
#include "ops/checks.h"
#include "ops/roi_checks.h"

namespace pydet_ops {
namespace cuda {
namespace {

constexpr const char* kOp = "multi_scale_roi_align";

template <typename T>
__global__ void __launch_bounds__(kThreads)
    fpn_levels_kernel(const T* __restrict__ rois, int64_t num_rois, int canonical_scale, int canonical_level,
                      int k_min, int k_max, int num_levels, int* __restrict__ levels) {
  PYDET_CUDA_KERNEL_LOOP(k, num_rois) {
    const T* r = rois + 5 * k;
    const int l = roi_math::fpn_level<T>(r[1], r[2], r[3], r[4], canonical_scale, canonical_level, k_min, k_max);
    levels[k] = l < num_levels ? l : -1;
  }
}

// Each RoI's level (an index into the feature maps), or -1. `rois`: [K, 5] in the arithmetic type.
at::Tensor fpn_levels(const at::Tensor& rois, at::ArrayRef<double> scales, int64_t canonical_scale,
                      int64_t canonical_level, cudaStream_t stream) {
  int k_min, k_max;
  fpn_level_range(scales, k_min, k_max);
  const int64_t num_rois = rois.size(0);
  at::Tensor levels = at::empty({num_rois}, rois.options().dtype(at::kInt));
  if (num_rois == 0) return levels;
  AT_DISPATCH_FLOATING_TYPES(rois.scalar_type(), "fpn_levels_cuda", [&] {
    fpn_levels_kernel<scalar_t><<<grid_size(num_rois), kThreads, 0, stream>>>(
        rois.const_data_ptr<scalar_t>(), num_rois, static_cast<int>(canonical_scale),
        static_cast<int>(canonical_level), k_min, k_max, static_cast<int>(scales.size()),
        levels.mutable_data_ptr<int>());
    PYDET_CUDA_CHECK_LAUNCH();
  });
  return levels;
}

at::Tensor multi_scale_forward_cuda(at::TensorList features, const at::Tensor& rois, at::ArrayRef<double> scales,
                                    int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                    int64_t canonical_scale, int64_t canonical_level) {
  check_multi_scale_forward_args(features, rois, scales, pooled_height, pooled_width, sampling_ratio, canonical_scale,
                                 canonical_level, kOp, [&](const at::Tensor& map) {
                                   // A CPU + CUDA mix is dispatched here: the message names both arguments.
                                   check_same_device(map, "features", rois, "rois", kOp);
                                   TORCH_CHECK(map.is_cuda(), kOp, ": expected CUDA tensors, got ", map.device());
                                 });
  const at::Tensor& first = features[0];

  c10::cuda::CUDAGuard guard(first.device());
  const at::MemoryFormat format = roi_layout_of(first);
  const int64_t num_rois = rois.size(0), channels = first.size(1);
  at::Tensor output =
      at::empty({num_rois, channels, pooled_height, pooled_width}, first.options().memory_format(format));
  if (output.numel() == 0) return output;

  const auto stream = at::cuda::getCurrentCUDAStream();
  const at::Tensor r = rois.to(compute_type_of(first.scalar_type())).contiguous();
  const at::Tensor levels = fpn_levels(r, scales, canonical_scale, canonical_level, stream);
  // Each level is read in its own layout, as on the CPU.
  std::vector<at::Tensor> kept;
  std::vector<RoiMap> maps;
  for (size_t l = 0; l < features.size(); ++l) {
    kept.push_back(features[l].contiguous(roi_layout_of(features[l])));
    maps.push_back(roi_map_of(kept.back(), scales[l]));
  }
  const PoolShape s{first.size(0),
                    channels,
                    static_cast<int>(pooled_height),
                    static_cast<int>(pooled_width),
                    static_cast<int>(sampling_ratio),
                    /*aligned=*/false};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, first.scalar_type(), "multi_scale_roi_align_cuda", [&] {
    launch_roi_align_forward<scalar_t>(maps, r, levels.const_data_ptr<int>(), s, output, stream);
  });
  return output;
}

std::vector<at::Tensor> multi_scale_backward_cuda(const at::Tensor& grad, const at::Tensor& rois,
                                                  at::ArrayRef<double> scales, int64_t pooled_height,
                                                  int64_t pooled_width, int64_t sampling_ratio,
                                                  int64_t canonical_scale, int64_t canonical_level,
                                                  at::IntArrayRef feature_sizes) {
  const char* op = "_multi_scale_roi_align_backward";
  const size_t num_levels = check_multi_scale_backward_args(
      grad, rois, scales, pooled_height, pooled_width, sampling_ratio, canonical_scale, canonical_level, feature_sizes,
      op, [&] {
        check_same_device(grad, "grad", rois, "rois", op);
        TORCH_CHECK(grad.is_cuda(), op, ": expected CUDA tensors, got ", grad.device());
      });
  const int64_t batch = feature_sizes[0], channels = feature_sizes[1];
  std::vector<std::array<int64_t, 4>> sizes;
  for (size_t l = 0; l < num_levels; ++l) {
    const int64_t* s = feature_sizes.data() + 4 * l;
    check_level_sizes(s, batch, channels, op);
    sizes.push_back({s[0], s[1], s[2], s[3]});
  }

  c10::cuda::CUDAGuard guard(grad.device());
  // Gradients in grad's layout, as on the CPU.
  const at::MemoryFormat format = roi_layout_of(grad);
  const auto stream = at::cuda::getCurrentCUDAStream();
  const at::Tensor r = rois.to(compute_type_of(grad.scalar_type())).contiguous();
  // With an empty grad the backward returns zeros before it reads any level.
  const at::Tensor levels = grad.numel() > 0 ? fpn_levels(r, scales, canonical_scale, canonical_level, stream)
                                             : at::Tensor();
  const PoolShape s{batch,
                    channels,
                    static_cast<int>(pooled_height),
                    static_cast<int>(pooled_width),
                    static_cast<int>(sampling_ratio),
                    /*aligned=*/false};
  return roi_align_backward_maps(grad, r, levels.defined() ? levels.const_data_ptr<int>() : nullptr, sizes, scales,
                                 s, format);
}

}  // namespace

TORCH_LIBRARY_IMPL(pydet_ops, CUDA, m) {
  m.impl("multi_scale_roi_align", TORCH_FN(multi_scale_forward_cuda));
  m.impl("_multi_scale_roi_align_backward", TORCH_FN(multi_scale_backward_cuda));
}

}  // namespace cuda
}  // namespace pydet_ops
