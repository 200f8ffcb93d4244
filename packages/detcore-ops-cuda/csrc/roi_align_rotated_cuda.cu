// roi_align_rotated forward and backward (detectron2 semantics), one thread per output element. A RoI whose
// image index is outside [0, batch_size) pools zeros and receives no gradient.
#include "ops_cuda.h"
#include "roi.cuh"

namespace detcore_cuda {
namespace {

template <typename T>
struct AtomicAdd {
  T* base;
  __device__ void operator()(int64_t i, T v) const { atomicAdd(base + i, v); }
};

template <typename T>
__global__ void roi_align_rotated_forward_kernel(const T* __restrict__ input, const T* __restrict__ rois,
                                                 int64_t total, int64_t batch_size, int64_t channels,
                                                 int64_t height, int64_t width, T spatial_scale,
                                                 int64_t pooled_height, int64_t pooled_width,
                                                 int64_t sampling_ratio, T* __restrict__ output) {
  DETCORE_KERNEL_LOOP(index, total) {
    const int64_t pw = index % pooled_width;
    const int64_t ph = (index / pooled_width) % pooled_height;
    const int64_t c = (index / pooled_width / pooled_height) % channels;
    const int64_t n = index / pooled_width / pooled_height / channels;
    const RoiRotatedBox<T> r =
        roi_rotated_box(rois + n * 6, spatial_scale, pooled_height, pooled_width, sampling_ratio);
    if (r.batch < 0 || r.batch >= batch_size) {
      output[index] = T(0);
      continue;
    }
    const T* plane = input + (r.batch * channels + c) * height * width;
    output[index] = roi_align_rotated_one(plane, height, width, r, ph, pw);
  }
}

template <typename T>
__global__ void roi_align_rotated_backward_kernel(const T* __restrict__ grad, const T* __restrict__ rois,
                                                  int64_t total, int64_t batch_size, int64_t channels,
                                                  int64_t height, int64_t width, T spatial_scale,
                                                  int64_t pooled_height, int64_t pooled_width,
                                                  int64_t sampling_ratio, T* grad_input) {
  DETCORE_KERNEL_LOOP(index, total) {
    const int64_t pw = index % pooled_width;
    const int64_t ph = (index / pooled_width) % pooled_height;
    const int64_t c = (index / pooled_width / pooled_height) % channels;
    const int64_t n = index / pooled_width / pooled_height / channels;
    const T g = grad[index];
    if (g == T(0)) continue;
    const RoiRotatedBox<T> r =
        roi_rotated_box(rois + n * 6, spatial_scale, pooled_height, pooled_width, sampling_ratio);
    if (r.batch < 0 || r.batch >= batch_size) continue;
    const AtomicAdd<T> add{grad_input + (r.batch * channels + c) * height * width};
    roi_align_rotated_backward_one(g, height, width, r, ph, pw, add);
  }
}

}  // namespace

void roi_align_rotated_forward(uptr input, uptr rois, int64_t num_rois, int64_t batch_size, int64_t channels,
                               int64_t height, int64_t width, double spatial_scale, int64_t pooled_height,
                               int64_t pooled_width, int64_t sampling_ratio, int dtype, uptr output,
                               uptr stream) {
  const int64_t total = num_rois * channels * pooled_height * pooled_width;
  if (total <= 0) return;
  dispatch_floating(dtype, "roi_align_rotated", [&](auto zero) {
    using T = decltype(zero);
    roi_align_rotated_forward_kernel<T><<<blocks_for(total), kThreads, 0, as_stream(stream)>>>(
        ptr<const T>(input), ptr<const T>(rois), total, batch_size, channels, height, width,
        static_cast<T>(spatial_scale), pooled_height, pooled_width, sampling_ratio, ptr<T>(output));
  });
  check_launch("roi_align_rotated");
}

void roi_align_rotated_backward(uptr grad, uptr rois, int64_t num_rois, int64_t batch_size, int64_t channels,
                                int64_t height, int64_t width, double spatial_scale, int64_t pooled_height,
                                int64_t pooled_width, int64_t sampling_ratio, int dtype, uptr grad_input,
                                uptr stream) {
  const int64_t total = num_rois * channels * pooled_height * pooled_width;
  if (total <= 0) return;
  dispatch_floating(dtype, "_roi_align_rotated_backward", [&](auto zero) {
    using T = decltype(zero);
    roi_align_rotated_backward_kernel<T><<<blocks_for(total), kThreads, 0, as_stream(stream)>>>(
        ptr<const T>(grad), ptr<const T>(rois), total, batch_size, channels, height, width,
        static_cast<T>(spatial_scale), pooled_height, pooled_width, sampling_ratio, ptr<T>(grad_input));
  });
  check_launch("_roi_align_rotated_backward");
}

}  // namespace detcore_cuda
