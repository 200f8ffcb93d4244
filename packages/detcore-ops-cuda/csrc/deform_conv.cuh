// Per-element math of deformable convolution v1/v2 (torchvision semantics), host and device.
#pragma once
#include <cmath>

#include "common.cuh"

namespace detcore_cuda {

// Bilinear sample with zeros outside the plane (each corner checked), 0 when (h, w) is at least one
// pixel outside.
template <typename T>
DETCORE_HD T deform_bilinear(const T* plane, int64_t height, int64_t width, T h, T w) {
  if (h <= T(-1) || T(height) <= h || w <= T(-1) || T(width) <= w) return T(0);
  const int64_t h_low = static_cast<int64_t>(floor(h));
  const int64_t w_low = static_cast<int64_t>(floor(w));
  const int64_t h_high = h_low + 1;
  const int64_t w_high = w_low + 1;
  const T lh = h - static_cast<T>(h_low), lw = w - static_cast<T>(w_low);
  const T hh = T(1) - lh, hw = T(1) - lw;
  const T v1 = (h_low >= 0 && w_low >= 0) ? plane[h_low * width + w_low] : T(0);
  const T v2 = (h_low >= 0 && w_high <= width - 1) ? plane[h_low * width + w_high] : T(0);
  const T v3 = (h_high <= height - 1 && w_low >= 0) ? plane[h_high * width + w_low] : T(0);
  const T v4 = (h_high <= height - 1 && w_high <= width - 1) ? plane[h_high * width + w_high] : T(0);
  return hh * hw * v1 + hh * lw * v2 + lh * hw * v3 + lh * lw * v4;
}

// d deform_bilinear / d y (is_y) or d x.
template <typename T>
DETCORE_HD T deform_coordinate_weight(const T* plane, int64_t height, int64_t width, T y, T x, bool is_y) {
  if (y <= T(-1) || y >= T(height) || x <= T(-1) || x >= T(width)) return T(0);
  const int64_t y_l = static_cast<int64_t>(floor(y));
  const int64_t x_l = static_cast<int64_t>(floor(x));
  const int64_t y_h = y_l + 1;
  const int64_t x_h = x_l + 1;
  const bool vy_l = 0 <= y_l && y_l < height, vy_h = 0 <= y_h && y_h < height;
  const bool vx_l = 0 <= x_l && x_l < width, vx_h = 0 <= x_h && x_h < width;
  const T v_yx = (vy_l && vx_l) ? plane[y_l * width + x_l] : T(0);
  const T v_yX = (vy_l && vx_h) ? plane[y_l * width + x_h] : T(0);
  const T v_Yx = (vy_h && vx_l) ? plane[y_h * width + x_l] : T(0);
  const T v_YX = (vy_h && vx_h) ? plane[y_h * width + x_h] : T(0);
  if (is_y) {
    const T dx = x - static_cast<T>(x_l);
    return dx * (v_YX - v_yX) + (T(1) - dx) * (v_Yx - v_yx);
  }
  const T dy = y - static_cast<T>(y_l);
  return dy * (v_YX - v_Yx) + (T(1) - dy) * (v_yX - v_yx);
}

#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
// Scatters value into the (up to) four pixels around (y, x) with bilinear weights.
template <typename T, typename Add>
DETCORE_HD void deform_scatter(int64_t height, int64_t width, T y, T x, T value, const Add& add) {
  if (y <= T(-1) || y >= T(height) || x <= T(-1) || x >= T(width)) return;
  const int64_t y_l = static_cast<int64_t>(floor(y));
  const int64_t x_l = static_cast<int64_t>(floor(x));
  const T ly = y - static_cast<T>(y_l), lx = x - static_cast<T>(x_l);
  for (int dy = 0; dy < 2; ++dy) {
    const int64_t yp = y_l + dy;
    if (yp < 0 || yp >= height) continue;
    const T wy = dy ? ly : T(1) - ly;
    for (int dx = 0; dx < 2; ++dx) {
      const int64_t xp = x_l + dx;
      if (xp < 0 || xp >= width) continue;
      const T wx = dx ? lx : T(1) - lx;
      add(yp * width + xp, wy * wx * value);
    }
  }
}

}  // namespace detcore_cuda
