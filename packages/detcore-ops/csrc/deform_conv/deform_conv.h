// Bilinear sampling math of deformable convolution (DCNv1/DCNv2), shared by the CPU and CUDA kernels.
//
// Conventions are torchvision's (torchvision/csrc/ops/cpu/deform_conv2d_kernel.cpp):
// - the sampling point of output (ho, wo), kernel tap (i, j) is
//     y = ho * stride_h - pad_h + i * dilation_h + offset_y,  x = wo * stride_w - pad_w + j * dilation_w + offset_x
//   with (offset_y, offset_x) = offset[n, 2 * (g * kh * kw + i * kw + j) + {0, 1}, ho, wo];
// - the sampled value is bilinear over the four integer neighbours, a neighbour outside the plane reads 0,
//   and a point with y <= -1, y >= height, x <= -1 or x >= width reads 0 as a whole ("inside" below);
// - d(value)/d(y, x) follows torchvision's get_coordinate_weight: the four neighbours' validity alone decides
//   (no "inside" test), so at y == -1 exactly the gradient is the one-sided derivative from above.
// The value at a point is linear in the input plane, so grad_input scatters with the same weights
// (torchvision's col2im gives identical weights, including at integer coordinates).
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
namespace deform {

// One sampling point in a height x width plane.
template <typename T>
struct SamplePoint {
  int64_t idx[4];  // flat offsets y * width + x of (y0, x0), (y0, x1), (y1, x0), (y1, x1); 0 where invalid
  T valid[4];      // 1 where that neighbour lies in the plane, else 0
  T ly, lx;        // y - y0, x - x0
  T inside;        // 1 where -1 < y < height and -1 < x < width, else 0
};

// Fills `p` for the point (y, x). NaN and far-away points get all-zero validity (no undefined int casts).
template <typename T>
DETCORE_HOST_DEVICE inline void make_sample_point(T y, T x, int64_t height, int64_t width, SamplePoint<T>& p) {
  // Some neighbour is valid only for -1 <= y < height and -1 <= x < width.
  if (!(y >= T(-1) && y < static_cast<T>(height) && x >= T(-1) && x < static_cast<T>(width))) {
    for (int c = 0; c < 4; ++c) {
      p.idx[c] = 0;
      p.valid[c] = 0;
    }
    p.ly = 0;
    p.lx = 0;
    p.inside = 0;
    return;
  }
  const T yf = std::floor(y);
  const T xf = std::floor(x);
  const int64_t y0 = static_cast<int64_t>(yf);
  const int64_t x0 = static_cast<int64_t>(xf);
  const int64_t y1 = y0 + 1;
  const int64_t x1 = x0 + 1;
  p.ly = y - yf;
  p.lx = x - xf;
  p.inside = (y > T(-1) && x > T(-1)) ? T(1) : T(0);
  const bool vy0 = y0 >= 0, vy1 = y1 <= height - 1, vx0 = x0 >= 0, vx1 = x1 <= width - 1;
  const bool v[4] = {vy0 && vx0, vy0 && vx1, vy1 && vx0, vy1 && vx1};
  const int64_t off[4] = {y0 * width + x0, y0 * width + x1, y1 * width + x0, y1 * width + x1};
  for (int c = 0; c < 4; ++c) {
    p.valid[c] = v[c] ? T(1) : T(0);
    p.idx[c] = v[c] ? off[c] : 0;
  }
}

// Weights w[c] such that scale * value(plane, p) == sum_c w[c] * plane[p.idx[c]].
template <typename T>
DETCORE_HOST_DEVICE inline void bilinear_weights(const SamplePoint<T>& p, T scale, T* w) {
  const T s = scale * p.inside;
  const T hy = T(1) - p.ly, hx = T(1) - p.lx;
  w[0] = s * p.valid[0] * hy * hx;
  w[1] = s * p.valid[1] * hy * p.lx;
  w[2] = s * p.valid[2] * p.ly * hx;
  w[3] = s * p.valid[3] * p.ly * p.lx;
}

// The four neighbours (0 where invalid).
template <typename T>
DETCORE_HOST_DEVICE inline void corner_values(const T* plane, const SamplePoint<T>& p, T* v) {
  // A select, not a product, so an inf/NaN at plane[0] does not leak into invalid neighbours.
  v[0] = p.valid[0] != T(0) ? plane[p.idx[0]] : T(0);
  v[1] = p.valid[1] != T(0) ? plane[p.idx[1]] : T(0);
  v[2] = p.valid[2] != T(0) ? plane[p.idx[2]] : T(0);
  v[3] = p.valid[3] != T(0) ? plane[p.idx[3]] : T(0);
}

// Bilinear value from corner values (0 outside the "inside" region).
template <typename T>
DETCORE_HOST_DEVICE inline T bilinear_from_corners(const SamplePoint<T>& p, const T* v) {
  const T hy = T(1) - p.ly, hx = T(1) - p.lx;
  return p.inside != T(0) ? hy * (hx * v[0] + p.lx * v[1]) + p.ly * (hx * v[2] + p.lx * v[3]) : T(0);
}

// d(value)/dy and d(value)/dx from corner values (torchvision's get_coordinate_weight).
template <typename T>
DETCORE_HOST_DEVICE inline void coordinate_grads(const SamplePoint<T>& p, const T* v, T& dy, T& dx) {
  dy = p.lx * (v[3] - v[1]) + (T(1) - p.lx) * (v[2] - v[0]);
  dx = p.ly * (v[3] - v[2]) + (T(1) - p.ly) * (v[1] - v[0]);
}

// Output size of one spatial dimension.
DETCORE_HOST_DEVICE inline int64_t out_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
  return (in + 2 * pad - (dil * (k - 1) + 1)) / stride + 1;
}

}  // namespace deform
}  // namespace detcore
