// Per-output-element math of roi_align (torchvision), roi_align_rotated (detectron2) and roi_pool
// (torchvision), host and device. Backward functions scatter through `add(index, value)` (atomicAdd on the
// GPU) into the [channels, height, width] plane block of one image.
#pragma once
#include <cfloat>
#include <cmath>

#include "common.cuh"

namespace detcore_cuda {

// Bilinear sample of a [height, width] plane; 0 outside (-1, size]; clamped to the border inside.
template <typename T>
DETCORE_HD T bilinear(const T* plane, int64_t height, int64_t width, T y, T x) {
  if (y < T(-1) || y > T(height) || x < T(-1) || x > T(width)) return T(0);
  if (y <= T(0)) y = T(0);
  if (x <= T(0)) x = T(0);
  int64_t y_low = static_cast<int64_t>(y);
  int64_t x_low = static_cast<int64_t>(x);
  int64_t y_high, x_high;
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = static_cast<T>(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = static_cast<T>(x_low);
  } else {
    x_high = x_low + 1;
  }
  const T ly = y - static_cast<T>(y_low), lx = x - static_cast<T>(x_low);
  const T hy = T(1) - ly, hx = T(1) - lx;
  const T v1 = plane[y_low * width + x_low];
  const T v2 = plane[y_low * width + x_high];
  const T v3 = plane[y_high * width + x_low];
  const T v4 = plane[y_high * width + x_high];
  return hy * hx * v1 + hy * lx * v2 + ly * hx * v3 + ly * lx * v4;
}

// Weights and corner offsets of bilinear(); returns false (nothing to scatter) outside.
template <typename T>
DETCORE_HD bool bilinear_weights(int64_t height, int64_t width, T y, T x, T (&w)[4], int64_t (&idx)[4]) {
  if (y < T(-1) || y > T(height) || x < T(-1) || x > T(width)) return false;
  if (y <= T(0)) y = T(0);
  if (x <= T(0)) x = T(0);
  int64_t y_low = static_cast<int64_t>(y);
  int64_t x_low = static_cast<int64_t>(x);
  int64_t y_high, x_high;
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = static_cast<T>(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = static_cast<T>(x_low);
  } else {
    x_high = x_low + 1;
  }
  const T ly = y - static_cast<T>(y_low), lx = x - static_cast<T>(x_low);
  const T hy = T(1) - ly, hx = T(1) - lx;
  w[0] = hy * hx;
  w[1] = hy * lx;
  w[2] = ly * hx;
  w[3] = ly * lx;
  idx[0] = y_low * width + x_low;
  idx[1] = y_low * width + x_high;
  idx[2] = y_high * width + x_low;
  idx[3] = y_high * width + x_high;
  return true;
}

// Sampling geometry of one axis-aligned RoI bin set (torchvision's roi_align).
template <typename T>
struct RoiAlignBox {
  int64_t batch;
  T start_h, start_w, bin_h, bin_w;
  int64_t grid_h, grid_w;
  T count;
};

template <typename T>
DETCORE_HD RoiAlignBox<T> roi_align_box(const T* roi, T spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                        int64_t sampling_ratio, bool aligned) {
  RoiAlignBox<T> r;
  r.batch = static_cast<int64_t>(roi[0]);
  const T offset = aligned ? T(0.5) : T(0);
  r.start_w = roi[1] * spatial_scale - offset;
  r.start_h = roi[2] * spatial_scale - offset;
  const T end_w = roi[3] * spatial_scale - offset;
  const T end_h = roi[4] * spatial_scale - offset;
  T roi_w = end_w - r.start_w;
  T roi_h = end_h - r.start_h;
  if (!aligned) {  // legacy: force malformed RoIs to 1x1
    roi_w = max_(roi_w, T(1));
    roi_h = max_(roi_h, T(1));
  }
  r.bin_h = roi_h / static_cast<T>(pooled_height);
  r.bin_w = roi_w / static_cast<T>(pooled_width);
  r.grid_h = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(ceil(roi_h / static_cast<T>(pooled_height)));
  r.grid_w = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(ceil(roi_w / static_cast<T>(pooled_width)));
  r.grid_h = max_<int64_t>(r.grid_h, 0);  // an empty (negative-size) RoI samples nothing
  r.grid_w = max_<int64_t>(r.grid_w, 0);
  r.count = static_cast<T>(max_<int64_t>(r.grid_h * r.grid_w, 1));
  return r;
}

template <typename T>
DETCORE_HD T roi_align_one(const T* plane, int64_t height, int64_t width, const RoiAlignBox<T>& r, int64_t ph,
                           int64_t pw) {
  T sum = 0;
  for (int64_t iy = 0; iy < r.grid_h; ++iy) {
    const T y = r.start_h + static_cast<T>(ph) * r.bin_h +
                static_cast<T>(iy + T(0.5)) * r.bin_h / static_cast<T>(r.grid_h);
    for (int64_t ix = 0; ix < r.grid_w; ++ix) {
      const T x = r.start_w + static_cast<T>(pw) * r.bin_w +
                  static_cast<T>(ix + T(0.5)) * r.bin_w / static_cast<T>(r.grid_w);
      sum += bilinear(plane, height, width, y, x);
    }
  }
  return sum / r.count;
}

#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
template <typename T, typename Add>
DETCORE_HD void roi_align_backward_one(T grad, int64_t height, int64_t width, const RoiAlignBox<T>& r, int64_t ph,
                                       int64_t pw, const Add& add) {
  const T g = grad / r.count;
  for (int64_t iy = 0; iy < r.grid_h; ++iy) {
    const T y = r.start_h + static_cast<T>(ph) * r.bin_h +
                static_cast<T>(iy + T(0.5)) * r.bin_h / static_cast<T>(r.grid_h);
    for (int64_t ix = 0; ix < r.grid_w; ++ix) {
      const T x = r.start_w + static_cast<T>(pw) * r.bin_w +
                  static_cast<T>(ix + T(0.5)) * r.bin_w / static_cast<T>(r.grid_w);
      T w[4];
      int64_t idx[4];
      if (!bilinear_weights(height, width, y, x, w, idx)) continue;
      for (int k = 0; k < 4; ++k) add(idx[k], g * w[k]);
    }
  }
}

// Sampling geometry of one rotated RoI (detectron2's ROIAlignRotated: always "aligned", i.e. the
// half-pixel offset; the angle in degrees, counter-clockwise).
template <typename T>
struct RoiRotatedBox {
  int64_t batch;
  T center_h, center_w, start_h, start_w, bin_h, bin_w, cos_t, sin_t;
  int64_t grid_h, grid_w;
  T count;
};

template <typename T>
DETCORE_HD RoiRotatedBox<T> roi_rotated_box(const T* roi, T spatial_scale, int64_t pooled_height,
                                            int64_t pooled_width, int64_t sampling_ratio) {
  RoiRotatedBox<T> r;
  r.batch = static_cast<int64_t>(roi[0]);
  r.center_w = roi[1] * spatial_scale - T(0.5);
  r.center_h = roi[2] * spatial_scale - T(0.5);
  const T roi_w = roi[3] * spatial_scale;
  const T roi_h = roi[4] * spatial_scale;
  const T theta = static_cast<T>(roi[5] * 3.14159265358979323846 / 180.0);  // as detectron2: in double
  r.cos_t = cos(theta);
  r.sin_t = sin(theta);
  r.bin_h = roi_h / static_cast<T>(pooled_height);
  r.bin_w = roi_w / static_cast<T>(pooled_width);
  r.grid_h = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(ceil(roi_h / static_cast<T>(pooled_height)));
  r.grid_w = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(ceil(roi_w / static_cast<T>(pooled_width)));
  r.start_h = -roi_h / T(2);
  r.start_w = -roi_w / T(2);
  r.grid_h = max_<int64_t>(r.grid_h, 0);  // an empty (negative-size) RoI samples nothing
  r.grid_w = max_<int64_t>(r.grid_w, 0);
  r.count = static_cast<T>(max_<int64_t>(r.grid_h * r.grid_w, 1));
  return r;
}

// Sample point (iy, ix) of bin (ph, pw), rotated about the RoI centre.
template <typename T>
DETCORE_HD void roi_rotated_point(const RoiRotatedBox<T>& r, int64_t ph, int64_t pw, int64_t iy, int64_t ix, T& y,
                                  T& x) {
  const T yy = r.start_h + static_cast<T>(ph) * r.bin_h +
               static_cast<T>(iy + T(0.5)) * r.bin_h / static_cast<T>(r.grid_h);
  const T xx = r.start_w + static_cast<T>(pw) * r.bin_w +
               static_cast<T>(ix + T(0.5)) * r.bin_w / static_cast<T>(r.grid_w);
  y = yy * r.cos_t - xx * r.sin_t + r.center_h;
  x = yy * r.sin_t + xx * r.cos_t + r.center_w;
}

template <typename T>
DETCORE_HD T roi_align_rotated_one(const T* plane, int64_t height, int64_t width, const RoiRotatedBox<T>& r,
                                   int64_t ph, int64_t pw) {
  T sum = 0;
  for (int64_t iy = 0; iy < r.grid_h; ++iy) {
    for (int64_t ix = 0; ix < r.grid_w; ++ix) {
      T y, x;
      roi_rotated_point(r, ph, pw, iy, ix, y, x);
      sum += bilinear(plane, height, width, y, x);
    }
  }
  return sum / r.count;
}

#ifdef __CUDACC__
#pragma nv_exec_check_disable
#endif
template <typename T, typename Add>
DETCORE_HD void roi_align_rotated_backward_one(T grad, int64_t height, int64_t width, const RoiRotatedBox<T>& r,
                                               int64_t ph, int64_t pw, const Add& add) {
  const T g = grad / r.count;
  for (int64_t iy = 0; iy < r.grid_h; ++iy) {
    for (int64_t ix = 0; ix < r.grid_w; ++ix) {
      T y, x;
      roi_rotated_point(r, ph, pw, iy, ix, y, x);
      T w[4];
      int64_t idx[4];
      if (!bilinear_weights(height, width, y, x, w, idx)) continue;
      for (int k = 0; k < 4; ++k) add(idx[k], g * w[k]);
    }
  }
}

// roi_pool (torchvision): max over the integer bin; argmax is the flat h * width + w index, -1 if empty.
template <typename T>
DETCORE_HD T roi_pool_one(const T* plane, int64_t height, int64_t width, const T* roi, T spatial_scale,
                          int64_t pooled_height, int64_t pooled_width, int64_t ph, int64_t pw, int64_t& argmax) {
  const int64_t start_w = static_cast<int64_t>(round(roi[1] * spatial_scale));
  const int64_t start_h = static_cast<int64_t>(round(roi[2] * spatial_scale));
  const int64_t end_w = static_cast<int64_t>(round(roi[3] * spatial_scale));
  const int64_t end_h = static_cast<int64_t>(round(roi[4] * spatial_scale));
  const int64_t roi_w = max_<int64_t>(end_w - start_w + 1, 1);
  const int64_t roi_h = max_<int64_t>(end_h - start_h + 1, 1);
  const T bin_h = static_cast<T>(roi_h) / static_cast<T>(pooled_height);
  const T bin_w = static_cast<T>(roi_w) / static_cast<T>(pooled_width);
  int64_t hstart = static_cast<int64_t>(floor(static_cast<T>(ph) * bin_h));
  int64_t wstart = static_cast<int64_t>(floor(static_cast<T>(pw) * bin_w));
  int64_t hend = static_cast<int64_t>(ceil(static_cast<T>(ph + 1) * bin_h));
  int64_t wend = static_cast<int64_t>(ceil(static_cast<T>(pw + 1) * bin_w));
  hstart = min_<int64_t>(max_<int64_t>(hstart + start_h, 0), height);
  hend = min_<int64_t>(max_<int64_t>(hend + start_h, 0), height);
  wstart = min_<int64_t>(max_<int64_t>(wstart + start_w, 0), width);
  wend = min_<int64_t>(max_<int64_t>(wend + start_w, 0), width);
  const bool empty = hend <= hstart || wend <= wstart;
  T best = empty ? T(0) : static_cast<T>(-FLT_MAX);
  argmax = -1;
  for (int64_t h = hstart; h < hend; ++h) {
    for (int64_t w = wstart; w < wend; ++w) {
      const int64_t k = h * width + w;
      if (plane[k] > best) {
        best = plane[k];
        argmax = k;
      }
    }
  }
  return best;
}

}  // namespace detcore_cuda
