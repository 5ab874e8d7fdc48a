#include "cpu/cpu_capability.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>

namespace pydet_ops {
namespace cpu {
namespace {

CpuCapability detect() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  // The avx512 kernels are compiled for the Skylake-server subset (F, CD, VL, BW, DQ) plus FMA.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("fma")) {
    return CpuCapability::kAVX512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return CpuCapability::kAVX2;
  }
#endif
  return CpuCapability::kDefault;
}

CpuCapability initial_capability() {
  const CpuCapability supported = detect();
  const char* env = std::getenv("PYDET_OPS_CPU_CAPABILITY");
  if (env == nullptr || *env == '\0') {
    return supported;
  }
  const CpuCapability requested = parse_capability(env);
  return static_cast<int>(requested) < static_cast<int>(supported) ? requested : supported;
}

std::atomic<int>& active_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_capability())};
  return slot;
}

}  // namespace

CpuCapability max_supported_capability() {
  static const CpuCapability supported = detect();
  return supported;
}

CpuCapability active_capability() {
  return static_cast<CpuCapability>(active_slot().load(std::memory_order_relaxed));
}

CpuCapability set_capability(CpuCapability requested) {
  const int level = std::min(static_cast<int>(requested), static_cast<int>(max_supported_capability()));
  active_slot().store(level, std::memory_order_relaxed);
  return static_cast<CpuCapability>(level);
}

const char* capability_name(CpuCapability capability) {
  switch (capability) {
    case CpuCapability::kAVX512:
      return "avx512";
    case CpuCapability::kAVX2:
      return "avx2";
    default:
      return "default";
  }
}

CpuCapability parse_capability(const std::string& name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower == "default") return CpuCapability::kDefault;
  if (lower == "avx2") return CpuCapability::kAVX2;
  if (lower == "avx512") return CpuCapability::kAVX512;
  TORCH_CHECK(false, "PYDET_OPS_CPU_CAPABILITY / capability must be one of 'default', 'avx2', 'avx512', got '",
              name, "'");
}

namespace {

std::string active_capability_name() {
  return capability_name(active_capability());
}

std::string set_capability_by_name(const std::string& name) {
  return capability_name(set_capability(parse_capability(name)));
}

}  // namespace

// Introspection ops (no tensors, so catch-all kernels): pydet_ops.cpu_capability() and the test hook.
TORCH_LIBRARY_FRAGMENT(pydet_ops, m) {
  m.def("_cpu_capability() -> str", &active_capability_name);
  m.def("_set_cpu_capability(str capability) -> str", &set_capability_by_name);
}

}  // namespace cpu
}  // namespace pydet_ops
