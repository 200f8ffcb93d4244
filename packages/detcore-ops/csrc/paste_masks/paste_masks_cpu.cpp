// paste_masks_in_image on CPU (detectron2's accurate grid_sample variant; math in paste_masks.h).
//
// The kernel writes every output byte itself (the output is allocated uninitialised): rows are split
// across threads over the flattened [N * image_height] range; each row outside its box's pixel range is
// cleared with memset, and inside it only the box's column range is sampled. Column sampling positions are
// computed once per mask, row positions once per row, so the inner loop is four gathers and the blend.
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/buffer.h"
#include "common/ops.h"
#include "common/parallel.h"
#include "paste_masks/paste_masks.h"

namespace detcore {
namespace {

using paste::AxisSample;

template <typename T, typename G>
void paste_masks_cpu(const T* masks, const G* boxes, int64_t n, int64_t mh, int64_t mw, int64_t img_h,
                     int64_t img_w, double threshold, uint8_t* out, int num_threads) {
  if (n == 0 || img_h == 0 || img_w == 0) return;
  std::vector<int64_t> x_lo(n), x_hi(n), y_lo(n), y_hi(n), col_offset(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    const G* b = boxes + 4 * i;
    paste::pixel_range<G>(b[0], b[2], img_w, &x_lo[i], &x_hi[i]);
    paste::pixel_range<G>(b[1], b[3], img_h, &y_lo[i], &y_hi[i]);
    if (x_hi[i] <= x_lo[i] || y_hi[i] <= y_lo[i]) x_hi[i] = x_lo[i] = y_hi[i] = y_lo[i] = 0;
    col_offset[i + 1] = col_offset[i] + (x_hi[i] - x_lo[i]);
  }
  std::vector<AxisSample<T>> cols(col_offset[n]);
  parallel_for(0, n, 8, num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const G* b = boxes + 4 * i;
      AxisSample<T>* c = cols.data() + col_offset[i];
      for (int64_t x = x_lo[i]; x < x_hi[i]; ++x) c[x - x_lo[i]] = paste::axis_sample<T, G>(x, b[0], b[2], mw);
    }
  });
  const bool binary = threshold >= 0;
  const T thr = static_cast<T>(threshold);
  parallel_for(0, n * img_h, 64, num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t i = r / img_h, y = r % img_h;
      uint8_t* row = out + r * img_w;
      if (y < y_lo[i] || y >= y_hi[i]) {
        std::memset(row, 0, img_w);
        continue;
      }
      const G* b = boxes + 4 * i;
      const AxisSample<T> ys = paste::axis_sample<T, G>(y, b[1], b[3], mh);
      const T* mask = masks + i * mh * mw;
      const AxisSample<T>* c = cols.data() + col_offset[i];
      std::memset(row, 0, x_lo[i]);
      for (int64_t x = x_lo[i]; x < x_hi[i]; ++x)
        row[x] = paste::output_value<T>(paste::bilinear<T>(mask, mh, mw, ys, c[x - x_lo[i]]), binary, thr);
      std::memset(row + x_hi[i], 0, img_w - x_hi[i]);
    }
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
