// detectron2's accurate mask paste (the grid_sample-based variant) for one image pixel, host and device.
// The same math, operation order and fused multiply-adds as detcore-ops' CPU kernel
// (csrc/paste_masks/paste_masks.h there), so CUDA and CPU outputs are bit-identical:
//
// For mask n with box (x0, y0, x1, y1) (box dtype G: float64 boxes stay float64, others are float32) and
// image pixel (x, y): gx = ((x + 0.5 - x0) / (x1 - x0)) * 2 - 1 in G, cast to the mask dtype T, then
// ix = fma(gx + 1, W / 2, -0.5) and a bilinear sample with zero padding (grid_sample, align_corners=False).
// Only pixels in [floor(x0) - 1, ceil(x1) + 1) x [floor(y0) - 1, ceil(y1) + 1) clipped to the image are
// sampled (detectron2's skip_empty region); the rest are 0. (This file is compiled with --fmad=false:
// the only fused operations are the explicit fma() calls.)
#pragma once
#include <cmath>

#include "common.cuh"

namespace detcore_cuda {
namespace paste {

template <typename T>
struct AxisSample {
  int64_t lo;  // lower neighbour (lo + 1 is the upper one); indices outside [0, size) read 0
  T frac;      // distance from lo (1 - frac is the weight of lo)
};

template <typename T, typename G>
DETCORE_HD AxisSample<T> axis_sample(int64_t p, G b0, G b1, int64_t size) {
  const G centre = static_cast<G>(static_cast<float>(p) + 0.5f);  // arange(float32) + 0.5
  const G g = (centre - b0) / (b1 - b0) * G(2) - G(1);
  const T scaling = static_cast<T>(size) / 2;
  const T coord = fma(static_cast<T>(g) + T(1), scaling, T(-0.5));
  const T fl = floor(coord);
  AxisSample<T> s;
  s.frac = coord - fl;
  // Non-finite or far-away coordinates read only zeros.
  s.lo = (fl > T(-2) && fl < static_cast<T>(size) + T(1)) ? static_cast<int64_t>(fl) : int64_t(-2);
  return s;
}

template <typename T>
DETCORE_HD T bilinear(const T* mask, int64_t H, int64_t W, const AxisSample<T>& ys, const AxisSample<T>& xs) {
  const T w = xs.frac, e = T(1) - xs.frac;
  const T n = ys.frac, s = T(1) - ys.frac;
  const int64_t xw = xs.lo, xe = xs.lo + 1, yn = ys.lo, ysouth = ys.lo + 1;
  const bool w_ok = xw > -1 && xw < W, e_ok = xe > -1 && xe < W;
  const bool n_ok = yn > -1 && yn < H, s_ok = ysouth > -1 && ysouth < H;
  const T nw_val = (n_ok && w_ok) ? mask[yn * W + xw] : T(0);
  const T ne_val = (n_ok && e_ok) ? mask[yn * W + xe] : T(0);
  const T sw_val = (s_ok && w_ok) ? mask[ysouth * W + xw] : T(0);
  const T se_val = (s_ok && e_ok) ? mask[ysouth * W + xe] : T(0);
  T acc = nw_val * (s * e);
  acc = fma(ne_val, s * w, acc);
  acc = fma(sw_val, n * e, acc);
  return fma(se_val, n * w, acc);
}

// [floor(b0) - 1, ceil(b1) + 1) clipped to [0, size); empty for a box entirely outside (or NaN).
template <typename G>
DETCORE_HD void pixel_range(G b0, G b1, int64_t size, int64_t& lo, int64_t& hi) {
  const double l = floor(static_cast<double>(b0)) - 1.0;
  const double h = ceil(static_cast<double>(b1)) + 1.0;
  if (!(l == l) || !(h == h)) {
    lo = hi = 0;
    return;
  }
  const double d = static_cast<double>(size);
  lo = static_cast<int64_t>(l < 0 ? 0 : (l > d ? d : l));
  hi = static_cast<int64_t>(h < 0 ? 0 : (h > d ? d : h));
}

// threshold >= 0: value >= threshold (0/1); else the soft value * 255 truncated (NaN and out-of-range give 0).
template <typename T>
DETCORE_HD uint8_t output_value(T value, bool binary, T threshold) {
  if (binary) return value >= threshold ? 1 : 0;
  const T scaled = value * T(255);
  if (!(scaled == scaled)) return 0;
  if (scaled <= T(-2147483648.0) || scaled >= T(2147483647.0)) return 0;
  return static_cast<uint8_t>(static_cast<int32_t>(scaled));
}

}  // namespace paste

// Output byte of pixel (y, x) of mask `mask` [H, W] pasted with box `box` [4].
template <typename T, typename G>
DETCORE_HD uint8_t paste_pixel(const T* mask, int64_t H, int64_t W, const G* box, int64_t image_height,
                               int64_t image_width, int64_t y, int64_t x, bool binary, T threshold) {
  int64_t x_lo, x_hi, y_lo, y_hi;
  paste::pixel_range<G>(box[0], box[2], image_width, x_lo, x_hi);
  paste::pixel_range<G>(box[1], box[3], image_height, y_lo, y_hi);
  if (x < x_lo || x >= x_hi || y < y_lo || y >= y_hi) return 0;
  const paste::AxisSample<T> xs = paste::axis_sample<T, G>(x, box[0], box[2], W);
  const paste::AxisSample<T> ys = paste::axis_sample<T, G>(y, box[1], box[3], H);
  return paste::output_value<T>(paste::bilinear<T>(mask, H, W, ys, xs), binary, threshold);
}

}  // namespace detcore_cuda
