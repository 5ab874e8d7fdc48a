// NCHW feature maps converted to channels_last band by band while the RoIs whose rows are ready are already
// being pooled.
//
// The conversion of a large map is bound by memory bandwidth: two threads convert it hardly faster than one
// (69 MB: 5.2 ms on one thread, 4.3-4.6 ms on two, on this project's 2-core machine). Pooling from the
// converted copy is bound by the cores and scales with threads. So instead of converting every map and then
// pooling, the maps are cut into bands of rows, one thread converts band after band while the others pool
// every RoI whose rows are converted, and every thread pools once the bands run out. A RoI's output is
// computed exactly as before: only the time at which it is computed moves.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "common/roi_align_math.h"
#include "cpu/memory.h"
#include "ops/cpu/roi_common.h"

namespace pydet_ops {
namespace cpu {

class BandedConversion {
 public:
  // The map the loops should read for `map`: `map` in `format`, or a channels_last copy when the map is
  // NCHW and the RoIs read each pixel often enough (`reads_per_channel`, worth_channels_last) to repay
  // the conversion. Such a copy is an uninitialised tensor whose bands run() fills. Maps are converted in
  // the order they are added: add the small ones first, so that their RoIs can be pooled while the large
  // ones are converted.
  at::Tensor add(const at::Tensor& map, at::MemoryFormat format, double reads_per_channel) {
    if (format != at::MemoryFormat::Contiguous || !worth_channels_last(reads_per_channel, map) || map.numel() == 0) {
      const at::Tensor read = contiguous_large(map, format);
      maps_.push_back(Map{read, read, -1, 0, 0});
      return read;
    }
    const at::Tensor src = contiguous_large(map, format);
    Map m{src, empty_large(src.sizes(), src.options(), at::MemoryFormat::ChannelsLast), bands_, 0, 0};
    // Bands of about 1 MiB: fine enough for pooling to follow closely behind, coarse enough to keep the
    // transposes' tiles whole.
    const int64_t row_bytes = src.size(1) * src.size(3) * src.element_size();
    m.rows_per_band = std::max<int64_t>(1, std::min(src.size(2), (int64_t(1) << 20) / row_bytes));
    m.bands_per_image = (src.size(2) + m.rows_per_band - 1) / m.rows_per_band;
    bands_ += src.size(0) * m.bands_per_image;
    maps_.push_back(m);
    return m.dst;
  }

  // The number of bands (over all maps, in conversion order) that must be converted before rows
  // [0, last_row] of image `image` of map `index` can be read; 0 when that map needs no conversion or
  // nothing is read (last_row < 0).
  int64_t bands_needed(size_t index, int64_t image, int64_t last_row) const {
    const Map& m = maps_[index];
    if (m.first_band < 0 || last_row < 0) return 0;
    return m.first_band + image * m.bands_per_image + last_row / m.rows_per_band + 1;
  }

  // Converts every band and calls pool(i) for i in [0, items), in parallel. `needed[i]` (bands_needed of
  // item i) must not decrease with i: items are handed out in order. Worker 0 converts while bands remain;
  // the other workers pool whatever is ready and convert the next band when nothing is. With one worker
  // (one thread, or inside another parallel region) that is: convert everything, then pool in order.
  template <typename PoolFn>
  void run(int64_t items, const std::vector<int64_t>& needed, const PoolFn& pool) {
    const int64_t bands = bands_;
    std::unique_ptr<std::atomic<bool>[]> done(new std::atomic<bool>[static_cast<size_t>(bands) + 1]);
    for (int64_t j = 0; j < bands; ++j) done[j].store(false);
    std::atomic<int64_t> next_band{0}, ready{0}, next_item{0};
    auto convert_one = [&]() {
      const int64_t j = next_band.fetch_add(1);
      if (j >= bands) return false;
      convert_band(j);
      done[j].store(true);
      // Advance the count of leading bands done (bands finish out of order across workers).
      int64_t r = ready.load();
      while (r < bands && done[r].load()) {
        if (ready.compare_exchange_weak(r, r + 1)) ++r;
      }
      return true;
    };
    at::parallel_for(0, std::max<int64_t>(1, at::get_num_threads()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t worker = begin; worker < end; ++worker) {
        for (;;) {
          if (worker == 0 && convert_one()) continue;
          int64_t i = next_item.load();
          if (i >= items) break;
          if (needed[i] <= ready.load()) {
            if (next_item.compare_exchange_weak(i, i + 1)) pool(i);
          } else if (!convert_one()) {
            std::this_thread::yield();  // the band item i waits for is being converted by another worker
          }
        }
      }
    });
  }

 private:
  struct Map {
    at::Tensor src, dst;
    int64_t first_band;  // -1: read as it is
    int64_t rows_per_band, bands_per_image;
  };

  void convert_band(int64_t band) {
    for (Map& m : maps_) {
      const int64_t count = m.src.size(0) * m.bands_per_image;
      if (m.first_band < 0 || band < m.first_band || band >= m.first_band + count) continue;
      const int64_t image = (band - m.first_band) / m.bands_per_image;
      const int64_t row = (band - m.first_band) % m.bands_per_image * m.rows_per_band;
      copy_rows_to_channels_last(m.dst, m.src, image, row, std::min(m.src.size(2), row + m.rows_per_band));
      return;
    }
  }

  std::vector<Map> maps_;
  int64_t bands_ = 0;
};

// At least the last row of the map a RoI's bilinear samples read: the upper tap of its lowest sampling
// point is at most floor(y) + 1, and one more row covers rounding between sample rows. -1 when it reads
// none (no sampling point, or all above the map).
template <typename T>
int64_t last_row_read(const roi_math::RoiAlignGeometry<T>& g, int pooled_h, int64_t height) {
  if (g.grid_h <= 0 || height <= 0) return -1;
  const T first = roi_math::sample_coord(g.start_h, g.bin_h, 0, 0, g.grid_h);
  const T last = roi_math::sample_coord(g.start_h, g.bin_h, pooled_h - 1, g.grid_h - 1, g.grid_h);
  const double y = std::max(static_cast<double>(first), static_cast<double>(last));
  if (!(y >= -1.0)) return -1;
  return static_cast<int64_t>(std::min(std::floor(std::max(y, 0.0)) + 2.0, static_cast<double>(height - 1)));
}

// The last row a roi_pool RoI's bins read (plus one row of margin), or -1 when they read none.
inline int64_t last_row_pooled(const roi_math::RoiPoolGeometry& g, int64_t height) {
  const int64_t last = static_cast<int64_t>(g.start_h) + g.roi_h;
  if (height <= 0 || last < 0) return -1;
  return std::min(last, height - 1);
}

// Stably sorts `order` (item ids) by the bands each item waits for (`needed`, indexed by id) and returns
// those counts in the sorted order, as run() takes them.
inline std::vector<int64_t> sort_by_bands(std::vector<int64_t>& order, const std::vector<int64_t>& needed) {
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return needed[a] < needed[b]; });
  std::vector<int64_t> sorted(order.size());
  for (size_t i = 0; i < order.size(); ++i) sorted[i] = needed[order[i]];
  return sorted;
}

// The pooling order of the RoIs of one map, the first added to `conversion`: by image and place on the map
// (spatial_order), then by the bands of the conversion their rows wait for. Fills `order` and returns, in
// that order, the bands each RoI waits for (as run() takes them). `last_row(roi)` is the last map row the
// RoI whose 5 values start at `roi` reads, or -1.
template <typename T, typename LastRow>
std::vector<int64_t> single_map_order(const at::Tensor& rois, double spatial_scale,
                                      const BandedConversion& conversion, const LastRow& last_row,
                                      std::vector<int64_t>& order) {
  order = spatial_order<T>(rois, spatial_scale);
  const T* data = rois.const_data_ptr<T>();
  std::vector<int64_t> needed(static_cast<size_t>(rois.size(0)));
  for (int64_t k = 0; k < rois.size(0); ++k) {
    needed[k] = conversion.bands_needed(0, static_cast<int64_t>(data[5 * k]), last_row(data + 5 * k));
  }
  return sort_by_bands(order, needed);
}

}  // namespace cpu
}  // namespace pydet_ops
