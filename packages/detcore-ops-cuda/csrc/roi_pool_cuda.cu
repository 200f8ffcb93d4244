// roi_pool forward and backward (torchvision semantics), one thread per output element. A RoI whose image
// index is outside [0, batch_size) pools zeros (argmax -1); argmax values outside [-1, height * width) are
// ignored by the backward pass (the CPU kernel raises for them).
#include "ops_cuda.h"
#include "roi.cuh"

namespace detcore_cuda {
namespace {

template <typename T>
__global__ void roi_pool_forward_kernel(const T* __restrict__ input, const T* __restrict__ rois, int64_t total,
                                        int64_t batch_size, int64_t channels, int64_t height, int64_t width,
                                        T spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                        T* __restrict__ output, int64_t* __restrict__ argmax) {
  DETCORE_KERNEL_LOOP(index, total) {
    const int64_t pw = index % pooled_width;
    const int64_t ph = (index / pooled_width) % pooled_height;
    const int64_t c = (index / pooled_width / pooled_height) % channels;
    const int64_t n = index / pooled_width / pooled_height / channels;
    const T* roi = rois + n * 5;
    const int64_t batch = static_cast<int64_t>(roi[0]);
    int64_t arg = -1;
    T value = T(0);
    if (batch >= 0 && batch < batch_size) {
      const T* plane = input + (batch * channels + c) * height * width;
      value = roi_pool_one(plane, height, width, roi, spatial_scale, pooled_height, pooled_width, ph, pw, arg);
    }
    output[index] = value;
    argmax[index] = arg;
  }
}

template <typename T>
__global__ void roi_pool_backward_kernel(const T* __restrict__ grad, const T* __restrict__ rois,
                                         const int64_t* __restrict__ argmax, int64_t total, int64_t batch_size,
                                         int64_t channels, int64_t height, int64_t width, int64_t pooled_height,
                                         int64_t pooled_width, T* grad_input) {
  DETCORE_KERNEL_LOOP(index, total) {
    const int64_t arg = argmax[index];
    if (arg < 0 || arg >= height * width) continue;
    const int64_t c = (index / pooled_width / pooled_height) % channels;
    const int64_t n = index / pooled_width / pooled_height / channels;
    const int64_t batch = static_cast<int64_t>(rois[n * 5]);
    if (batch < 0 || batch >= batch_size) continue;
    atomicAdd(grad_input + (batch * channels + c) * height * width + arg, grad[index]);
  }
}

}  // namespace

void roi_pool_forward(uptr input, uptr rois, int64_t num_rois, int64_t batch_size, int64_t channels,
                      int64_t height, int64_t width, double spatial_scale, int64_t pooled_height,
                      int64_t pooled_width, int dtype, uptr output, uptr argmax, uptr stream) {
  const int64_t total = num_rois * channels * pooled_height * pooled_width;
  if (total <= 0) return;
  dispatch_floating(dtype, "roi_pool", [&](auto zero) {
    using T = decltype(zero);
    roi_pool_forward_kernel<T><<<blocks_for(total), kThreads, 0, as_stream(stream)>>>(
        ptr<const T>(input), ptr<const T>(rois), total, batch_size, channels, height, width,
        static_cast<T>(spatial_scale), pooled_height, pooled_width, ptr<T>(output), ptr<int64_t>(argmax));
  });
  check_launch("roi_pool");
}

void roi_pool_backward(uptr grad, uptr rois, uptr argmax, int64_t num_rois, int64_t batch_size, int64_t channels,
                       int64_t height, int64_t width, int64_t pooled_height, int64_t pooled_width, int dtype,
                       uptr grad_input, uptr stream) {
  const int64_t total = num_rois * channels * pooled_height * pooled_width;
  if (total <= 0) return;
  dispatch_floating(dtype, "_roi_pool_backward", [&](auto zero) {
    using T = decltype(zero);
    roi_pool_backward_kernel<T><<<blocks_for(total), kThreads, 0, as_stream(stream)>>>(
        ptr<const T>(grad), ptr<const T>(rois), ptr<const int64_t>(argmax), total, batch_size, channels, height,
        width, pooled_height, pooled_width, ptr<T>(grad_input));
  });
  check_launch("_roi_pool_backward");
}

}  // namespace detcore_cuda
