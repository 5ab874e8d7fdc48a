// RoI align forward and backward loops, compiled once per ISA level (see cpu/isa_begin.h).
// Include only from csrc/ops/cpu/isa/roi_ops_*.cpp, after cpu/isa_begin.h.
//
// Sampling points and bilinear weights are computed once per (RoI, bin, sample) and applied to every
// channel of the block in the innermost loop. With channels_last maps that loop is contiguous and runs at
// full vector width; with NCHW maps it is strided and scalar (the kernel file converts NCHW maps to
// channels_last first when the RoIs read each pixel several times over).

namespace pydet_ops {
namespace cpu {
namespace PYDET_ISA_NAMESPACE {
namespace {

// NCHW output written from a channels_last map: rather than one strided store per channel and bin, a RoI's
// bins are staged channels_last (contiguous, vector stores) and moved into the output by one register
// transpose. For 32-bit elements and NCHW outputs whose planes are contiguous (a RoI's channels
// [c_begin, c_end) are then one contiguous block).
template <typename E>
bool stage_roi_output(const RoiAlignParams& p, const MapView& out, bool unit_channel_stride) {
  const int64_t bins = int64_t(p.pooled_h) * p.pooled_w;
  return sizeof(E) == 4 && unit_channel_stride && out.stride_c != 1 && out.stride_w == 1 &&
         out.stride_h == p.pooled_w && out.stride_c == bins;
}

// stage[bin][c] (bins x nc, 32-bit) -> out[c][bin].
template <typename E>
PYDET_ALWAYS_INLINE void unstage(const E* stage, E* out, int64_t bins, int64_t nc) {
  transpose_block(reinterpret_cast<const uint32_t*>(stage), reinterpret_cast<uint32_t*>(out), bins, nc, 0, bins, 0,
                  nc);
}

// The sampling points of a RoI along one axis (bin p, point i at [p * grid + i]): their bilinear taps and
// the element offsets of the two neighbouring rows (or columns). Computed once per RoI; a point's 2-D taps
// are those of its row and column.
template <typename T>
struct AxisSamples {
  roi_math::AxisTap<T> tap;
  int64_t low_offset, high_offset;
  bool inside;
};

template <typename T>
void axis_samples(T start, T bin, int pooled, int grid, int size, int64_t stride, std::vector<AxisSamples<T>>& out) {
  out.resize(static_cast<size_t>(int64_t(pooled) * grid));
  for (int p = 0; p < pooled; ++p) {
    for (int i = 0; i < grid; ++i) {
      AxisSamples<T>& a = out[int64_t(p) * grid + i];
      a.inside = roi_math::axis_tap(roi_math::sample_coord(start, bin, p, i, grid), size, a.tap);
      a.low_offset = a.inside ? a.tap.low * stride : 0;
      a.high_offset = a.inside ? a.tap.high * stride : 0;
    }
  }
}

// One sampling point of a bin: its four bilinear weights and the element offsets of its four pixels.
template <typename T>
struct PointTaps {
  T w1, w2, w3, w4;
  int64_t o1, o2, o3, o4;
};

// A vector of 64 bytes of T (GCC vector extension: lowered to the widest registers the ISA level has).
template <typename T>
struct Vec64Of;
template <>
struct Vec64Of<float> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct Vec64Of<double> {
  typedef double type __attribute__((vector_size(64)));
};
template <typename T>
using Vec64 = typename Vec64Of<T>::type;

// Vectors accumulated in registers per pass over a bin's points: as many as the ISA level's registers hold
// with the loads in flight. A pass covers kRegisterBlock<T> channels.
constexpr int kAccumulators = PYDET_ISA_LEVEL == 2 ? 4 : PYDET_ISA_LEVEL == 1 ? 2 : 1;
template <typename T>
constexpr int64_t kRegisterBlock = int64_t(64 / sizeof(T)) * kAccumulators;

// acc[c] = sum over the bin's points of the point's bilinear value, for the channels [0, done) of a
// channels_last map of the arithmetic type (returns done, a multiple of the block width). Each block of
// channels is summed in registers over all points, in point order, with the same operations as the scalar
// loop, so the sums are bit-identical to it. Summing into memory instead made every point's store wait for
// the previous point's: 70 % of the forward's time in the store.
template <typename T>
int64_t sum_points_in_registers(const PointTaps<T>* points, int64_t n, const T* base, int64_t nc, T* acc) {
  constexpr int64_t kLanes = 64 / sizeof(T);
  int64_t c = 0;
  for (; c + kRegisterBlock<T> <= nc; c += kRegisterBlock<T>) {
    Vec64<T> a[kAccumulators];
    for (int u = 0; u < kAccumulators; ++u) a[u] = Vec64<T>{};
    for (int64_t i = 0; i < n; ++i) {
      const PointTaps<T>& t = points[i];
      const T* p = base + c;
      for (int u = 0; u < kAccumulators; ++u) {
        const int64_t o = u * kLanes;
        Vec64<T> v1, v2, v3, v4;  // unaligned loads
        __builtin_memcpy(&v1, p + t.o1 + o, sizeof(v1));
        __builtin_memcpy(&v2, p + t.o2 + o, sizeof(v2));
        __builtin_memcpy(&v3, p + t.o3 + o, sizeof(v3));
        __builtin_memcpy(&v4, p + t.o4 + o, sizeof(v4));
        a[u] += t.w1 * v1 + t.w2 * v2 + t.w3 * v3 + t.w4 * v4;
      }
    }
    for (int u = 0; u < kAccumulators; ++u) __builtin_memcpy(acc + c + u * kLanes, &a[u], sizeof(a[u]));
  }
  return c;
}

template <typename E, bool kUnitChannelStride>
void roi_align_forward_impl(const RoiAlignParams& p, const MapView& in, const MapView& out, int64_t roi_begin,
                            int64_t roi_end, int64_t c_begin, int64_t c_end) {
  using T = typename Element<E>::Acc;
  const T* rois = static_cast<const T*>(p.rois);
  const int height = static_cast<int>(in.height), width = static_cast<int>(in.width);
  const int64_t nc = c_end - c_begin;
  const int64_t sc = kUnitChannelStride ? 1 : in.stride_c;
  std::vector<T> acc_store(static_cast<size_t>(nc));
  T* PYDET_RESTRICT acc = acc_store.data();
  const E* input = static_cast<const E*>(in.data);
  E* output = static_cast<E*>(out.data);
  const bool staged = stage_roi_output<E>(p, out, kUnitChannelStride);
  const int64_t bins = int64_t(p.pooled_h) * p.pooled_w;
  std::vector<E> stage_store(staged ? static_cast<size_t>(bins * nc) : 0);

  std::vector<AxisSamples<T>> rows, cols;
  // Channels_last maps of the arithmetic type with a register block of channels or more are summed in
  // registers (sum_points_in_registers).
  const bool in_registers = kUnitChannelStride && std::is_same<E, T>::value && nc >= kRegisterBlock<T>;
  std::vector<PointTaps<T>> points;

  for (int64_t k = roi_begin; k < roi_end; ++k) {
    const T* roi = rois + 5 * k;
    const int64_t b = static_cast<int64_t>(roi[0]);
    const auto g = roi_math::roi_align_geometry<T>(roi[1], roi[2], roi[3], roi[4], static_cast<T>(p.spatial_scale),
                                                   p.pooled_h, p.pooled_w, p.sampling_ratio, p.aligned);
    axis_samples(g.start_h, g.bin_h, p.pooled_h, g.grid_h, height, in.stride_h, rows);
    axis_samples(g.start_w, g.bin_w, p.pooled_w, g.grid_w, width, in.stride_w, cols);
    const E* base = input + b * in.stride_n + c_begin * in.stride_c;
    for (int ph = 0; ph < p.pooled_h; ++ph) {
      for (int pw = 0; pw < p.pooled_w; ++pw) {
        // The bin's sampling points inside the map, in torchvision's order.
        points.clear();
        for (int iy = 0; iy < g.grid_h; ++iy) {
          const AxisSamples<T>& ty = rows[int64_t(ph) * g.grid_h + iy];
          if (!ty.inside) continue;
          for (int ix = 0; ix < g.grid_w; ++ix) {
            const AxisSamples<T>& tx = cols[int64_t(pw) * g.grid_w + ix];
            if (!tx.inside) continue;
            roi_math::BilinearTaps<T> t;
            roi_math::combine_taps(ty.tap, tx.tap, t);
            points.push_back(PointTaps<T>{t.w1, t.w2, t.w3, t.w4, ty.low_offset + tx.low_offset,
                                          ty.low_offset + tx.high_offset, ty.high_offset + tx.low_offset,
                                          ty.high_offset + tx.high_offset});
          }
        }
        const int64_t c_done =
            in_registers ? sum_points_in_registers<T>(points.data(), static_cast<int64_t>(points.size()),
                                                      reinterpret_cast<const T*>(base), nc, acc)
                         : 0;
        // The remaining channels (all of them for other maps), summed in `acc`.
        for (int64_t c = c_done; c < nc; ++c) acc[c] = T(0);
        if (c_done < nc) {
          for (const PointTaps<T>& t : points) {
            const E* PYDET_RESTRICT v1 = base + t.o1;
            const E* PYDET_RESTRICT v2 = base + t.o2;
            const E* PYDET_RESTRICT v3 = base + t.o3;
            const E* PYDET_RESTRICT v4 = base + t.o4;
            for (int64_t c = c_done; c < nc; ++c) {
              acc[c] += t.w1 * Element<E>::load(v1[c * sc]) + t.w2 * Element<E>::load(v2[c * sc]) +
                        t.w3 * Element<E>::load(v3[c * sc]) + t.w4 * Element<E>::load(v4[c * sc]);
            }
          }
        }
        E* PYDET_RESTRICT o = output + k * out.stride_n + c_begin * out.stride_c + ph * out.stride_h + pw * out.stride_w;
        if (staged) {
          E* PYDET_RESTRICT st = stage_store.data() + (int64_t(ph) * p.pooled_w + pw) * nc;
          for (int64_t c = 0; c < nc; ++c) st[c] = Element<E>::store(acc[c] / g.count);
        } else if (out.stride_c == 1) {
          for (int64_t c = 0; c < nc; ++c) o[c] = Element<E>::store(acc[c] / g.count);
        } else {
          const int64_t osc = out.stride_c;
          for (int64_t c = 0; c < nc; ++c) o[c * osc] = Element<E>::store(acc[c] / g.count);
        }
      }
    }
    if (staged) unstage(stage_store.data(), output + k * out.stride_n + c_begin * out.stride_c, bins, nc);
  }
}

// One pass adding a sample's four weighted gradients to four distinct pixels.
template <typename T>
PYDET_ALWAYS_INLINE void scatter4_distinct(T* PYDET_RESTRICT q1, T* PYDET_RESTRICT q2, T* PYDET_RESTRICT q3,
                                           T* PYDET_RESTRICT q4, const T* PYDET_RESTRICT grad, T w1, T w2, T w3, T w4,
                                           T count, int64_t nc, int64_t sc) {
  for (int64_t c = 0; c < nc; ++c) {
    const T gc = grad[c];
    q1[c * sc] += gc * w1 / count;
    q2[c * sc] += gc * w2 / count;
    q3[c * sc] += gc * w3 / count;
    q4[c * sc] += gc * w4 / count;
  }
}

// grad_input is always in the arithmetic type (a float32 scratch map for half types).
template <typename E, bool kUnitChannelStride>
void roi_align_backward_impl(const RoiAlignParams& p, const MapView& gout, const MapView& gin, const int64_t* roi_ids,
                             int64_t num_ids, int64_t c_begin, int64_t c_end, int64_t row_begin, int64_t row_end) {
  using T = typename Element<E>::Acc;
  const T* rois = static_cast<const T*>(p.rois);
  const int height = static_cast<int>(gin.height), width = static_cast<int>(gin.width);
  const int64_t nc = c_end - c_begin;
  const int64_t sc = kUnitChannelStride ? 1 : gin.stride_c;
  std::vector<T> grad_store(static_cast<size_t>(nc));
  T* PYDET_RESTRICT grad = grad_store.data();
  const E* grad_output = static_cast<const E*>(gout.data);
  T* grad_input = static_cast<T*>(gin.data);
  std::vector<AxisSamples<T>> rows, cols;

  for (int64_t r = 0; r < num_ids; ++r) {
    const int64_t k = roi_ids[r];
    const T* roi = rois + 5 * k;
    const int64_t b = static_cast<int64_t>(roi[0]);
    const auto g = roi_math::roi_align_geometry<T>(roi[1], roi[2], roi[3], roi[4], static_cast<T>(p.spatial_scale),
                                                   p.pooled_h, p.pooled_w, p.sampling_ratio, p.aligned);
    axis_samples(g.start_h, g.bin_h, p.pooled_h, g.grid_h, height, gin.stride_h, rows);
    axis_samples(g.start_w, g.bin_w, p.pooled_w, g.grid_w, width, gin.stride_w, cols);
    T* base = grad_input + b * gin.stride_n + c_begin * gin.stride_c;
    for (int ph = 0; ph < p.pooled_h; ++ph) {
      for (int pw = 0; pw < p.pooled_w; ++pw) {
        const E* go = grad_output + k * gout.stride_n + c_begin * gout.stride_c + ph * gout.stride_h + pw * gout.stride_w;
        const int64_t gsc = gout.stride_c;
        // The bin's gradient over the channel block: read in place when it is already a contiguous run of
        // the arithmetic type (channels_last float), gathered / converted into `grad_store` otherwise.
        const T* bin_grad = grad;
        if (std::is_same<E, T>::value && gsc == 1) {
          bin_grad = reinterpret_cast<const T*>(go);
        } else {
          for (int64_t c = 0; c < nc; ++c) grad[c] = Element<E>::load(go[c * gsc]);
        }
        for (int iy = 0; iy < g.grid_h; ++iy) {
          const AxisSamples<T>& ty = rows[int64_t(ph) * g.grid_h + iy];
          if (!ty.inside) continue;
          // Only cells in this call's row band; the others belong to another call.
          const bool low_in = ty.tap.low >= row_begin && ty.tap.low < row_end;
          const bool high_in = ty.tap.high >= row_begin && ty.tap.high < row_end;
          if (!low_in && !high_in) continue;
          for (int ix = 0; ix < g.grid_w; ++ix) {
            const AxisSamples<T>& tx = cols[int64_t(pw) * g.grid_w + ix];
            if (!tx.inside) continue;
            roi_math::BilinearTaps<T> t;
            roi_math::combine_taps(ty.tap, tx.tap, t);
            // Added in torchvision's order: (low, low), (low, high), (high, low), (high, high).
            T* q1 = base + ty.low_offset + tx.low_offset;
            T* q2 = base + ty.low_offset + tx.high_offset;
            T* q3 = base + ty.high_offset + tx.low_offset;
            T* q4 = base + ty.high_offset + tx.high_offset;
            if (low_in && high_in && t.x_low != t.x_high && t.y_low != t.y_high) {
              scatter4_distinct<T>(q1, q2, q3, q4, bin_grad, t.w1, t.w2, t.w3, t.w4, g.count, nc, sc);
            } else {
              // Taps coincide at the last row or column, or half the taps are another band's: separate
              // passes, each seeing the previous sums.
              if (low_in) {
                for (int64_t c = 0; c < nc; ++c) q1[c * sc] += bin_grad[c] * t.w1 / g.count;
                for (int64_t c = 0; c < nc; ++c) q2[c * sc] += bin_grad[c] * t.w2 / g.count;
              }
              if (high_in) {
                for (int64_t c = 0; c < nc; ++c) q3[c * sc] += bin_grad[c] * t.w3 / g.count;
                for (int64_t c = 0; c < nc; ++c) q4[c * sc] += bin_grad[c] * t.w4 / g.count;
              }
            }
          }
        }
      }
    }
  }
}

template <template <typename, bool> class Kernel, typename... Args>
void dispatch_element(ElementType type, bool unit_channel_stride, Args&&... args) {
  switch (type) {
#define PYDET_CASE(TAG, E)                                   \
  case ElementType::TAG:                                     \
    if (unit_channel_stride) {                               \
      Kernel<E, true>::run(std::forward<Args>(args)...);     \
    } else {                                                 \
      Kernel<E, false>::run(std::forward<Args>(args)...);    \
    }                                                        \
    break;
    PYDET_CASE(kFloat, float)
    PYDET_CASE(kDouble, double)
    PYDET_CASE(kHalf, HalfBits)
    PYDET_CASE(kBFloat16, BFloat16Bits)
#undef PYDET_CASE
  }
}

template <typename E, bool kUnit>
struct ForwardKernel {
  template <typename... Args>
  static void run(Args&&... args) {
    roi_align_forward_impl<E, kUnit>(std::forward<Args>(args)...);
  }
};

template <typename E, bool kUnit>
struct BackwardKernel {
  template <typename... Args>
  static void run(Args&&... args) {
    roi_align_backward_impl<E, kUnit>(std::forward<Args>(args)...);
  }
};

}  // namespace

PYDET_ROI_ALIGN_FORWARD_DECL {
  dispatch_element<ForwardKernel>(p.type, input.stride_c == 1, p, input, output, roi_begin, roi_end, c_begin, c_end);
}

PYDET_ROI_ALIGN_BACKWARD_DECL {
  dispatch_element<BackwardKernel>(p.type, grad_input.stride_c == 1, p, grad_output, grad_input, roi_ids, num_ids,
                                   c_begin, c_end, row_begin, row_end);
}

}  // namespace PYDET_ISA_NAMESPACE
}  // namespace cpu
}  // namespace pydet_ops
