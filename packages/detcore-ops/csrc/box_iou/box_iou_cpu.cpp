// Pairwise IoU of axis-aligned XYXY boxes, CPU: out[i, j] = IoU(boxes1[i], boxes2[j]).
//
// detectron2's pairwise_iou rule: IoU = inter / (area1 + area2 - inter) where inter > 0, else 0 (so empty,
// zero-area and negative-size boxes give 0 instead of torchvision's 0/0 = nan). The arithmetic is the same
// as torchvision's box_iou, so results are bit-identical wherever torchvision's are finite and nonzero.
// boxes2 is transposed into structure-of-arrays once; rows of boxes1 are split across threads and the
// inner loop over boxes2 is branch-free so it vectorises. Only the output is allocated (no N*M temporaries),
// advised onto huge pages when large (its page faults otherwise cost more than the arithmetic).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/buffer.h"
#include "common/memory.h"
#include "common/ops.h"
#include "common/parallel.h"

namespace detcore {
namespace {

// One row: out[j] = IoU(box (x1, y1, x2, y2) of area a, boxes2[j]) for j < m. Branch-free (the empty
// case divides 0 by 1) so it vectorises; the arithmetic is torchvision's, inter / (a + A - inter).
template <typename T>
inline void iou_row(T x1, T y1, T x2, T y2, T a, const T* X1, const T* Y1, const T* X2, const T* Y2, const T* A,
                    int64_t m, T* out) {
  for (int64_t j = 0; j < m; ++j) {
    const T w = std::max<T>(std::min(x2, X2[j]) - std::max(x1, X1[j]), T(0));
    const T h = std::max<T>(std::min(y2, Y2[j]) - std::max(y1, Y1[j]), T(0));
    const T inter = w * h;
    const T union_ = a + A[j] - inter;
    const bool overlap = inter > T(0);
    out[j] = (overlap ? inter : T(0)) / (overlap ? union_ : T(1));
  }
}

template <typename T>
void box_iou_cpu(const T* boxes1, const T* boxes2, int64_t n, int64_t m, T* out, int num_threads) {
  if (n == 0 || m == 0) return;
  std::vector<T> X1(m), Y1(m), X2(m), Y2(m), A(m);
  for (int64_t j = 0; j < m; ++j) {
    const T* b = boxes2 + 4 * j;
    X1[j] = b[0];
    Y1[j] = b[1];
    X2[j] = b[2];
    Y2[j] = b[3];
    A[j] = (b[2] - b[0]) * (b[3] - b[1]);
  }
  advise_huge_pages(out, static_cast<std::size_t>(n * m) * sizeof(T));
  // ~16k output values per task keeps thread start-up cost negligible.
  const int64_t grain = std::max<int64_t>(1, 16384 / m);
  parallel_for(0, n, grain, num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* b = boxes1 + 4 * i;
      iou_row<T>(b[0], b[1], b[2], b[3], (b[2] - b[0]) * (b[3] - b[1]), X1.data(), Y1.data(), X2.data(), Y2.data(),
                 A.data(), m, out + i * m);
    }
  });
}

void box_iou_entry(std::uintptr_t boxes1, std::uintptr_t boxes2, int64_t n, int64_t m, int dtype,
                   std::uintptr_t out, int num_threads) {
  pybind11::gil_scoped_release release;
  dispatch_floating(dtype, "box_iou", [&](auto zero) {
    using T = decltype(zero);
    box_iou_cpu<T>(ptr<const T>(boxes1), ptr<const T>(boxes2), n, m, ptr<T>(out), num_threads);
  });
}

}  // namespace

void register_box_iou(pybind11::module_& m) {
  using namespace pybind11::literals;
  m.def("box_iou", &box_iou_entry, "boxes1"_a, "boxes2"_a, "n"_a, "m"_a, "dtype"_a, "out"_a, "num_threads"_a,
        "Pairwise IoU of XYXY boxes1 (contiguous [n,4]) and boxes2 ([m,4]) into out[n,m]; 0 where the "
        "intersection is empty.");
}

}  // namespace detcore
