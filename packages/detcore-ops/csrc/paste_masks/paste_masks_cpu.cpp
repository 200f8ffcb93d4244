// paste_masks_in_image on CPU (detectron2's accurate grid_sample variant; math in paste_masks.h).
//
// The kernel writes every output byte itself (the output is allocated uninitialised): rows are split
// across threads over the flattened [N * image_height] range; each row outside its box's pixel range is
// cleared with memset, and inside it only the box's column range is sampled. Large outputs are first
// advised onto transparent huge pages (common/memory.h): page faults otherwise dominate the run time.
// Sampling positions of columns and rows are computed once per mask, so the inner loop is four gathers and
// the blend.
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/buffer.h"
#include "common/memory.h"
#include "common/ops.h"
#include "common/parallel.h"
#include "paste_masks/paste_masks.h"

namespace detcore {
namespace {

using paste::AxisSample;

// Everything the row loop needs, precomputed per mask: pixel ranges and the sampling positions of every
// column and row inside them.
template <typename T>
struct PastePlan {
  const T* masks;
  int64_t mh, mw, img_h, img_w;
  bool binary;
  T threshold;
  uint8_t* out;
  std::vector<int64_t> x_lo, x_hi, y_lo, y_hi, col_offset, row_offset;
  std::vector<AxisSample<T>> cols, rows;
};

// Writes output rows [begin, end) of the flattened [N * img_h] range.
#if defined(__GNUC__)
#define DETCORE_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define DETCORE_ALWAYS_INLINE inline
#endif

template <typename T>
DETCORE_ALWAYS_INLINE void paste_rows_impl(const PastePlan<T>& p, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const int64_t i = r / p.img_h, y = r % p.img_h;
    uint8_t* row = p.out + r * p.img_w;
    if (y < p.y_lo[i] || y >= p.y_hi[i]) {
      std::memset(row, 0, p.img_w);
      continue;
    }
    const AxisSample<T> ys = p.rows[p.row_offset[i] + (y - p.y_lo[i])];
    const T* mask = p.masks + i * p.mh * p.mw;
    const AxisSample<T>* c = p.cols.data() + p.col_offset[i] - p.x_lo[i];
    const int64_t x0 = p.x_lo[i], x1 = p.x_hi[i];
    std::memset(row, 0, x0);
    for (int64_t x = x0; x < x1; ++x)
      row[x] = paste::output_value<T>(paste::bilinear<T>(mask, p.mh, p.mw, ys, c[x]), p.binary, p.threshold);
    std::memset(row + x1, 0, p.img_w - x1);
  }
}

template <typename T>
void paste_rows_generic(const PastePlan<T>& p, int64_t begin, int64_t end) {
  paste_rows_impl<T>(p, begin, end);
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
// Same code built for CPUs with FMA, chosen at run time: fmaf/fma become one instruction instead of a
// libm call (results are identical, fma is exactly rounded either way).
template <typename T>
__attribute__((target("fma"))) void paste_rows_fma(const PastePlan<T>& p, int64_t begin, int64_t end) {
  paste_rows_impl<T>(p, begin, end);
}
inline bool cpu_has_fma() {
  static const bool has = __builtin_cpu_supports("fma");
  return has;
}
#endif

template <typename T, typename G>
void paste_masks_cpu(const T* masks, const G* boxes, int64_t n, int64_t mh, int64_t mw, int64_t img_h,
                     int64_t img_w, double threshold, uint8_t* out, int num_threads) {
  if (n == 0 || img_h == 0 || img_w == 0) return;
  PastePlan<T> p;
  p.masks = masks;
  p.mh = mh;
  p.mw = mw;
  p.img_h = img_h;
  p.img_w = img_w;
  p.binary = threshold >= 0;
  p.threshold = static_cast<T>(threshold);
  p.out = out;
  p.x_lo.resize(n);
  p.x_hi.resize(n);
  p.y_lo.resize(n);
  p.y_hi.resize(n);
  p.col_offset.assign(n + 1, 0);
  p.row_offset.assign(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    const G* b = boxes + 4 * i;
    paste::pixel_range<G>(b[0], b[2], img_w, &p.x_lo[i], &p.x_hi[i]);
    paste::pixel_range<G>(b[1], b[3], img_h, &p.y_lo[i], &p.y_hi[i]);
    if (p.x_hi[i] <= p.x_lo[i] || p.y_hi[i] <= p.y_lo[i]) p.x_hi[i] = p.x_lo[i] = p.y_hi[i] = p.y_lo[i] = 0;
    p.col_offset[i + 1] = p.col_offset[i] + (p.x_hi[i] - p.x_lo[i]);
    p.row_offset[i + 1] = p.row_offset[i] + (p.y_hi[i] - p.y_lo[i]);
  }
  p.cols.resize(p.col_offset[n]);
  p.rows.resize(p.row_offset[n]);
  parallel_for(0, n, 8, num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const G* b = boxes + 4 * i;
      AxisSample<T>* c = p.cols.data() + p.col_offset[i];
      for (int64_t x = p.x_lo[i]; x < p.x_hi[i]; ++x) c[x - p.x_lo[i]] = paste::axis_sample<T, G>(x, b[0], b[2], mw);
      AxisSample<T>* rr = p.rows.data() + p.row_offset[i];
      for (int64_t y = p.y_lo[i]; y < p.y_hi[i]; ++y) rr[y - p.y_lo[i]] = paste::axis_sample<T, G>(y, b[1], b[3], mh);
    }
  });
  advise_huge_pages(out, static_cast<std::size_t>(n * img_h * img_w));
  parallel_for(0, n * img_h, 64, num_threads, [&](int64_t begin, int64_t end) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if (cpu_has_fma()) {
      paste_rows_fma<T>(p, begin, end);
      return;
    }
#endif
    paste_rows_generic<T>(p, begin, end);
  });
}

void paste_masks_entry(std::uintptr_t masks, int mask_dtype, std::uintptr_t boxes, int box_dtype, int64_t n,
                       int64_t mask_h, int64_t mask_w, int64_t img_h, int64_t img_w, double threshold,
                       std::uintptr_t out, int num_threads) {
  pybind11::gil_scoped_release release;
  dispatch_floating(mask_dtype, "paste_masks_in_image", [&](auto mask_zero) {
    using T = decltype(mask_zero);
    dispatch_floating(box_dtype, "paste_masks_in_image", [&](auto box_zero) {
      using G = decltype(box_zero);
      paste_masks_cpu<T, G>(ptr<const T>(masks), ptr<const G>(boxes), n, mask_h, mask_w, img_h, img_w, threshold,
                            ptr<uint8_t>(out), num_threads);
    });
  });
}

}  // namespace

void register_paste_masks(pybind11::module_& m) {
  using namespace pybind11::literals;
  m.def("paste_masks_in_image", &paste_masks_entry, "masks"_a, "mask_dtype"_a, "boxes"_a, "box_dtype"_a, "n"_a,
        "mask_h"_a, "mask_w"_a, "img_h"_a, "img_w"_a, "threshold"_a, "out"_a, "num_threads"_a,
        "Pastes masks [n, mask_h, mask_w] into boxes [n, 4] (XYXY) of an img_h x img_w image, writing every byte "
        "of out [n, img_h, img_w] (uint8): mask >= threshold when threshold >= 0, else soft * 255.");
}

}  // namespace detcore
