// Greedy NMS over one run of score-sorted boxes, compiled once per ISA level (see cpu/isa_begin.h).
// Include only from csrc/ops/cpu/isa/nms_*.cpp, after cpu/isa_begin.h.
//
// Two exact strategies, both giving torchvision's kept set bit for bit:
//  * dense: for each kept box, one branch-free vectorised sweep over all later boxes (torchvision's loop
//    without its per-pair branch). Always valid; used for short runs, a negative or NaN threshold, or
//    non-finite coordinates.
//  * grid: each candidate, in score order, is tested only against the kept boxes that share a cell of a
//    uniform grid with it. With a threshold >= 0 a pair can only suppress when the boxes overlap with
//    positive width and height, and two boxes whose cell ranges are disjoint on an axis are strictly apart
//    on it (cell index is a monotone function of the coordinate), so skipping those pairs changes nothing.
//    Cost grows with the local density of kept boxes instead of with the number of kept boxes.

namespace pydet_ops {
namespace cpu {
namespace PYDET_ISA_NAMESPACE {
namespace {

using nms_math::nms_overlap;
using nms_math::threshold_in;

template <typename T>
void greedy_nms_dense(const SortedBoxes<T>& b, T threshold, uint8_t* PYDET_RESTRICT keep) {
  const int64_t n = b.n;
  const T* PYDET_RESTRICT x1 = b.x1;
  const T* PYDET_RESTRICT y1 = b.y1;
  const T* PYDET_RESTRICT x2 = b.x2;
  const T* PYDET_RESTRICT y2 = b.y2;
  const T* PYDET_RESTRICT area = b.area;
  std::vector<uint8_t> suppressed_store(static_cast<size_t>(n), 0);
  uint8_t* PYDET_RESTRICT suppressed = suppressed_store.data();
  for (int64_t i = 0; i < n; ++i) {
    keep[i] = suppressed[i] ? 0 : 1;
    if (suppressed[i]) continue;
    const T ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], iarea = area[i];
    for (int64_t j = i + 1; j < n; ++j) {
      const T ovr = nms_overlap(ix1, iy1, ix2, iy2, iarea, x1[j], y1[j], x2[j], y2[j], area[j]);
      suppressed[j] |= static_cast<uint8_t>(ovr > threshold);
    }
  }
}

// Kept boxes, bucketed by grid cell. Each cell is a chain of fixed-size blocks of kLanes boxes taken from
// one arena (no allocation per cell), so testing a candidate against a block is one fixed-width,
// branch-free vector loop. Unused lanes hold the zero box, whose overlap with anything is 0 or NaN and so
// never exceeds a threshold >= 0.
template <typename T>
class CellBuckets {
 public:
  static constexpr int kLanes = 16;

  explicit CellBuckets(int64_t num_cells, int64_t expected_blocks) : last_(static_cast<size_t>(num_cells), -1) {
    blocks_.reserve(static_cast<size_t>(expected_blocks));
  }

  void push(int64_t cell, T x1, T y1, T x2, T y2, T area) {
    int32_t b = last_[cell];
    if (b < 0 || blocks_[b].count == kLanes) {
      blocks_.emplace_back();
      blocks_.back().previous = b;
      b = static_cast<int32_t>(blocks_.size() - 1);
      last_[cell] = b;
    }
    Block& block = blocks_[b];
    const int l = block.count++;
    block.x1[l] = x1;
    block.y1[l] = y1;
    block.x2[l] = x2;
    block.y2[l] = y2;
    block.area[l] = area;
  }

  // True when some kept box in `cell` overlaps the candidate by more than the threshold.
  bool suppresses(int64_t cell, T cx1, T cy1, T cx2, T cy2, T carea, T threshold) const {
    for (int32_t b = last_[cell]; b >= 0; b = blocks_[b].previous) {
      const Block& block = blocks_[b];
      int hit = 0;
      for (int l = 0; l < kLanes; ++l) {
        // The kept box is "i" in torchvision's formula; min/max of finite values commute, so the
        // argument order does not change the result.
        const T ovr = nms_overlap(block.x1[l], block.y1[l], block.x2[l], block.y2[l], block.area[l], cx1, cy1, cx2,
                                  cy2, carea);
        hit |= ovr > threshold;
      }
      if (hit) return true;
    }
    return false;
  }

 private:
  struct Block {
    alignas(64) T x1[kLanes] = {};
    T y1[kLanes] = {};
    T x2[kLanes] = {};
    T y2[kLanes] = {};
    T area[kLanes] = {};
    int32_t previous = -1;
    int32_t count = 0;
  };
  std::vector<int32_t> last_;  // newest block of each cell, -1 when empty
  std::vector<Block> blocks_;
};

// Grid geometry over the boxes of one run: cell index per coordinate is clamp(floor((v - origin) / size)),
// monotone in v.
template <typename T>
struct Grid {
  T origin_x, origin_y, inv_size;
  int64_t gx, gy;

  int64_t cell_x(T v) const { return cell(v, origin_x, gx); }
  int64_t cell_y(T v) const { return cell(v, origin_y, gy); }

 private:
  int64_t cell(T v, T origin, int64_t g) const {
    T f = (v - origin) * inv_size;
    f = f < T(0) ? T(0) : f;
    f = f > T(g - 1) ? T(g - 1) : f;
    return static_cast<int64_t>(f);
  }
};

// Plans a grid for the run, or returns false when the grid strategy does not apply or would not pay.
template <typename T>
bool plan_grid(const SortedBoxes<T>& b, T threshold, Grid<T>& grid) {
  // Below this a dense sweep is as fast as building the grid.
  constexpr int64_t kMinBoxes = 256;
  if (b.n < kMinBoxes || !(threshold >= T(0))) return false;
  T min_x = std::numeric_limits<T>::infinity(), min_y = min_x;
  T max_x = -min_x, max_y = -min_x;
  double sum_w = 0, sum_h = 0;
  for (int64_t k = 0; k < b.n; ++k) {
    const T x1 = b.x1[k], y1 = b.y1[k], x2 = b.x2[k], y2 = b.y2[k];
    if (!(std::isfinite(x1) && std::isfinite(y1) && std::isfinite(x2) && std::isfinite(y2) &&
          std::isfinite(b.area[k]))) {
      return false;
    }
    min_x = std::min(min_x, x1);
    min_y = std::min(min_y, y1);
    max_x = std::max(max_x, x2);
    max_y = std::max(max_y, y2);
    sum_w += std::max(T(0), x2 - x1);
    sum_h += std::max(T(0), y2 - y1);
  }
  const double span_x = static_cast<double>(max_x) - static_cast<double>(min_x);
  const double span_y = static_cast<double>(max_y) - static_cast<double>(min_y);
  double size = std::max(sum_w, sum_h) / static_cast<double>(b.n);
  // (A span beyond the double range, from coordinates near +-1.8e308, leaves it to the dense sweep.)
  if (!(size > 0) || !(span_x > 0) || !(span_y > 0) || !std::isfinite(span_x) || !std::isfinite(span_y)) return false;
  // Bound the number of cells by the number of boxes (memory and per-candidate overhead). Shrinking both
  // axes alike is not enough when one of them already has a single cell, so grow the cells until the
  // bound holds (a few doublings at most after the first estimate). At most 2^16 cells per axis keeps the
  // clamp in Grid::cell exact in float.
  const double max_cells = static_cast<double>(std::min<int64_t>(b.n, 1 << 16));
  const double cells = (span_x / size + 1) * (span_y / size + 1);
  if (cells > max_cells) size *= std::sqrt(cells / max_cells);
  double nx = std::floor(span_x / size) + 1, ny = std::floor(span_y / size) + 1;
  while (nx * ny > max_cells) {
    size *= 2;
    nx = std::floor(span_x / size) + 1;
    ny = std::floor(span_y / size) + 1;
  }
  grid.gx = static_cast<int64_t>(nx);
  grid.gy = static_cast<int64_t>(ny);
  if (grid.gx * grid.gy < 4) return false;
  grid.origin_x = min_x;
  grid.origin_y = min_y;
  grid.inv_size = static_cast<T>(1.0 / size);
  return std::isfinite(grid.inv_size) && grid.inv_size > T(0);
}

template <typename T>
void greedy_nms_grid(const SortedBoxes<T>& b, T threshold, const Grid<T>& grid, uint8_t* keep) {
  CellBuckets<T> kept(grid.gx * grid.gy, b.n / 4 + 16);
  for (int64_t k = 0; k < b.n; ++k) {
    const T x1 = b.x1[k], y1 = b.y1[k], x2 = b.x2[k], y2 = b.y2[k], area = b.area[k];
    // An inverted box has an empty cell range: it overlaps nothing, so it is kept and suppresses nothing,
    // exactly as in the dense rule.
    const int64_t cx0 = grid.cell_x(x1), cx1 = grid.cell_x(x2);
    const int64_t cy0 = grid.cell_y(y1), cy1 = grid.cell_y(y2);
    bool suppressed = false;
    for (int64_t cy = cy0; cy <= cy1 && !suppressed; ++cy) {
      for (int64_t cx = cx0; cx <= cx1; ++cx) {
        if (kept.suppresses(cy * grid.gx + cx, x1, y1, x2, y2, area, threshold)) {
          suppressed = true;
          break;
        }
      }
    }
    keep[k] = suppressed ? 0 : 1;
    if (suppressed) continue;
    for (int64_t cy = cy0; cy <= cy1; ++cy) {
      for (int64_t cx = cx0; cx <= cx1; ++cx) {
        kept.push(cy * grid.gx + cx, x1, y1, x2, y2, area);
      }
    }
  }
}

template <typename T>
void greedy_nms_any(const SortedBoxes<T>& b, double iou_threshold, uint8_t* keep) {
  const T threshold = threshold_in<T>(iou_threshold);
  Grid<T> grid{};
  if (plan_grid(b, threshold, grid)) {
    greedy_nms_grid(b, threshold, grid, keep);
  } else {
    greedy_nms_dense(b, threshold, keep);
  }
}

}  // namespace

PYDET_GREEDY_NMS_DECL(float) { greedy_nms_any<float>(boxes, iou_threshold, keep); }
PYDET_GREEDY_NMS_DECL(double) { greedy_nms_any<double>(boxes, iou_threshold, keep); }

}  // namespace PYDET_ISA_NAMESPACE
}  // namespace cpu
}  // namespace pydet_ops
