// Rotated-box ops on CPU: pairwise IoU and greedy NMS with detectron2's semantics (a box is suppressed when
// its IoU with a kept higher-scoring box is >= iou_threshold). The exact IoU is rotated_iou.h.
//
// Speed: most pairs of boxes are far apart. Each box gets a conservative axis-aligned bound
// (rotated_aabb) and oriented frame (rotated_frame); pairs with disjoint bounds or separated frames have IoU
// exactly 0 and skip the polygon clipping. NMS also skips pairs whose IoU upper bound (grown smaller area
// over the union) is below the threshold, and sorts boxes by the left edge of their bound so a kept box only
// visits boxes whose bound starts within (x0 - max_bound_width, x1] (binary search), like nms_cpu.cpp.
// Pruning a pair means "IoU 0", which is only a non-suppression when iou_threshold > 0; other thresholds
// and non-finite boxes take the plain quadratic greedy loop (which for a threshold <= 0 suppresses every box
// after the first it visits).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "common/buffer.h"
#include "common/ops.h"
#include "common/parallel.h"
#include "rotated/rotated_iou.h"

namespace detcore {
namespace {

using rotated::Bound;
using rotated::Frame;
using rotated::frames_separated;
using rotated::iou_upper_bound;
using rotated::rotated_aabb;
using rotated::rotated_frame;
using rotated::single_box_iou_rotated;

template <typename T>
inline bool finite_box(const T* b) {
  return std::isfinite(b[0]) && std::isfinite(b[1]) && std::isfinite(b[2]) && std::isfinite(b[3]) &&
         std::isfinite(b[4]);
}

inline bool disjoint(const Bound& a, const Bound& b) {
  return a.x1 < b.x0 || b.x1 < a.x0 || a.y1 < b.y0 || b.y1 < a.y0;
}

template <typename T>
void box_iou_rotated_cpu(const T* boxes1, const T* boxes2, int64_t n, int64_t m, T* out, int num_threads) {
  if (n == 0 || m == 0) return;
  // prunable[j]: finite box with a valid bound; empty-area boxes give 0 in the exact routine (cheaply).
  std::vector<Bound> bounds2(m);
  std::vector<Frame> frames2(m);
  std::vector<uint8_t> prunable2(m);
  for (int64_t j = 0; j < m; ++j) {
    bounds2[j] = rotated_aabb<T>(boxes2 + 5 * j);
    frames2[j] = rotated_frame<T>(boxes2 + 5 * j);
    prunable2[j] = finite_box<T>(boxes2 + 5 * j);
  }
  const int64_t grain = std::max<int64_t>(1, 2048 / m);
  parallel_for(0, n, grain, num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* b1 = boxes1 + 5 * i;
      const Bound bound1 = rotated_aabb<T>(b1);
      const Frame frame1 = rotated_frame<T>(b1);
      const bool prunable1 = finite_box<T>(b1);
      T* row = out + i * m;
      for (int64_t j = 0; j < m; ++j) {
        if (prunable1 && prunable2[j] && (disjoint(bound1, bounds2[j]) || frames_separated(frame1, frames2[j]))) {
          row[j] = T(0);
        } else {
          row[j] = single_box_iou_rotated<T>(b1, boxes2 + 5 * j);
        }
      }
    }
  });
}

// NaN scores first (as torch.sort(descending=True) orders them), then decreasing score, ties by index.
template <typename T>
std::vector<int64_t> score_order(const T* scores, int64_t n) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    const T sa = scores[a], sb = scores[b];
    return sb < sa || (std::isnan(sa) && !std::isnan(sb));
  });
  return order;
}

// Plain greedy NMS over `members` (score-ordered original indices). With `idxs`, boxes of different
// categories have IoU 0 (detectron2's batched_nms_rotated offsets categories apart, so for a threshold
// <= 0 they suppress each other too). Sets kept[original index] = 1.
template <typename T>
void nms_quadratic(const T* boxes, const int64_t* idxs, const std::vector<int64_t>& members, double threshold,
                   uint8_t* kept) {
  const int64_t m = static_cast<int64_t>(members.size());
  std::vector<uint8_t> suppressed(m, 0);
  for (int64_t a = 0; a < m; ++a) {
    if (suppressed[a]) continue;
    const int64_t i = members[a];
    kept[i] = 1;
    for (int64_t b = a + 1; b < m; ++b) {
      if (suppressed[b]) continue;
      const int64_t j = members[b];
      T ovr = 0;
      if (idxs == nullptr || idxs[i] == idxs[j]) ovr = single_box_iou_rotated<T>(boxes + 5 * i, boxes + 5 * j);
      if (static_cast<double>(ovr) >= threshold) suppressed[b] = 1;
    }
  }
}

// Greedy NMS over `members` (score-ordered, all finite, threshold > 0) with bound pruning.
template <typename T>
void nms_pruned(const T* boxes, const std::vector<int64_t>& members, double threshold, uint8_t* kept) {
  const int64_t m = static_cast<int64_t>(members.size());
  // Boxes with area < 1e-14 have IoU 0 with everything: always kept, never suppress. Others go into
  // structure-of-arrays sorted by the left edge of their bound; rank = position in score order.
  std::vector<int64_t> active;
  active.reserve(m);
  std::vector<Bound> bounds(m);
  for (int64_t r = 0; r < m; ++r) {
    bounds[r] = rotated_aabb<T>(boxes + 5 * members[r]);
    if (bounds[r].empty)
      kept[members[r]] = 1;
    else
      active.push_back(r);
  }
  const int64_t n = static_cast<int64_t>(active.size());
  std::vector<int64_t> by_x(active);
  std::stable_sort(by_x.begin(), by_x.end(), [&](int64_t a, int64_t b) { return bounds[a].x0 < bounds[b].x0; });
  std::vector<double> X0(n), X1(n), Y0(n), Y1(n);
  std::vector<int64_t> rank(n), where(m, -1);
  double max_w = 0;
  for (int64_t k = 0; k < n; ++k) {
    const Bound& bd = bounds[by_x[k]];
    X0[k] = bd.x0;
    X1[k] = bd.x1;
    Y0[k] = bd.y0;
    Y1[k] = bd.y1;
    rank[k] = by_x[k];
    where[by_x[k]] = k;
    max_w = std::max(max_w, bd.x1 - bd.x0);
  }
  std::vector<Frame> frames(n);
  for (int64_t k = 0; k < n; ++k) frames[k] = rotated_frame<T>(boxes + 5 * members[rank[k]]);
  // A pair whose IoU bound stays below this cannot reach the threshold (1e-4 relative slack for rounding).
  const double reachable = threshold / (1 + 1e-4);
  std::vector<uint8_t> suppressed(n, 0);
  for (int64_t r = 0; r < m; ++r) {
    const int64_t kp = where[r];
    if (kp < 0 || suppressed[kp]) continue;
    const T* bp = boxes + 5 * members[r];
    kept[members[r]] = 1;
    const int64_t lo = std::lower_bound(X0.begin(), X0.end(), X0[kp] - max_w) - X0.begin();
    const int64_t hi = std::upper_bound(X0.begin(), X0.end(), X1[kp]) - X0.begin();
    const double x0 = X0[kp], y0 = Y0[kp], y1 = Y1[kp];
    const Frame& fp = frames[kp];
    for (int64_t k = lo; k < hi; ++k) {
      if (rank[k] <= r || suppressed[k] || X1[k] < x0 || Y0[k] > y1 || Y1[k] < y0) continue;
      if (iou_upper_bound(fp, frames[k]) < reachable || frames_separated(fp, frames[k])) continue;
      const T ovr = single_box_iou_rotated<T>(bp, boxes + 5 * members[rank[k]]);
      if (static_cast<double>(ovr) >= threshold) suppressed[k] = 1;
    }
  }
}

template <typename T>
int64_t nms_rotated_cpu(const T* boxes, const double* scores, const int64_t* idxs, int64_t n, double threshold,
                        int64_t* keep, int num_threads) {
  if (n == 0) return 0;
  const std::vector<int64_t> order = score_order(scores, n);
  std::vector<uint8_t> kept(n, 0);
  bool all_finite = true;
  for (int64_t i = 0; i < n && all_finite; ++i) all_finite = finite_box<T>(boxes + 5 * i);
  const bool prune = threshold > 0 && all_finite;
  if (idxs == nullptr) {
    if (prune)
      nms_pruned<T>(boxes, order, threshold, kept.data());
    else
      nms_quadratic<T>(boxes, nullptr, order, threshold, kept.data());
  } else if (!prune) {
    nms_quadratic<T>(boxes, idxs, order, threshold, kept.data());
  } else {
    // Categories are independent when threshold > 0: one NMS per category, in parallel.
    std::vector<int64_t> classes(idxs, idxs + n);
    std::sort(classes.begin(), classes.end());
    classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
    std::vector<std::vector<int64_t>> groups(classes.size());
    for (int64_t p : order)
      groups[std::lower_bound(classes.begin(), classes.end(), idxs[p]) - classes.begin()].push_back(p);
    std::vector<int64_t> group_order(groups.size());
    std::iota(group_order.begin(), group_order.end(), 0);
    std::sort(group_order.begin(), group_order.end(),
              [&](int64_t a, int64_t b) { return groups[a].size() > groups[b].size(); });
    const int64_t g = static_cast<int64_t>(groups.size());
    const int threads = static_cast<int>(std::min<int64_t>(std::max(num_threads, 1), g));
    const bool parallel = threads > 1 && n >= 256;
    const int64_t stride = parallel ? threads : 1;
    parallel_for(0, stride, 1, static_cast<int>(stride), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t i = t; i < g; i += stride) nms_pruned<T>(boxes, groups[group_order[i]], threshold, kept.data());
    });
  }
  int64_t count = 0;
  for (int64_t p : order)
    if (kept[p]) keep[count++] = p;
  return count;
}

void box_iou_rotated_entry(std::uintptr_t boxes1, std::uintptr_t boxes2, int64_t n, int64_t m, int dtype,
                           std::uintptr_t out, int num_threads) {
  pybind11::gil_scoped_release release;
  dispatch_floating(dtype, "box_iou_rotated", [&](auto zero) {
    using T = decltype(zero);
    box_iou_rotated_cpu<T>(ptr<const T>(boxes1), ptr<const T>(boxes2), n, m, ptr<T>(out), num_threads);
  });
}

int64_t nms_rotated_entry(std::uintptr_t boxes, std::uintptr_t scores, std::uintptr_t idxs, int64_t n,
                          double threshold, int dtype, std::uintptr_t keep, int num_threads) {
  int64_t count = 0;
  pybind11::gil_scoped_release release;
  dispatch_floating(dtype, "nms_rotated", [&](auto zero) {
    using T = decltype(zero);
    const int64_t* categories = idxs ? ptr<const int64_t>(idxs) : nullptr;
    count = nms_rotated_cpu<T>(ptr<const T>(boxes), ptr<const double>(scores), categories, n, threshold,
                               ptr<int64_t>(keep), num_threads);
  });
  return count;
}

}  // namespace

void register_rotated(pybind11::module_& m) {
  using namespace pybind11::literals;
  m.def("box_iou_rotated", &box_iou_rotated_entry, "boxes1"_a, "boxes2"_a, "n"_a, "m"_a, "dtype"_a, "out"_a,
        "num_threads"_a,
        "Pairwise IoU of rotated boxes1 (contiguous [n,5] XYWHA, degrees) and boxes2 ([m,5]) into out[n,m].");
  m.def("nms_rotated", &nms_rotated_entry, "boxes"_a, "scores"_a, "idxs"_a, "n"_a, "iou_threshold"_a, "dtype"_a,
        "keep"_a, "num_threads"_a,
        "Greedy rotated NMS (suppress when IoU >= iou_threshold) of n boxes [n,5] with float64 scores [n]; idxs is 0 "
        "(one category) or the address of int64 categories [n]. Writes kept indices (decreasing score) to "
        "keep[n] and returns their count.");
}

}  // namespace detcore
