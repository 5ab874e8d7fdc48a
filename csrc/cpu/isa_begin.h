// Opens an ISA-specific region of a per-ISA translation unit (csrc/ops/cpu/isa/*.cpp).
//
// Usage, in a file that defines PYDET_ISA_LEVEL to 0 (default), 1 (avx2) or 2 (avx512):
//   #include <everything the kernel body needs>   // outside the region: never compiled for the wider ISA
//   #include "cpu/isa_begin.h"
//   namespace pydet_ops { namespace cpu { namespace PYDET_ISA_NAMESPACE { ... kernel bodies ... } } }
//   #include "cpu/isa_end.h"
//
// Only functions defined inside the region get the wider instruction set, and they live in a namespace of
// their own, so no inline function shared with the rest of the program is ever compiled for an ISA the
// CPU may lack. Kernel bodies in the region call nothing outside it except inline templates and builtins.
#if !defined(PYDET_ISA_LEVEL)
#error "define PYDET_ISA_LEVEL before including cpu/isa_begin.h"
#endif

#if PYDET_ISA_LEVEL == 0
#define PYDET_ISA_NAMESPACE isa_default
#elif PYDET_ISA_LEVEL == 1
#define PYDET_ISA_NAMESPACE isa_avx2
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,bmi,bmi2,popcnt,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,popcnt,f16c")
#endif
#elif PYDET_ISA_LEVEL == 2
#define PYDET_ISA_NAMESPACE isa_avx512
#if defined(__clang__)
#pragma clang attribute push(                                                                             \
    __attribute__((target("avx512f,avx512cd,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2,popcnt,f16c"))), \
    apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512cd,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2,popcnt,f16c")
// Full 512-bit vectors: the loops here are short and arithmetic-bound, where 256-bit halves lose.
#pragma GCC target("prefer-vector-width=512")
#endif
#else
#error "PYDET_ISA_LEVEL must be 0, 1 or 2"
#endif
