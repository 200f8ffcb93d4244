// Pairwise IoU of axis-aligned XYXY boxes, CPU: out[i, j] = IoU(boxes1[i], boxes2[j]).
//
// detectron2's pairwise_iou rule: IoU = inter / (area1 + area2 - inter) where inter > 0, else 0 (so empty,
// zero-area and negative-size boxes give 0 instead of torchvision's 0/0 = nan). The arithmetic is the same
// as torchvision's box_iou, so results are bit-identical wherever torchvision's are finite and nonzero.
// boxes2 is transposed into structure-of-arrays once; rows of boxes1 are split across threads and the
// inner loop over boxes2 is branch-free so it vectorises. Only the output is allocated (no N*M temporaries).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/buffer.h"
#include "common/ops.h"
#include "common/parallel.h"

namespace detcore {
namespace {

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
  const T* __restrict__ x1s = X1.data();
  const T* __restrict__ y1s = Y1.data();
  const T* __restrict__ x2s = X2.data();
  const T* __restrict__ y2s = Y2.data();
  const T* __restrict__ as = A.data();
  // ~16k output values per task keeps thread start-up cost negligible.
  const int64_t grain = std::max<int64_t>(1, 16384 / m);
  parallel_for(0, n, grain, num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* b = boxes1 + 4 * i;
      const T x1 = b[0], y1 = b[1], x2 = b[2], y2 = b[3];
      const T a = (x2 - x1) * (y2 - y1);
      T* __restrict__ row = out + i * m;
      for (int64_t j = 0; j < m; ++j) {
        const T w = std::max<T>(std::min(x2, x2s[j]) - std::max(x1, x1s[j]), T(0));
        const T h = std::max<T>(std::min(y2, y2s[j]) - std::max(y1, y1s[j]), T(0));
        const T inter = w * h;
        const T iou = inter / (a + as[j] - inter);
        row[j] = inter > T(0) ? iou : T(0);
      }
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
