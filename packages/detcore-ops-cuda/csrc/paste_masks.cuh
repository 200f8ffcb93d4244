// detectron2's accurate mask paste for one image pixel (host and device): the pixel centre is mapped into
// the box, normalised to [-1, 1] and sampled like grid_sample(mode="bilinear", padding_mode="zeros",
// align_corners=False).
#pragma once
#include <cmath>

#include "common.cuh"

namespace detcore_cuda {

template <typename T>
DETCORE_HD T paste_value(const T* mask, int64_t mask_height, int64_t mask_width, const T* box, int64_t y,
                         int64_t x) {
  const T gx = (static_cast<T>(x) + T(0.5) - box[0]) / (box[2] - box[0]) * T(2) - T(1);
  const T gy = (static_cast<T>(y) + T(0.5) - box[1]) / (box[3] - box[1]) * T(2) - T(1);
  const T ix = ((gx + T(1)) * static_cast<T>(mask_width) - T(1)) / T(2);
  const T iy = ((gy + T(1)) * static_cast<T>(mask_height) - T(1)) / T(2);
  // Every corner is outside (or the coordinate is NaN): zero. Corners on the border of this range
  // would get weight 0 anyway.
  if (!(ix > T(-1) && ix < static_cast<T>(mask_width) && iy > T(-1) && iy < static_cast<T>(mask_height)))
    return T(0);
  const T fx = floor(ix), fy = floor(iy);
  const int64_t x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy);
  const int64_t x1 = x0 + 1, y1 = y0 + 1;
  const T nw = (fx + T(1) - ix) * (fy + T(1) - iy);
  const T ne = (ix - fx) * (fy + T(1) - iy);
  const T sw = (fx + T(1) - ix) * (iy - fy);
  const T se = (ix - fx) * (iy - fy);
  T v = 0;
  const bool x0_in = x0 >= 0, x1_in = x1 < mask_width, y0_in = y0 >= 0, y1_in = y1 < mask_height;
  if (y0_in && x0_in) v += mask[y0 * mask_width + x0] * nw;
  if (y0_in && x1_in) v += mask[y0 * mask_width + x1] * ne;
  if (y1_in && x0_in) v += mask[y1 * mask_width + x0] * sw;
  if (y1_in && x1_in) v += mask[y1 * mask_width + x1] * se;
  return v;
}

// Output byte: (v >= threshold) when threshold >= 0, else v * 255 truncated (like .to(torch.uint8)).
template <typename T>
DETCORE_HD uint8_t paste_byte(T v, T threshold, bool binary) {
  if (binary) return v >= threshold ? 1 : 0;
  return static_cast<uint8_t>(static_cast<int64_t>(v * T(255)));
}

}  // namespace detcore_cuda
