// RoI max pooling forward and backward loops, compiled once per ISA level (see cpu/isa_begin.h).
// Include only from csrc/ops/cpu/isa/roi_ops_*.cpp, after roi_align_loops.h (it uses its dispatch_element). The innermost loop runs over
// the channels of a block: contiguous (vectorised max-with-index) for channels_last maps.

namespace pydet_ops {
namespace cpu {
namespace PYDET_ISA_NAMESPACE {
namespace {

// Signed integers of T's width: argmax lanes that line up with T's comparison masks.
template <typename T>
struct SameWidthIndex;
template <>
struct SameWidthIndex<float> {
  using type = int32_t;
  typedef int32_t vector __attribute__((vector_size(64)));
};
template <>
struct SameWidthIndex<double> {
  using type = int64_t;
  typedef int64_t vector __attribute__((vector_size(64)));
};

// best[c] / best_at[c] = the maximum of channel c over the pixels [h0, h1) x [w0, w1) of a channels_last
// map of the arithmetic type and its plane index, for the channels [0, done) (returns done). Each block of
// channels keeps its maxima in registers over all pixels, visited in the scalar loop's order with the same
// comparison (the first maximum wins, NaN never replaces), so the results are identical to it.
template <typename T>
int64_t max_in_registers(const T* base, int64_t stride_h, int64_t stride_w, int h0, int h1, int w0, int w1, int width,
                         T start, int64_t nc, T* best, int32_t* best_at) {
  using Index = typename SameWidthIndex<T>::type;
  using IndexVec = typename SameWidthIndex<T>::vector;
  constexpr int64_t kLanes = 64 / sizeof(T);
  int64_t c = 0;
  for (; c + kRegisterBlock<T> <= nc; c += kRegisterBlock<T>) {
    Vec64<T> m[kAccumulators];
    IndexVec at[kAccumulators];
    for (int u = 0; u < kAccumulators; ++u) {
      m[u] = Vec64<T>{} + start;
      at[u] = IndexVec{} - 1;
    }
    for (int h = h0; h < h1; ++h) {
      for (int w = w0; w < w1; ++w) {
        const T* v = base + h * stride_h + w * stride_w + c;
        const Index here = static_cast<Index>(h) * width + w;
        for (int u = 0; u < kAccumulators; ++u) {
          Vec64<T> x;
          __builtin_memcpy(&x, v + u * kLanes, sizeof(x));
          const IndexVec greater = x > m[u];
          m[u] = greater ? x : m[u];
          at[u] = greater ? IndexVec{} + here : at[u];
        }
      }
    }
    for (int u = 0; u < kAccumulators; ++u) {
      __builtin_memcpy(best + c + u * kLanes, &m[u], sizeof(m[u]));
      for (int64_t j = 0; j < kLanes; ++j) best_at[c + u * kLanes + j] = static_cast<int32_t>(at[u][j]);
    }
  }
  return c;
}

template <typename E, bool kUnitChannelStride>
void roi_pool_forward_impl(const RoiAlignParams& p, const MapView& in, const MapView& out, int32_t* argmax,
                           int64_t roi_begin, int64_t roi_end, int64_t c_begin, int64_t c_end) {
  using T = typename Element<E>::Acc;
  const T* rois = static_cast<const T*>(p.rois);
  const int height = static_cast<int>(in.height), width = static_cast<int>(in.width);
  const int64_t nc = c_end - c_begin;
  const int64_t sc = kUnitChannelStride ? 1 : in.stride_c;
  std::vector<T> max_store(static_cast<size_t>(nc));
  std::vector<int32_t> arg_store(static_cast<size_t>(nc));
  T* PYDET_RESTRICT best = max_store.data();
  int32_t* PYDET_RESTRICT best_at = arg_store.data();
  const E* input = static_cast<const E*>(in.data);
  E* output = static_cast<E*>(out.data);
  const bool staged = stage_roi_output<E>(p, out, kUnitChannelStride);
  const int64_t bins = int64_t(p.pooled_h) * p.pooled_w;
  std::vector<E> stage_store(staged ? static_cast<size_t>(bins * nc) : 0);
  std::vector<int32_t> stage_arg(staged ? static_cast<size_t>(bins * nc) : 0);
  const bool in_registers = kUnitChannelStride && std::is_same<E, T>::value && nc >= kRegisterBlock<T>;

  for (int64_t k = roi_begin; k < roi_end; ++k) {
    const T* roi = rois + 5 * k;
    const int64_t b = static_cast<int64_t>(roi[0]);
    const auto g = roi_math::roi_pool_geometry<T>(roi[1], roi[2], roi[3], roi[4], static_cast<T>(p.spatial_scale));
    const E* base = input + b * in.stride_n + c_begin * in.stride_c;
    for (int ph = 0; ph < p.pooled_h; ++ph) {
      int h0, h1;
      roi_math::roi_pool_bin<T>(ph, p.pooled_h, g.roi_h, g.start_h, height, h0, h1);
      for (int pw = 0; pw < p.pooled_w; ++pw) {
        int w0, w1;
        roi_math::roi_pool_bin<T>(pw, p.pooled_w, g.roi_w, g.start_w, width, w0, w1);
        const bool empty = !g.valid || h1 <= h0 || w1 <= w0;
        // torchvision starts from -FLT_MAX (also for float64) and keeps the first maximum.
        const T start = empty ? T(0) : static_cast<T>(-3.40282346638528859812e+38);
        // Float and double channels_last maps: blocks of channels in registers, the rest in memory.
        const int64_t c_done =
            in_registers && !empty
                ? max_in_registers<T>(reinterpret_cast<const T*>(base), in.stride_h, in.stride_w, h0, h1, w0, w1,
                                      width, start, nc, best, best_at)
                : 0;
        for (int64_t c = c_done; c < nc; ++c) {
          best[c] = start;
          best_at[c] = -1;
        }
        if (!empty && c_done < nc) {
          for (int h = h0; h < h1; ++h) {
            for (int w = w0; w < w1; ++w) {
              const E* PYDET_RESTRICT v = base + h * in.stride_h + w * in.stride_w;
              const int32_t at = h * width + w;
              for (int64_t c = c_done; c < nc; ++c) {
                const T x = Element<E>::load(v[c * sc]);
                const bool greater = x > best[c];
                best[c] = greater ? x : best[c];
                best_at[c] = greater ? at : best_at[c];
              }
            }
          }
        }
        const int64_t o = k * out.stride_n + c_begin * out.stride_c + ph * out.stride_h + pw * out.stride_w;
        // argmax has the output's layout.
        if (staged) {
          const int64_t bin = int64_t(ph) * p.pooled_w + pw;
          E* PYDET_RESTRICT out_c = stage_store.data() + bin * nc;
          int32_t* PYDET_RESTRICT arg_c = stage_arg.data() + bin * nc;
          for (int64_t c = 0; c < nc; ++c) {
            out_c[c] = Element<E>::store(best[c]);
            arg_c[c] = best_at[c];
          }
        } else if (out.stride_c == 1) {
          E* PYDET_RESTRICT out_c = output + o;
          int32_t* PYDET_RESTRICT arg_c = argmax + o;
          for (int64_t c = 0; c < nc; ++c) {
            out_c[c] = Element<E>::store(best[c]);
            arg_c[c] = best_at[c];
          }
        } else {
          for (int64_t c = 0; c < nc; ++c) {
            output[o + c * out.stride_c] = Element<E>::store(best[c]);
            argmax[o + c * out.stride_c] = best_at[c];
          }
        }
      }
    }
    if (staged) {
      const int64_t at = k * out.stride_n + c_begin * out.stride_c;
      unstage(stage_store.data(), output + at, bins, nc);
      unstage(stage_arg.data(), argmax + at, bins, nc);
    }
  }
}

template <typename E, bool kUnitChannelStride>
void roi_pool_backward_impl(const RoiAlignParams& p, const MapView& gout, const int32_t* argmax, const MapView& gin,
                            const int64_t* roi_ids, int64_t num_ids, int64_t c_begin, int64_t c_end) {
  using T = typename Element<E>::Acc;
  const T* rois = static_cast<const T*>(p.rois);
  const int64_t nc = c_end - c_begin;
  const E* grad_output = static_cast<const E*>(gout.data);
  T* grad_input = static_cast<T*>(gin.data);
  for (int64_t r = 0; r < num_ids; ++r) {
    const int64_t k = roi_ids[r];
    const int64_t b = static_cast<int64_t>(rois[5 * k]);
    // A plane index h * W + w is at offset index * stride_w in NCHW and channels_last maps alike.
    T* base = grad_input + b * gin.stride_n + c_begin * gin.stride_c;
    for (int ph = 0; ph < p.pooled_h; ++ph) {
      for (int pw = 0; pw < p.pooled_w; ++pw) {
        const int64_t o = k * gout.stride_n + c_begin * gout.stride_c + ph * gout.stride_h + pw * gout.stride_w;
        for (int64_t c = 0; c < nc; ++c) {
          const int32_t at = argmax[o + c * gout.stride_c];
          if (at >= 0) base[c * gin.stride_c + at * gin.stride_w] += Element<E>::load(grad_output[o + c * gout.stride_c]);
        }
      }
    }
  }
}

template <typename E, bool kUnit>
struct PoolForwardKernel {
  template <typename... Args>
  static void run(Args&&... args) {
    roi_pool_forward_impl<E, kUnit>(std::forward<Args>(args)...);
  }
};

template <typename E, bool kUnit>
struct PoolBackwardKernel {
  template <typename... Args>
  static void run(Args&&... args) {
    roi_pool_backward_impl<E, kUnit>(std::forward<Args>(args)...);
  }
};

}  // namespace

PYDET_ROI_POOL_FORWARD_DECL {
  dispatch_element<PoolForwardKernel>(p.type, input.stride_c == 1, p, input, output, argmax, roi_begin, roi_end,
                                      c_begin, c_end);
}

PYDET_ROI_POOL_BACKWARD_DECL {
  dispatch_element<PoolBackwardKernel>(p.type, grad_input.stride_c == 1, p, grad_output, argmax, grad_input, roi_ids,
                                       num_ids, c_begin, c_end);
}

}  // namespace PYDET_ISA_NAMESPACE
}  // namespace cpu
}  // namespace pydet_ops
