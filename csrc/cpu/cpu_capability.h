// Run-time selection of the instruction set used by the CPU kernels.
//
// Hot loops are compiled once per ISA level (see cpu/isa_begin.h) into namespaces isa_default, isa_avx2 and
// isa_avx512. At run time the best level the CPU supports is used, capped by the environment variable
// PYDET_OPS_CPU_CAPABILITY=default|avx2|avx512 (read once, like ATen's ATEN_CPU_CAPABILITY).
#pragma once

#include <string>

namespace pydet_ops {
namespace cpu {

enum class CpuCapability : int { kDefault = 0, kAVX2 = 1, kAVX512 = 2 };

// The level the kernels use now.
CpuCapability active_capability();

// Highest level this CPU supports, ignoring the environment variable.
CpuCapability max_supported_capability();

// Overrides the active level (clamped to what the CPU supports); returns the level now in force.
// Meant for tests that run every kernel under every level in one process.
CpuCapability set_capability(CpuCapability requested);

const char* capability_name(CpuCapability capability);

// Parses "default", "avx2" or "avx512" (case-insensitive); throws c10::Error naming the value otherwise.
CpuCapability parse_capability(const std::string& name);

// Picks the entry of a per-ISA table for the active level:
//   select_by_capability(isa_default::fn, isa_avx2::fn, isa_avx512::fn)
template <typename Fn>
Fn select_by_capability(Fn default_fn, Fn avx2_fn, Fn avx512_fn) {
  switch (active_capability()) {
    case CpuCapability::kAVX512:
      return avx512_fn;
    case CpuCapability::kAVX2:
      return avx2_fn;
    default:
      return default_fn;
  }
}

}  // namespace cpu
}  // namespace pydet_ops

// Declares `decl` (a function declaration without namespace) once per ISA namespace.
#define PYDET_DECLARE_PER_ISA(...)             \
  namespace isa_default {                      \
  __VA_ARGS__;                                 \
  }                                            \
  namespace isa_avx2 {                         \
  __VA_ARGS__;                                 \
  }                                            \
  namespace isa_avx512 {                       \
  __VA_ARGS__;                                 \
  }

// The per-ISA version of `name`, a function of pointer type `FnPtr`, for the active level.
#define PYDET_SELECT_ISA(FnPtr, name) \
  ::pydet_ops::cpu::select_by_capability<FnPtr>(&isa_default::name, &isa_avx2::name, &isa_avx512::name)
