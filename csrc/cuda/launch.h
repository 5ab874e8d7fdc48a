// Helpers shared by the CUDA kernels: launch sizes, checked launches, the device guard and stream.
//
// Every kernel entry point follows the same steps:
//   1. check arguments (the same checks as the CPU kernel: ops/checks.h, ops/roi_checks.h);
//   2. `c10::cuda::CUDAGuard guard(input.device())` and `stream = at::cuda::getCurrentCUDAStream()`;
//   3. return early for empty work (a grid of zero blocks is a launch error);
//   4. launch on `stream` with `grid_size(...)` blocks, then `PYDET_CUDA_CHECK_LAUNCH()`.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>

namespace pydet_ops {
namespace cuda {

constexpr int kThreads = 256;

// Blocks for `work` items at `threads` per block in a grid-stride loop: enough to fill the device several
// times over, never zero, never above the grid limit.
inline unsigned int grid_size(int64_t work, int threads = kThreads) {
  const int64_t needed = (work + threads - 1) / threads;
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t cap = std::max<int64_t>(sms * 32, 1);
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(needed, cap)));
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace cuda
}  // namespace pydet_ops

// Reports a failed launch (bad configuration, too many resources) at the call site.
#define PYDET_CUDA_CHECK_LAUNCH() C10_CUDA_KERNEL_LAUNCH_CHECK()

// Grid-stride loop over [0, n) with 64-bit indices (sizes may pass 2^31).
#define PYDET_CUDA_KERNEL_LOOP(i, n)                                                                   \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);             \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)
