// Portability macros shared by the CPU and CUDA kernels.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PYDET_HOST_DEVICE __host__ __device__
#else
#define PYDET_HOST_DEVICE
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PYDET_RESTRICT __restrict__
#define PYDET_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define PYDET_RESTRICT
#define PYDET_ALWAYS_INLINE inline
#endif
