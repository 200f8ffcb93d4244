// Greedy axis-aligned NMS (torchvision semantics: suppress when IoU > threshold), CPU.
//
// Instead of testing every kept box against every later box (torchvision, O(N * kept)), boxes are
// also sorted by x1; a kept box can only overlap boxes whose x1 lies in (x1 - max_width, x2), found by
// binary search, and that window is scanned in x-sorted order over contiguous arrays. Results are
// identical to the quadratic algorithm for iou_threshold >= 0 (a pair with zero intersection has IoU 0,
// which never exceeds a non-negative threshold); a negative threshold uses the quadratic path.
// batched_nms runs one NMS per class (in parallel) instead of torchvision's coordinate-offset trick.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "common/buffer.h"
#include "common/ops.h"
#include "common/parallel.h"

namespace detcore {
namespace {

// Sort key that places NaN last, so std::sort has a strict weak ordering even with NaN input.
template <typename T>
inline bool less_nan_last(T a, T b) {
  return a < b || (std::isnan(b) && !std::isnan(a));
}

// The largest T not above `threshold`: for any T value x, (x > threshold) == (x > threshold_as<T>(t)),
// so comparisons stay in T (and vectorise) while matching a comparison against the double threshold.
template <typename T>
inline T threshold_as(double threshold) {
  T t = static_cast<T>(threshold);
  if (static_cast<double>(t) > threshold) t = std::nextafter(t, -std::numeric_limits<T>::infinity());
  return t;
}

// An integer as wide as T, so flag and rank arrays vectorise together with the coordinates.
template <typename T>
using Lane = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;

// Marks boxes k in [lo, hi) with rank > p and IoU > thr against box (x1, y1, x2, y2) of area a.
// Branch-free so the compiler vectorises it; IoU is computed exactly as torchvision does.
template <typename T>
inline void suppress_window(int64_t lo, int64_t hi, int64_t p, T x1, T y1, T x2, T y2, T a, const T* X1,
                            const T* Y1, const T* X2, const T* Y2, const T* A, const Lane<T>* rank, T thr,
                            Lane<T>* suppressed) {
  const Lane<T> pl = static_cast<Lane<T>>(p);
  for (int64_t k = lo; k < hi; ++k) {
    const T w = std::max<T>(0, std::min(x2, X2[k]) - std::max(x1, X1[k]));
    const T h = std::max<T>(0, std::min(y2, Y2[k]) - std::max(y1, Y1[k]));
    const T inter = w * h;
    const T ovr = inter / (a + A[k] - inter);
    suppressed[k] |= static_cast<Lane<T>>((ovr > thr) & (rank[k] > pl));
  }
}

// NMS over `n` boxes already in decreasing-score order. Writes keep flags (1 = kept) for each position.
template <typename T>
void nms_sorted(int64_t n, const T* x1s, const T* y1s, const T* x2s, const T* y2s, double threshold,
                uint8_t* kept) {
  std::vector<T> area(n);
  T max_w = 0;
  for (int64_t i = 0; i < n; ++i) {
    area[i] = (x2s[i] - x1s[i]) * (y2s[i] - y1s[i]);
    const T w = x2s[i] - x1s[i];
    if (w > max_w) max_w = w;
  }
  std::vector<uint8_t> suppressed(n, 0);
  if (!(threshold >= 0)) {  // negative (or NaN) threshold: plain quadratic greedy NMS
    for (int64_t i = 0; i < n; ++i) {
      kept[i] = !suppressed[i];
      if (suppressed[i]) continue;
      for (int64_t j = i + 1; j < n; ++j) {
        if (suppressed[j]) continue;
        const T w = std::max<T>(0, std::min(x2s[i], x2s[j]) - std::max(x1s[i], x1s[j]));
        const T h = std::max<T>(0, std::min(y2s[i], y2s[j]) - std::max(y1s[i], y1s[j]));
        const T inter = w * h;
        const T ovr = inter / (area[i] + area[j] - inter);
        if (ovr > threshold) suppressed[j] = 1;
      }
    }
    return;
  }
  // Structure-of-arrays in x1 order; rank = position in score order.
  std::vector<int64_t> by_x(n);
  std::iota(by_x.begin(), by_x.end(), 0);
  std::stable_sort(by_x.begin(), by_x.end(),
                   [&](int64_t a, int64_t b) { return less_nan_last(x1s[a], x1s[b]); });
  std::vector<T> X1(n), Y1(n), X2(n), Y2(n), A(n);
  std::vector<Lane<T>> rank(n), window_suppressed(n, 0);
  std::vector<int64_t> where(n);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t p = by_x[k];
    X1[k] = x1s[p];
    Y1[k] = y1s[p];
    X2[k] = x2s[p];
    Y2[k] = y2s[p];
    A[k] = area[p];
    rank[k] = static_cast<Lane<T>>(p);
    where[p] = k;
  }
  const T thr = threshold_as<T>(threshold);
  auto cmp = [](T a, T b) { return less_nan_last(a, b); };
  for (int64_t p = 0; p < n; ++p) {
    const int64_t kp = where[p];
    if (window_suppressed[kp]) {
      kept[p] = 0;
      continue;
    }
    kept[p] = 1;
    const int64_t lo = std::lower_bound(X1.begin(), X1.end(), X1[kp] - max_w, cmp) - X1.begin();
    const int64_t hi = std::lower_bound(X1.begin(), X1.end(), X2[kp], cmp) - X1.begin();
    suppress_window<T>(lo, hi, p, X1[kp], Y1[kp], X2[kp], Y2[kp], A[kp], X1.data(), Y1.data(), X2.data(),
                       Y2.data(), A.data(), rank.data(), thr, window_suppressed.data());
  }
}

// Positions 0..n-1 sorted by decreasing score, ties broken by index (stable); NaN scores first, as
// torch.sort(descending=True) orders them.
template <typename T>
std::vector<int64_t> score_order(const T* scores, int64_t n) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return less_nan_last(scores[b], scores[a]); });
  return order;
}

// Runs nms_sorted on the subset `members` (indices into the original arrays, already score-ordered)
// and writes 1 into kept_original[idx] for each kept member.
template <typename T>
void nms_subset(const T* boxes, const std::vector<int64_t>& members, double threshold, uint8_t* kept_original) {
  const int64_t m = static_cast<int64_t>(members.size());
  std::vector<T> x1(m), y1(m), x2(m), y2(m);
  for (int64_t i = 0; i < m; ++i) {
    const T* b = boxes + 4 * members[i];
    x1[i] = b[0];
    y1[i] = b[1];
    x2[i] = b[2];
    y2[i] = b[3];
  }
  std::vector<uint8_t> kept(m);
  nms_sorted<T>(m, x1.data(), y1.data(), x2.data(), y2.data(), threshold, kept.data());
  for (int64_t i = 0; i < m; ++i)
    if (kept[i]) kept_original[members[i]] = 1;
}

// Shared driver: `idxs` may be null (single class). Returns the number of kept indices written to keep.
template <typename T>
int64_t batched_nms_cpu(const T* boxes, const T* scores, const int64_t* idxs, int64_t n, double threshold,
                        int64_t* keep, int num_threads) {
  if (n == 0) return 0;
  const std::vector<int64_t> order = score_order(scores, n);
  std::vector<uint8_t> kept(n, 0);
  if (idxs == nullptr) {
    nms_subset<T>(boxes, order, threshold, kept.data());
  } else {
    // Group score-ordered positions by class, preserving score order within each class.
    std::vector<int64_t> classes(idxs, idxs + n);
    std::sort(classes.begin(), classes.end());
    classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
    std::vector<std::vector<int64_t>> groups(classes.size());
    for (int64_t p : order) {
      const int64_t c = std::lower_bound(classes.begin(), classes.end(), idxs[p]) - classes.begin();
      groups[c].push_back(p);
    }
    // Largest groups first gives a better split across threads.
    std::vector<int64_t> group_order(groups.size());
    std::iota(group_order.begin(), group_order.end(), 0);
    std::sort(group_order.begin(), group_order.end(),
              [&](int64_t a, int64_t b) { return groups[a].size() > groups[b].size(); });
    // Round-robin assignment of groups to threads: thread t takes groups t, t+T, t+2T, ...
    const int64_t g = static_cast<int64_t>(groups.size());
    const int threads = static_cast<int>(std::min<int64_t>(std::max(num_threads, 1), g));
    const bool parallel = threads > 1 && n >= 2048;
    parallel_for(0, parallel ? threads : 1, 1, parallel ? threads : 1, [&](int64_t t0, int64_t t1) {
      const int64_t stride = parallel ? threads : 1;
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t i = t; i < g; i += stride) nms_subset<T>(boxes, groups[group_order[i]], threshold, kept.data());
    });
  }
  int64_t count = 0;
  for (int64_t p : order)
    if (kept[p]) keep[count++] = p;
  return count;
}

int64_t nms_entry(std::uintptr_t boxes, std::uintptr_t scores, int64_t n, double threshold, int dtype,
                  std::uintptr_t keep, int num_threads) {
  int64_t count = 0;
  pybind11::gil_scoped_release release;
  dispatch_floating(dtype, "nms", [&](auto zero) {
    using T = decltype(zero);
    count = batched_nms_cpu<T>(ptr<const T>(boxes), ptr<const T>(scores), nullptr, n, threshold,
                               ptr<int64_t>(keep), num_threads);
  });
  return count;
}

int64_t batched_nms_entry(std::uintptr_t boxes, std::uintptr_t scores, std::uintptr_t idxs, int64_t n,
                          double threshold, int dtype, std::uintptr_t keep, int num_threads) {
  int64_t count = 0;
  pybind11::gil_scoped_release release;
  dispatch_floating(dtype, "batched_nms", [&](auto zero) {
    using T = decltype(zero);
    count = batched_nms_cpu<T>(ptr<const T>(boxes), ptr<const T>(scores), ptr<const int64_t>(idxs), n,
                               threshold, ptr<int64_t>(keep), num_threads);
  });
  return count;
}

}  // namespace

void register_nms(pybind11::module_& m) {
  using namespace pybind11::literals;
  m.def("nms", &nms_entry, "boxes"_a, "scores"_a, "n"_a, "iou_threshold"_a, "dtype"_a, "keep"_a,
        "num_threads"_a,
        "Greedy NMS of n XYXY boxes (contiguous [n,4]) with scores [n]; writes kept indices (int64, "
        "decreasing score) to keep[n] and returns their count.");
  m.def("batched_nms", &batched_nms_entry, "boxes"_a, "scores"_a, "idxs"_a, "n"_a, "iou_threshold"_a, "dtype"_a,
        "keep"_a, "num_threads"_a, "NMS within each category of idxs (int64 [n]); same output as nms.");
}

}  // namespace detcore
