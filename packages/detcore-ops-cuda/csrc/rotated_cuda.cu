// Rotated boxes: pairwise IoU and the NMS bitmask (suppress when IoU >= threshold), math in rotated.cuh.
#include "nms_mask.cuh"
#include "ops_cuda.h"
#include "rotated.cuh"

namespace detcore_cuda {
namespace {

template <typename T>
__global__ void box_iou_rotated_kernel(const T* __restrict__ a, const T* __restrict__ b, int64_t n, int64_t m,
                                       T* __restrict__ out) {
  DETCORE_KERNEL_LOOP(index, n * m) {
    const int64_t i = index / m;
    const int64_t j = index - i * m;
    out[index] = rotated_iou(a + i * 5, b + j * 5);
  }
}

template <typename T>
struct RotatedPolicy {
  T threshold;  // suppress when IoU >= threshold
  // Different categories have IoU 0 (detectron2's batched_nms_rotated offsets them apart), so they
  // suppress each other when 0 >= threshold.
  bool cross_class;
  __device__ int prepare(const T*) const { return 0; }
  __device__ bool suppress(const T* a, int, const T* b) const { return rotated_iou(a, b) >= threshold; }
};

}  // namespace

void box_iou_rotated(uptr boxes1, uptr boxes2, int64_t n, int64_t m, int dtype, uptr out, uptr stream) {
  if (n <= 0 || m <= 0) return;
  dispatch_floating(dtype, "box_iou_rotated", [&](auto zero) {
    using T = decltype(zero);
    box_iou_rotated_kernel<T><<<blocks_for(n * m), kThreads, 0, as_stream(stream)>>>(
        ptr<const T>(boxes1), ptr<const T>(boxes2), n, m, ptr<T>(out));
  });
  check_launch("box_iou_rotated");
}

void nms_rotated_mask(uptr boxes, uptr idxs, int64_t n, double iou_threshold, int dtype, uptr mask,
                      uptr stream) {
  dispatch_floating(dtype, "nms_rotated", [&](auto zero) {
    using T = decltype(zero);
    const RotatedPolicy<T> policy{threshold_ge<T>(iou_threshold), 0.0 >= iou_threshold};
    launch_nms_mask<T, 5>(ptr<const T>(boxes), ptr<const int64_t>(idxs), n, policy, ptr<unsigned long long>(mask),
                          as_stream(stream), "nms_rotated");
  });
}

}  // namespace detcore_cuda
