// Per-pixel math of detectron2's paste_masks_in_image (the accurate, grid_sample-based variant), shared by
// the CPU and CUDA kernels.
//
// For mask n with box (x0, y0, x1, y1) and image pixel (x, y), detectron2 builds a grid_sample coordinate
//   gx = ((x + 0.5 - x0) / (x1 - x0)) * 2 - 1      (in the box dtype G, float32 unless boxes are float64)
// casts it to the mask dtype T and samples bilinearly with align_corners=False and zero padding:
//   ix = fma(gx + 1, W / 2, -0.5),  value = sum of the 4 neighbours (outside the mask count as 0).
// The operation order and fused multiply-adds below are those of PyTorch's vectorised CPU grid_sample as
// built for AVX2/AVX-512 (the golden data's machine), so results are bit-identical to detectron2's there
// (on a CPU without FMA PyTorch's own rounding differs in the last bit). Only pixels in
// [floor(x0) - 1, ceil(x1) + 1) x [floor(y0) - 1, ceil(y1) + 1) clipped to the image are sampled
// (detectron2's skip_empty region); the rest are 0.
#pragma once
#include <cmath>
#include <cstdint>

#ifndef DETCORE_HOST_DEVICE
#ifdef __CUDACC__
#define DETCORE_HOST_DEVICE __host__ __device__
#else
#define DETCORE_HOST_DEVICE
#endif
#endif

namespace detcore {
namespace paste {

// Fused multiply-add in the argument's own precision (an unqualified fma(float, ...) would pick the C double
// version on the host and round twice).
DETCORE_HOST_DEVICE inline float fused_madd(float a, float b, float c) { return fmaf(a, b, c); }
DETCORE_HOST_DEVICE inline double fused_madd(double a, double b, double c) { return fma(a, b, c); }

// Sampling position along one axis: lower neighbour index `lo` (lo + 1 is the upper one; indices outside
// [0, size) read 0) and the distance `frac` from it (1 - frac is the weight of `lo`).
template <typename T>
struct AxisSample {
  int64_t lo;
  T frac;
};

// Pixel index `p` of the image (the pixel centre is p + 0.5) inside the box edge pair (b0, b1) whose mask
// axis has `size` cells.
template <typename T, typename G>
DETCORE_HOST_DEVICE inline AxisSample<T> axis_sample(int64_t p, G b0, G b1, int64_t size) {
  const G centre = static_cast<G>(static_cast<float>(p) + 0.5f);  // arange(float32) + 0.5
  const G g = (centre - b0) / (b1 - b0) * G(2) - G(1);
  const T scaling = static_cast<T>(size) / 2;
  // PyTorch's AVX2/AVX-512 grid_sample kernels evaluate this as one fused multiply-add (measured).
  const T coord = fused_madd(static_cast<T>(g) + T(1), scaling, T(-0.5));
  const T fl = floor(coord);
  AxisSample<T> s;
  s.frac = coord - fl;
  // Non-finite or far-away coordinates read only zeros (PyTorch's int conversion gives INT_MIN there).
  s.lo = (fl > T(-2) && fl < static_cast<T>(size) + T(1)) ? static_cast<int64_t>(fl) : int64_t(-2);
  return s;
}

// Bilinear value at (ys, xs) of a [H, W] mask with zero padding.
template <typename T>
DETCORE_HOST_DEVICE inline T bilinear(const T* mask, int64_t H, int64_t W, const AxisSample<T>& ys,
                                      const AxisSample<T>& xs) {
  const T w = xs.frac, e = T(1) - xs.frac;
  const T n = ys.frac, s = T(1) - ys.frac;
  const int64_t xw = xs.lo, xe = xs.lo + 1, yn = ys.lo, ys_ = ys.lo + 1;
  const bool w_ok = xw > -1 && xw < W, e_ok = xe > -1 && xe < W;
  const bool n_ok = yn > -1 && yn < H, s_ok = ys_ > -1 && ys_ < H;
  const T nw_val = (n_ok && w_ok) ? mask[yn * W + xw] : T(0);
  const T ne_val = (n_ok && e_ok) ? mask[yn * W + xe] : T(0);
  const T sw_val = (s_ok && w_ok) ? mask[ys_ * W + xw] : T(0);
  const T se_val = (s_ok && e_ok) ? mask[ys_ * W + xe] : T(0);
  // PyTorch's AVX2/AVX-512 grid_sample kernels are compiled with FMA contraction: this is their rounding.
  T acc = nw_val * (s * e);
  acc = fused_madd(ne_val, s * w, acc);
  acc = fused_madd(sw_val, n * e, acc);
  return fused_madd(se_val, n * w, acc);
}

// detectron2's skip_empty pixel range along one axis: [floor(b0) - 1, ceil(b1) + 1) clipped to [0, size).
// Empty (hi <= lo) for boxes entirely outside the image, where detectron2 0.6 raises instead.
template <typename G>
DETCORE_HOST_DEVICE inline void pixel_range(G b0, G b1, int64_t size, int64_t* lo, int64_t* hi) {
  const double l = floor(static_cast<double>(b0)) - 1.0;
  const double h = ceil(static_cast<double>(b1)) + 1.0;
  if (!(l == l) || !(h == h)) {  // NaN box: nothing to paste
    *lo = *hi = 0;
    return;
  }
  const double d = static_cast<double>(size);
  *lo = static_cast<int64_t>(l < 0 ? 0 : (l > d ? d : l));
  *hi = static_cast<int64_t>(h < 0 ? 0 : (h > d ? d : h));
}

// Output value: threshold >= 0 gives value >= threshold (0/1); otherwise the soft value * 255 truncated to
// uint8 as torch's float -> uint8 conversion does for values in [0, 1] (NaN gives 0).
template <typename T>
DETCORE_HOST_DEVICE inline uint8_t output_value(T value, bool binary, T threshold) {
  if (binary) return value >= threshold ? 1 : 0;
  const T scaled = value * T(255);
  if (!(scaled == scaled)) return 0;
  if (scaled <= T(-2147483648.0) || scaled >= T(2147483647.0)) return 0;
  return static_cast<uint8_t>(static_cast<int32_t>(scaled));
}

}  // namespace paste
}  // namespace detcore
