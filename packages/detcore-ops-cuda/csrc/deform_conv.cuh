// Per-element math of deformable convolution v1/v2 (torchvision semantics), host and device.
#pragma once
#include <cmath>

#include "common.cuh"
#include "ops_cuda.h"

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

// Element indices of the offset pair and the mask value of tap (i, j) of offset group grp at output (b, y, x).
struct DeformTap {
  int64_t offset_h, offset_w, mask;
};

DETCORE_HD DeformTap deform_tap(const DeformGeometry& g, int64_t b, int64_t grp, int64_t i, int64_t j, int64_t y,
                                int64_t x) {
  const int64_t taps = g.kernel_h * g.kernel_w;
  const int64_t plane = g.out_h * g.out_w;
  const int64_t k = i * g.kernel_w + j;
  const int64_t pix = y * g.out_w + x;
  const int64_t base = (b * g.offset_groups + grp) * taps;
  return {(2 * base + 2 * k) * plane + pix, (2 * base + 2 * k + 1) * plane + pix, (base + k) * plane + pix};
}

// Sampling position of tap (i, j) at output (y, x), given the tap's offsets.
template <typename T>
DETCORE_HD void deform_position(const DeformGeometry& g, int64_t i, int64_t j, int64_t y, int64_t x, T dy, T dx,
                                T& py, T& px) {
  py = static_cast<T>(y * g.stride_h - g.pad_h + i * g.dilation_h) + dy;
  px = static_cast<T>(x * g.stride_w - g.pad_w + j * g.dilation_w) + dx;
}

// im2col: element `index` of [channels, batch, out_h, out_w] writes the kernel_h * kernel_w column rows
// of channel c at output (b, y, x).
template <typename T>
DETCORE_HD void deform_im2col_element(int64_t index, const T* input, const T* offset, const T* mask,
                                      const DeformGeometry& g, T* columns) {
  const int64_t ncols = g.batch * g.out_h * g.out_w;
  const int64_t cpg = g.channels / g.offset_groups;
  const int64_t x = index % g.out_w;
  const int64_t y = (index / g.out_w) % g.out_h;
  const int64_t b = (index / (g.out_w * g.out_h)) % g.batch;
  const int64_t c = index / (g.out_w * g.out_h * g.batch);
  const int64_t grp = c / cpg;
  const T* plane = input + (b * g.channels + c) * g.height * g.width;
  T* col = columns + c * g.kernel_h * g.kernel_w * ncols + (b * g.out_h + y) * g.out_w + x;
  for (int64_t i = 0; i < g.kernel_h; ++i) {
    for (int64_t j = 0; j < g.kernel_w; ++j) {
      const DeformTap t = deform_tap(g, b, grp, i, j, y, x);
      const T m = g.use_mask ? mask[t.mask] : T(1);
      T py, px;
      deform_position(g, i, j, y, x, offset[t.offset_h], offset[t.offset_w], py, px);
      *col = m * deform_bilinear(plane, g.height, g.width, py, px);
      col += ncols;
    }
  }
}

#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
// col2im: element `index` of columns scatters into grad_input through add(flat index, value).
template <typename T, typename Add>
DETCORE_HD void deform_col2im_element(int64_t index, const T* columns, const T* offset, const T* mask,
                                      const DeformGeometry& g, const Add& add) {
  const T v = columns[index];
  if (v == T(0)) return;
  const int64_t ncols = g.batch * g.out_h * g.out_w;
  const int64_t cpg = g.channels / g.offset_groups;
  const int64_t x = index % g.out_w;
  const int64_t y = (index / g.out_w) % g.out_h;
  const int64_t b = (index / (g.out_w * g.out_h)) % g.batch;
  const int64_t row = index / ncols;
  const int64_t j = row % g.kernel_w;
  const int64_t i = (row / g.kernel_w) % g.kernel_h;
  const int64_t c = row / (g.kernel_w * g.kernel_h);
  const DeformTap t = deform_tap(g, b, c / cpg, i, j, y, x);
  const T m = g.use_mask ? mask[t.mask] : T(1);
  T py, px;
  deform_position(g, i, j, y, x, offset[t.offset_h], offset[t.offset_w], py, px);
  const int64_t plane = (b * g.channels + c) * g.height * g.width;
  if (py <= T(-1) || py >= T(g.height) || px <= T(-1) || px >= T(g.width)) return;
  const int64_t y_l = static_cast<int64_t>(floor(py));
  const int64_t x_l = static_cast<int64_t>(floor(px));
  const T ly = py - static_cast<T>(y_l), lx = px - static_cast<T>(x_l);
  const T mv = m * v;
  for (int dy = 0; dy < 2; ++dy) {
    const int64_t yp = y_l + dy;
    if (yp < 0 || yp >= g.height) continue;
    const T wy = dy ? ly : T(1) - ly;
    for (int dx = 0; dx < 2; ++dx) {
      const int64_t xp = x_l + dx;
      if (xp < 0 || xp >= g.width) continue;
      const T wx = dx ? lx : T(1) - lx;
      add(plane + yp * g.width + xp, wy * wx * mv);
    }
  }
}

// Offset and mask gradients: element `index` of grad_offset [batch, 2 * G * taps, out_h, out_w]
// (channel 2 * (grp * taps + k) + 0 for dy, + 1 for dx); the dy element also writes grad_mask.
template <typename T>
DETCORE_HD void deform_col2im_coord_element(int64_t index, const T* columns, const T* input, const T* offset,
                                            const T* mask, const DeformGeometry& g, T* grad_offset, T* grad_mask) {
  const int64_t taps = g.kernel_h * g.kernel_w;
  const int64_t offset_channels = 2 * g.offset_groups * taps;
  const int64_t ncols = g.batch * g.out_h * g.out_w;
  const int64_t cpg = g.channels / g.offset_groups;
  const int64_t x = index % g.out_w;
  const int64_t y = (index / g.out_w) % g.out_h;
  const int64_t ch = (index / (g.out_w * g.out_h)) % offset_channels;
  const int64_t b = index / (g.out_w * g.out_h * offset_channels);
  const int64_t grp = ch / (2 * taps);
  const int64_t k = (ch % (2 * taps)) / 2;
  const bool is_y = ch % 2 == 0;
  const int64_t i = k / g.kernel_w;
  const int64_t j = k % g.kernel_w;
  const DeformTap t = deform_tap(g, b, grp, i, j, y, x);
  const T m = g.use_mask ? mask[t.mask] : T(1);
  T py, px;
  deform_position(g, i, j, y, x, offset[t.offset_h], offset[t.offset_w], py, px);
  const bool want_mask = g.use_mask && is_y;
  T grad_off = 0, grad_m = 0;
  const int64_t col_pix = (b * g.out_h + y) * g.out_w + x;
  for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
    const T* plane = input + (b * g.channels + c) * g.height * g.width;
    const T col = columns[(c * taps + k) * ncols + col_pix];
    grad_off += m * deform_coordinate_weight(plane, g.height, g.width, py, px, is_y) * col;
    if (want_mask) grad_m += col * deform_bilinear(plane, g.height, g.width, py, px);
  }
  grad_offset[index] = grad_off;
  if (want_mask) grad_mask[t.mask] = grad_m;
}

}  // namespace detcore_cuda
