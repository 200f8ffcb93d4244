// Deformable convolution (torchvision semantics): im2col of deformed, mask-weighted bilinear samples,
// its transpose col2im (gradient of the input) and the offset/mask gradients. The GEMMs with the weight
// are done by torch on the Python side.
//
// Layouts: input [B, C, H, W]; offset [B, 2 * G * kh * kw, oh, ow] with (dy, dx) pairs per kernel tap;
// mask [B, G * kh * kw, oh, ow]; columns [C * kh * kw, B * oh * ow] (row (c * kh + i) * kw + j, column
// (b * oh + y) * ow + x). G = offset groups; channel c uses group c / (C / G).
#include "deform_conv.cuh"
#include "ops_cuda.h"

namespace detcore_cuda {
namespace {

template <typename T>
struct AtomicAdd {
  T* base;
  __device__ void operator()(int64_t i, T v) const { atomicAdd(base + i, v); }
};

template <typename T>
__global__ void im2col_kernel(const T* __restrict__ input, const T* __restrict__ offset, const T* __restrict__ mask,
                              DeformGeometry g, T* __restrict__ columns) {
  const int64_t total = g.channels * g.batch * g.out_h * g.out_w;
  DETCORE_KERNEL_LOOP(index, total) { deform_im2col_element(index, input, offset, mask, g, columns); }
}

template <typename T>
__global__ void col2im_kernel(const T* __restrict__ columns, const T* __restrict__ offset,
                              const T* __restrict__ mask, DeformGeometry g, T* grad_input) {
  const int64_t total = g.channels * g.kernel_h * g.kernel_w * g.batch * g.out_h * g.out_w;
  const AtomicAdd<T> add{grad_input};
  DETCORE_KERNEL_LOOP(index, total) { deform_col2im_element(index, columns, offset, mask, g, add); }
}

template <typename T>
__global__ void col2im_coord_kernel(const T* __restrict__ columns, const T* __restrict__ input,
                                    const T* __restrict__ offset, const T* __restrict__ mask, DeformGeometry g,
                                    T* __restrict__ grad_offset, T* __restrict__ grad_mask) {
  const int64_t total = g.batch * 2 * g.offset_groups * g.kernel_h * g.kernel_w * g.out_h * g.out_w;
  DETCORE_KERNEL_LOOP(index, total) {
    deform_col2im_coord_element(index, columns, input, offset, mask, g, grad_offset, grad_mask);
  }
}

}  // namespace

void deform_im2col(uptr input, uptr offset, uptr mask, const DeformGeometry& g, int dtype, uptr columns,
                   uptr stream) {
  const int64_t total = g.channels * g.batch * g.out_h * g.out_w;
  if (total <= 0) return;
  dispatch_floating(dtype, "deform_conv2d", [&](auto zero) {
    using T = decltype(zero);
    im2col_kernel<T><<<blocks_for(total), kThreads, 0, as_stream(stream)>>>(
        ptr<const T>(input), ptr<const T>(offset), ptr<const T>(mask), g, ptr<T>(columns));
  });
  check_launch("deform_conv2d (im2col)");
}

void deform_col2im(uptr columns, uptr offset, uptr mask, const DeformGeometry& g, int dtype, uptr grad_input,
                   uptr stream) {
  const int64_t total = g.channels * g.kernel_h * g.kernel_w * g.batch * g.out_h * g.out_w;
  if (total <= 0) return;
  dispatch_floating(dtype, "_deform_conv2d_backward", [&](auto zero) {
    using T = decltype(zero);
    col2im_kernel<T><<<blocks_for(total), kThreads, 0, as_stream(stream)>>>(
        ptr<const T>(columns), ptr<const T>(offset), ptr<const T>(mask), g, ptr<T>(grad_input));
  });
  check_launch("_deform_conv2d_backward (col2im)");
}

void deform_col2im_coord(uptr columns, uptr input, uptr offset, uptr mask, const DeformGeometry& g, int dtype,
                         uptr grad_offset, uptr grad_mask, uptr stream) {
  const int64_t total = g.batch * 2 * g.offset_groups * g.kernel_h * g.kernel_w * g.out_h * g.out_w;
  if (total <= 0) return;
  dispatch_floating(dtype, "_deform_conv2d_backward", [&](auto zero) {
    using T = decltype(zero);
    col2im_coord_kernel<T><<<blocks_for(total), kThreads, 0, as_stream(stream)>>>(
        ptr<const T>(columns), ptr<const T>(input), ptr<const T>(offset), ptr<const T>(mask), g,
        ptr<T>(grad_offset), ptr<T>(grad_mask));
  });
  check_launch("_deform_conv2d_backward (offset gradient)");
}

}  // namespace detcore_cuda
