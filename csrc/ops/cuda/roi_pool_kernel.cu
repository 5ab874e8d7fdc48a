// CUDA kernels of roi_pool and _roi_pool_backward. The forward runs one thread per output element and scans
// its bin with the geometry of common/roi_align_math.h, so bins, maxima and argmax match the CPU kernel
// exactly. The backward scatters each gradient to its argmax cell: atomically by default, or, under
// torch.use_deterministic_algorithms, by sorting (cell, output) pairs and summing each cell's run in output
// order, which reproduces the CPU kernel's summation order bit for bit.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "common/roi_align_math.h"
#include "cuda/launch.h"
#include "cuda/roi_device.cuh"
#include "ops/checks.h"
#include "ops/roi_checks.h"

namespace pydet_ops {
namespace cuda {
namespace {

template <typename scalar_t, typename T, bool kChannelsLast>
__global__ void __launch_bounds__(kThreads)
    roi_pool_forward_kernel(const scalar_t* __restrict__ input, RoiStrides in, int64_t batch, int64_t channels,
                            int height, int width, const T* __restrict__ rois, T spatial_scale, int pooled_h,
                            int pooled_w, int64_t total, scalar_t* __restrict__ output,
                            int32_t* __restrict__ argmax) {
  PYDET_CUDA_KERNEL_LOOP(i, total) {
    const Coord4 p = unravel<kChannelsLast>(i, channels, pooled_h, pooled_w);
    const T* roi = rois + 5 * p.n;
    const int64_t b = roi_image(roi, batch);
    T best = T(0);
    int32_t best_at = -1;
    if (b >= 0) {
      const roi_math::RoiPoolGeometry g = roi_math::roi_pool_geometry<T>(roi[1], roi[2], roi[3], roi[4], spatial_scale);
      int h0, h1, w0, w1;
      roi_math::roi_pool_bin<T>(p.h, pooled_h, g.roi_h, g.start_h, height, h0, h1);
      roi_math::roi_pool_bin<T>(p.w, pooled_w, g.roi_w, g.start_w, width, w0, w1);
      if (g.valid && h1 > h0 && w1 > w0) {
        // The CPU loop's rule: start from -FLT_MAX (for float64 too) and take a value only when strictly
        // greater, so NaNs never win, the first maximum in row-major order does, and a bin holding nothing
        // above -FLT_MAX keeps -FLT_MAX with argmax -1.
        best = static_cast<T>(-3.40282346638528859812e+38);
        const scalar_t* base = input + b * in.n + p.c * in.c;
        for (int h = h0; h < h1; ++h) {
          const scalar_t* row = base + h * in.h;
          for (int w = w0; w < w1; ++w) {
            const T x = static_cast<T>(row[w * in.w]);
            if (x > best) {
              best = x;
              // h * width + w < H * W, which the caller checked fits int32.
              best_at = h * width + w;
            }
          }
        }
      }
    }
    output[i] = static_cast<scalar_t>(best);
    argmax[i] = best_at;
  }
}

std::tuple<at::Tensor, at::Tensor> roi_pool_forward_cuda(const at::Tensor& input, const at::Tensor& rois,
                                                         double spatial_scale, int64_t pooled_height,
                                                         int64_t pooled_width) {
  const char* op = "roi_pool";
  check_roi_forward_tensors(input, rois, op);
  TORCH_CHECK(input.is_cuda(), op, ": expected CUDA tensors, got ", input.device());
  check_roi_forward_scalars(pooled_height, pooled_width, spatial_scale, op);
  check_roi_pool_plane(input, op);

  c10::cuda::CUDAGuard guard(input.device());
  const at::MemoryFormat format = roi_layout_of(input);
  const int64_t num_rois = rois.size(0), batch = input.size(0), channels = input.size(1);
  const int64_t height = input.size(2), width = input.size(3);
  const std::vector<int64_t> shape{num_rois, channels, pooled_height, pooled_width};
  at::Tensor output = at::empty(shape, input.options().memory_format(format));
  at::Tensor argmax = at::empty(shape, input.options().dtype(at::kInt).memory_format(format));
  if (num_rois == 0 || channels == 0 || height == 0 || width == 0) {
    output.zero_();
    argmax.fill_(-1);
    return {output, argmax};
  }

  const at::ScalarType compute = compute_type_of(input.scalar_type());
  const at::Tensor r = rois.to(compute).contiguous();
  const int64_t total = output.numel();
  const RoiStrides in = roi_strides_of(input);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_pool_forward_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const auto launch = [&](auto kernel) {
      kernel<<<grid_size(total), kThreads, 0, stream>>>(
          input.const_data_ptr<scalar_t>(), in, batch, channels, static_cast<int>(height), static_cast<int>(width),
          r.const_data_ptr<T>(), static_cast<T>(spatial_scale), static_cast<int>(pooled_height),
          static_cast<int>(pooled_width), total, output.mutable_data_ptr<scalar_t>(),
          argmax.mutable_data_ptr<int32_t>());
      PYDET_CUDA_CHECK_LAUNCH();
    };
    if (format == at::MemoryFormat::ChannelsLast) {
      launch(roi_pool_forward_kernel<scalar_t, T, true>);
    } else {
      launch(roi_pool_forward_kernel<scalar_t, T, false>);
    }
  });
  return {output, argmax};
}

// ---------------------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------------------

// The cell of grad_input (an offset into it) that output element p sends its gradient to, or -1. An argmax
// outside [0, H * W) contributes nothing: the CPU kernel rejects it, which here would need a host sync.
// `in` are the strides of a buffer allocated NCHW or channels_last, where plane cell h * W + w sits at
// (h * W + w) * stride_w.
template <typename T>
__device__ __forceinline__ int64_t target_cell(const Coord4& p, const int32_t* argmax, const RoiStrides& arg,
                                               const T* rois, int64_t batch, int64_t plane, const RoiStrides& in) {
  const int32_t at = argmax[p.n * arg.n + p.c * arg.c + p.h * arg.h + p.w * arg.w];
  if (at < 0 || at >= plane) return -1;
  const int64_t b = roi_image(rois + 5 * p.n, batch);
  if (b < 0) return -1;
  return b * in.n + p.c * in.c + static_cast<int64_t>(at) * in.w;
}

template <typename scalar_t, typename T, bool kChannelsLast>
__global__ void __launch_bounds__(kThreads)
    roi_pool_backward_atomic_kernel(const scalar_t* __restrict__ grad, RoiStrides gs, const int32_t* __restrict__ argmax,
                                    RoiStrides as, const T* __restrict__ rois, int64_t batch, int64_t channels,
                                    int pooled_h, int pooled_w, int64_t plane, T* __restrict__ grad_input,
                                    RoiStrides is, int64_t total) {
  PYDET_CUDA_KERNEL_LOOP(i, total) {
    const Coord4 p = unravel<kChannelsLast>(i, channels, pooled_h, pooled_w);
    const int64_t cell = target_cell(p, argmax, as, rois, batch, plane, is);
    if (cell >= 0) {
      atomicAdd(grad_input + cell, static_cast<T>(grad[p.n * gs.n + p.c * gs.c + p.h * gs.h + p.w * gs.w]));
    }
  }
}

// Deterministic pass, step 1: the target cell of each output element of channels [c_begin, c_begin +
// channels), numbered as unravel numbers them within that channel range.
template <typename key_t, typename T, bool kChannelsLast>
__global__ void __launch_bounds__(kThreads)
    roi_pool_targets_kernel(const int32_t* __restrict__ argmax, RoiStrides as, const T* __restrict__ rois,
                            int64_t batch, int64_t c_begin, int64_t channels, int pooled_h, int pooled_w,
                            int64_t plane, RoiStrides is, int64_t total, key_t* __restrict__ keys) {
  PYDET_CUDA_KERNEL_LOOP(i, total) {
    Coord4 p = unravel<kChannelsLast>(i, channels, pooled_h, pooled_w);
    p.c += c_begin;
    keys[i] = static_cast<key_t>(target_cell(p, argmax, as, rois, batch, plane, is));
  }
}

// Step 2, after a stable sort of the keys: the first position of every run of equal cells sums the run and
// writes the cell. The stable sort leaves each run in increasing element number, which for one cell (one
// image, one channel) is increasing (RoI, ph, pw): the CPU kernel's order. No two threads write one cell.
template <typename scalar_t, typename key_t, typename T, bool kChannelsLast>
__global__ void __launch_bounds__(kThreads)
    roi_pool_sum_runs_kernel(const key_t* __restrict__ sorted, const int64_t* __restrict__ order, int64_t total,
                             const scalar_t* __restrict__ grad, RoiStrides gs, int64_t c_begin, int64_t channels,
                             int pooled_h, int pooled_w, scalar_t* __restrict__ grad_input) {
  PYDET_CUDA_KERNEL_LOOP(j, total) {
    const key_t cell = sorted[j];
    if (cell < 0 || (j > 0 && sorted[j - 1] == cell)) continue;
    T sum = T(0);
    for (int64_t m = j; m < total && sorted[m] == cell; ++m) {
      const Coord4 p = unravel<kChannelsLast>(order[m], channels, pooled_h, pooled_w);
      sum += static_cast<T>(grad[p.n * gs.n + (c_begin + p.c) * gs.c + p.h * gs.h + p.w * gs.w]);
    }
    grad_input[cell] = static_cast<scalar_t>(sum);
  }
}

// Output elements sorted at a time by the deterministic pass: bounds its temporaries (keys, sorted keys,
// int64 order and the sort's own buffers, about 40 bytes per element) to a few GiB.
constexpr int64_t kSortChunk = int64_t(1) << 26;

at::Tensor roi_pool_backward_cuda(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                                  double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                  int64_t batch_size, int64_t channels, int64_t height, int64_t width) {
  const char* op = "_roi_pool_backward";
  check_roi_pool_backward_tensors(grad, rois, argmax, op);
  TORCH_CHECK(grad.is_cuda(), op, ": expected CUDA tensors, got ", grad.device());
  check_roi_pool_backward_sizes(grad, rois, argmax, pooled_height, pooled_width, batch_size, channels, height, width,
                                op);

  c10::cuda::CUDAGuard guard(grad.device());
  const at::MemoryFormat format = roi_layout_of(grad);
  const std::vector<int64_t> in_shape{batch_size, channels, height, width};
  if (grad.numel() == 0 || batch_size == 0 || height == 0 || width == 0) {
    return zeros_in(in_shape, grad.options(), format);
  }

  const at::ScalarType compute = compute_type_of(grad.scalar_type());
  const at::Tensor r = rois.to(compute).contiguous();
  const bool channels_last = format == at::MemoryFormat::ChannelsLast;
  const int64_t num_rois = rois.size(0), plane = height * width;
  const int ph = static_cast<int>(pooled_height), pw = static_cast<int>(pooled_width);
  const RoiStrides gs = roi_strides_of(grad), as = roi_strides_of(argmax);
  auto stream = at::cuda::getCurrentCUDAStream();

  // at::sort sorts at most 2^31 - 1 elements, and a chunk holds whole channels.
  const int64_t per_channel = num_rois * pooled_height * pooled_width;
  bool deterministic = at::globalContext().deterministicAlgorithms();
  if (deterministic && per_channel > std::numeric_limits<int32_t>::max()) {
    at::globalContext().alertNotDeterministic("_roi_pool_backward with more than 2^31 - 1 pooled cells per channel");
    deterministic = false;
  }

  if (!deterministic) {
    // Half types accumulate in a float32 buffer, converted once at the end.
    at::Tensor sum = zeros_in(in_shape, grad.options().dtype(compute), format);
    const RoiStrides is = roi_strides_of(sum);
    const int64_t total = grad.numel();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_pool_backward_cuda", [&] {
      using T = at::opmath_type<scalar_t>;
      const auto launch = [&](auto kernel) {
        kernel<<<grid_size(total), kThreads, 0, stream>>>(grad.const_data_ptr<scalar_t>(), gs,
                                                          argmax.const_data_ptr<int32_t>(), as, r.const_data_ptr<T>(),
                                                          batch_size, channels, ph, pw, plane,
                                                          sum.mutable_data_ptr<T>(), is, total);
        PYDET_CUDA_CHECK_LAUNCH();
      };
      if (channels_last) {
        launch(roi_pool_backward_atomic_kernel<scalar_t, T, true>);
      } else {
        launch(roi_pool_backward_atomic_kernel<scalar_t, T, false>);
      }
    });
    return sum.scalar_type() == grad.scalar_type() ? sum : sum.to(grad.scalar_type());
  }

  // Each cell is written once, by the thread that sums its run, so the result needs no float32 staging.
  at::Tensor grad_input = zeros_in(in_shape, grad.options(), format);
  const RoiStrides is = roi_strides_of(grad_input);
  const int64_t chunk_channels = std::max<int64_t>(1, std::min(channels, kSortChunk / per_channel));
  const bool narrow_keys = grad_input.numel() <= std::numeric_limits<int32_t>::max();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_pool_backward_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const auto run = [&](auto key_zero, auto channels_last_tag) {
      using key_t = decltype(key_zero);
      constexpr bool kCL = decltype(channels_last_tag)::value;
      const at::ScalarType key_type = sizeof(key_t) == 4 ? at::kInt : at::kLong;
      // Channel ranges target disjoint cells, so they are summed independently.
      for (int64_t c_begin = 0; c_begin < channels; c_begin += chunk_channels) {
        const int64_t cc = std::min(chunk_channels, channels - c_begin);
        const int64_t total = per_channel * cc;
        at::Tensor keys = at::empty({total}, grad.options().dtype(key_type));
        roi_pool_targets_kernel<key_t, T, kCL><<<grid_size(total), kThreads, 0, stream>>>(
            argmax.const_data_ptr<int32_t>(), as, r.const_data_ptr<T>(), batch_size, c_begin, cc, ph, pw, plane, is,
            total, keys.mutable_data_ptr<key_t>());
        PYDET_CUDA_CHECK_LAUNCH();
        const auto [sorted, order] = at::sort(keys, std::optional<bool>(true), /*dim=*/0, /*descending=*/false);
        roi_pool_sum_runs_kernel<scalar_t, key_t, T, kCL><<<grid_size(total), kThreads, 0, stream>>>(
            sorted.const_data_ptr<key_t>(), order.const_data_ptr<int64_t>(), total, grad.const_data_ptr<scalar_t>(),
            gs, c_begin, cc, ph, pw, grad_input.mutable_data_ptr<scalar_t>());
        PYDET_CUDA_CHECK_LAUNCH();
      }
    };
    if (narrow_keys && channels_last) {
      run(int32_t(0), std::true_type{});
    } else if (narrow_keys) {
      run(int32_t(0), std::false_type{});
    } else if (channels_last) {
      run(int64_t(0), std::true_type{});
    } else {
      run(int64_t(0), std::false_type{});
    }
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(pydet_ops, CUDA, m) {
  m.impl("roi_pool", TORCH_FN(roi_pool_forward_cuda));
  m.impl("_roi_pool_backward", TORCH_FN(roi_pool_backward_cuda));
}

}  // namespace cuda
}  // namespace pydet_ops
