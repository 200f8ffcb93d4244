// paste_masks_in_image: one thread per output pixel (detectron2's accurate paste, see paste_masks.cuh).
#include "ops_cuda.h"
#include "paste_masks.cuh"

namespace detcore_cuda {
namespace {

template <typename T, typename G>
__global__ void paste_masks_kernel(const T* __restrict__ masks, const G* __restrict__ boxes, int64_t total,
                                   int64_t mask_height, int64_t mask_width, int64_t image_height,
                                   int64_t image_width, T threshold, bool binary, uint8_t* __restrict__ out) {
  DETCORE_KERNEL_LOOP(index, total) {
    const int64_t x = index % image_width;
    const int64_t y = (index / image_width) % image_height;
    const int64_t n = index / (image_width * image_height);
    out[index] = paste_pixel<T, G>(masks + n * mask_height * mask_width, mask_height, mask_width, boxes + n * 4,
                                   image_height, image_width, y, x, binary, threshold);
  }
}

}  // namespace

void paste_masks(uptr masks, int mask_dtype, uptr boxes, int box_dtype, int64_t n, int64_t mask_height,
                 int64_t mask_width, int64_t image_height, int64_t image_width, double threshold, uptr out,
                 uptr stream) {
  const int64_t total = n * image_height * image_width;
  if (total <= 0) return;
  dispatch_floating(mask_dtype, "paste_masks_in_image", [&](auto mask_zero) {
    using T = decltype(mask_zero);
    dispatch_floating(box_dtype, "paste_masks_in_image", [&](auto box_zero) {
      using G = decltype(box_zero);
      paste_masks_kernel<T, G><<<blocks_for(total), kThreads, 0, as_stream(stream)>>>(
          ptr<const T>(masks), ptr<const G>(boxes), total, mask_height, mask_width, image_height, image_width,
          static_cast<T>(threshold), threshold >= 0, ptr<uint8_t>(out));
    });
  });
  check_launch("paste_masks_in_image");
}

}  // namespace detcore_cuda
