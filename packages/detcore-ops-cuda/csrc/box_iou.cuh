// IoU of axis-aligned XYXY boxes, written like the CPU kernels so float results agree bit for bit
// (the .cu files that use it are compiled with --fmad=false).
#pragma once
#include "common.cuh"

namespace detcore_cuda {

template <typename T>
DETCORE_HD T box_area(const T* b) {
  return (b[2] - b[0]) * (b[3] - b[1]);
}

template <typename T>
DETCORE_HD T box_intersection(const T* a, const T* b) {
  const T w = max_<T>(T(0), min_(a[2], b[2]) - max_(a[0], b[0]));
  const T h = max_<T>(T(0), min_(a[3], b[3]) - max_(a[1], b[1]));
  return w * h;
}

// NMS overlap: inter / (area_a + area_b - inter), NaN for two zero-area boxes (never suppresses).
template <typename T>
DETCORE_HD T nms_overlap(const T* a, T area_a, const T* b, T area_b) {
  const T inter = box_intersection(a, b);
  return inter / (area_a + area_b - inter);
}

// box_iou: 0 where the intersection is 0 (also for degenerate boxes), else inter / union.
template <typename T>
DETCORE_HD T pair_iou(const T* a, const T* b) {
  const T inter = box_intersection(a, b);
  return inter > T(0) ? inter / (box_area(a) + box_area(b) - inter) : T(0);
}

}  // namespace detcore_cuda
