// Bilinear sampling math of ROIAlign / ROIAlignRotated (torchvision and detectron2 semantics), shared by
// the CPU kernels and the CUDA kernels (detcore-ops-cuda): no allocation, no std containers.
//
// A sample at continuous (y, x) on an H x W map is zero when y < -1, y > H, x < -1 or x > W; otherwise
// coordinates below 0 are clamped to 0, a coordinate past the last pixel is clamped to it, and the value
// is the bilinear blend of the (up to) four neighbouring pixels.
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
namespace roi_math {

// One axis of the bilinear rule. Returns false when the sample is outside [-1, size] (NaN included);
// otherwise sets the low/high pixel indices and their weights (w_low + w_high == 1).
template <typename T>
DETCORE_HOST_DEVICE inline bool axis_taps(int size, T c, int& low, int& high, T& w_low, T& w_high) {
  if (!(c >= T(-1) && c <= static_cast<T>(size))) return false;
  if (c <= T(0)) c = T(0);
  low = static_cast<int>(c);
  if (low >= size - 1) {
    low = high = size - 1;
    c = static_cast<T>(low);
  } else {
    high = low + 1;
  }
  w_high = c - static_cast<T>(low);
  w_low = T(1) - w_high;
  return true;
}

// The four taps of a sample: (y_low, x_low) w1, (y_low, x_high) w2, (y_high, x_low) w3, (y_high, x_high) w4.
template <typename T>
struct BilinearSample {
  int y_low, y_high, x_low, x_high;
  T w1, w2, w3, w4;
};

template <typename T>
DETCORE_HOST_DEVICE inline bool bilinear_sample(int height, int width, T y, T x, BilinearSample<T>& s) {
  T hy, ly, hx, lx;
  if (!axis_taps(height, y, s.y_low, s.y_high, hy, ly)) return false;
  if (!axis_taps(width, x, s.x_low, s.x_high, hx, lx)) return false;
  s.w1 = hy * hx;
  s.w2 = hy * lx;
  s.w3 = ly * hx;
  s.w4 = ly * lx;
  return true;
}

// Samples per bin along one axis: sampling_ratio when > 0, else ceil(roi_size / pooled) (0 when the roi
// is empty or negative; capped at 2^31 - 1 for absurd sizes, where the reference kernels overflow).
template <typename T>
DETCORE_HOST_DEVICE inline int64_t sampling_grid(T roi_size, int pooled, int sampling_ratio) {
  if (sampling_ratio > 0) return sampling_ratio;
  const double g = std::ceil(static_cast<double>(roi_size / static_cast<T>(pooled)));
  if (!(g > 0)) return 0;
  return g > 2147483647.0 ? int64_t{2147483647} : static_cast<int64_t>(g);
}

// Coordinate of sample i (of `grid`) inside bin p, measured from the roi start, exactly as the reference
// kernels evaluate it: start + p * bin + (i + .5f) * bin / grid.
template <typename T>
DETCORE_HOST_DEVICE inline T bin_sample(T start, int p, T bin, int64_t i, int64_t grid) {
  return start + static_cast<T>(p) * bin +
         static_cast<T>(static_cast<float>(i) + .5f) * bin / static_cast<T>(grid);
}

// Averaging divisor of a bin: max(grid_h * grid_w, 1).
template <typename T>
DETCORE_HOST_DEVICE inline T sample_count(int64_t grid_h, int64_t grid_w) {
  const double n = static_cast<double>(grid_h) * static_cast<double>(grid_w);
  return static_cast<T>(n > 1 ? n : 1);
}

}  // namespace roi_math
}  // namespace detcore
