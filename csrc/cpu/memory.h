// Allocation of large CPU result and scratch tensors (from the pool of cpu/pool.h) and layout conversion.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "cpu/layout_copy.h"
#include "cpu/pool.h"


namespace pydet_ops {
namespace cpu {

// An uninitialised tensor in the given memory format; large ones come from the pool, already faulted in.
inline at::Tensor empty_large(at::IntArrayRef shape, const at::TensorOptions& options,
                              at::MemoryFormat format = at::MemoryFormat::Contiguous) {
  return pooled_empty(shape, options, format);
}

// Zeros in the given memory format (at::zeros ignores a memory format in its options).
inline at::Tensor zeros_large(at::IntArrayRef shape, const at::TensorOptions& options,
                              at::MemoryFormat format = at::MemoryFormat::Contiguous) {
  return empty_large(shape, options, format).zero_();
}

// `t` in `format`: t itself when already laid out so, else a copy.
inline at::Tensor contiguous_large(const at::Tensor& t, at::MemoryFormat format) {
  if (t.is_contiguous(format)) return t;
  at::Tensor out = empty_large(t.sizes(), t.options(), format);
  copy_layout(out, t);
  return out;
}

// `t` converted to `dtype` in `format` (t itself when nothing changes).
inline at::Tensor converted_large(const at::Tensor& t, at::ScalarType dtype, at::MemoryFormat format) {
  if (t.scalar_type() == dtype && t.is_contiguous(format)) return t;
  at::Tensor out = empty_large(t.sizes(), t.options().dtype(dtype), format);
  copy_layout(out, t);
  return out;
}

}  // namespace cpu
}  // namespace pydet_ops
