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

struct Tap {
  int64_t offset_h, offset_w, mask;  // element indices into offset / mask
};

// Indices of the offset pair and the mask value of tap (i, j) of group g at output (b, y, x).
__device__ __forceinline__ Tap tap_index(const DeformGeometry& g, int64_t b, int64_t grp, int64_t i, int64_t j,
                                         int64_t y, int64_t x) {
  const int64_t taps = g.kernel_h * g.kernel_w;
  const int64_t plane = g.out_h * g.out_w;
  const int64_t k = i * g.kernel_w + j;
  const int64_t pix = y * g.out_w + x;
  const int64_t base = (b * g.offset_groups + grp) * taps;
  return {(2 * base + 2 * k) * plane + pix, (2 * base + 2 * k + 1) * plane + pix, (base + k) * plane + pix};
}

template <typename T>
__global__ void im2col_kernel(const T* __restrict__ input, const T* __restrict__ offset, const T* __restrict__ mask,
                              DeformGeometry g, T* __restrict__ columns) {
  const int64_t total = g.channels * g.batch * g.out_h * g.out_w;
  const int64_t ncols = g.batch * g.out_h * g.out_w;
  const int64_t cpg = g.channels / g.offset_groups;
  DETCORE_KERNEL_LOOP(index, total) {
    const int64_t x = index % g.out_w;
    const int64_t y = (index / g.out_w) % g.out_h;
    const int64_t b = (index / (g.out_w * g.out_h)) % g.batch;
    const int64_t c = index / (g.out_w * g.out_h * g.batch);
    const int64_t grp = c / cpg;
    const T* plane = input + (b * g.channels + c) * g.height * g.width;
    T* col = columns + c * g.kernel_h * g.kernel_w * ncols + (b * g.out_h + y) * g.out_w + x;
    for (int64_t i = 0; i < g.kernel_h; ++i) {
      for (int64_t j = 0; j < g.kernel_w; ++j) {
        const Tap t = tap_index(g, b, grp, i, j, y, x);
        const T m = g.use_mask ? mask[t.mask] : T(1);
        const T py = static_cast<T>(y * g.stride_h - g.pad_h + i * g.dilation_h) + offset[t.offset_h];
        const T px = static_cast<T>(x * g.stride_w - g.pad_w + j * g.dilation_w) + offset[t.offset_w];
        *col = m * deform_bilinear(plane, g.height, g.width, py, px);
        col += ncols;
      }
    }
  }
}

template <typename T>
__global__ void col2im_kernel(const T* __restrict__ columns, const T* __restrict__ offset,
                              const T* __restrict__ mask, DeformGeometry g, T* grad_input) {
  const int64_t ncols = g.batch * g.out_h * g.out_w;
  const int64_t total = g.channels * g.kernel_h * g.kernel_w * ncols;
  const int64_t cpg = g.channels / g.offset_groups;
  DETCORE_KERNEL_LOOP(index, total) {
    const T v = columns[index];
    if (v == T(0)) continue;
    const int64_t x = index % g.out_w;
    const int64_t y = (index / g.out_w) % g.out_h;
    const int64_t b = (index / (g.out_w * g.out_h)) % g.batch;
    const int64_t row = index / ncols;
    const int64_t j = row % g.kernel_w;
    const int64_t i = (row / g.kernel_w) % g.kernel_h;
    const int64_t c = row / (g.kernel_w * g.kernel_h);
    const Tap t = tap_index(g, b, c / cpg, i, j, y, x);
    const T m = g.use_mask ? mask[t.mask] : T(1);
    const T py = static_cast<T>(y * g.stride_h - g.pad_h + i * g.dilation_h) + offset[t.offset_h];
    const T px = static_cast<T>(x * g.stride_w - g.pad_w + j * g.dilation_w) + offset[t.offset_w];
    const AtomicAdd<T> add{grad_input + (b * g.channels + c) * g.height * g.width};
    deform_scatter(g.height, g.width, py, px, m * v, add);
  }
}

// One thread per offset-gradient element (b, channel, y, x); channel = 2 * (grp * taps + k) + (0: dy, 1: dx).
template <typename T>
__global__ void col2im_coord_kernel(const T* __restrict__ columns, const T* __restrict__ input,
                                    const T* __restrict__ offset, const T* __restrict__ mask, DeformGeometry g,
                                    T* __restrict__ grad_offset, T* __restrict__ grad_mask) {
  const int64_t taps = g.kernel_h * g.kernel_w;
  const int64_t offset_channels = 2 * g.offset_groups * taps;
  const int64_t total = g.batch * offset_channels * g.out_h * g.out_w;
  const int64_t ncols = g.batch * g.out_h * g.out_w;
  const int64_t cpg = g.channels / g.offset_groups;
  DETCORE_KERNEL_LOOP(index, total) {
    const int64_t x = index % g.out_w;
    const int64_t y = (index / g.out_w) % g.out_h;
    const int64_t ch = (index / (g.out_w * g.out_h)) % offset_channels;
    const int64_t b = index / (g.out_w * g.out_h * offset_channels);
    const int64_t grp = ch / (2 * taps);
    const int64_t k = (ch % (2 * taps)) / 2;
    const bool is_y = ch % 2 == 0;
    const int64_t i = k / g.kernel_w;
    const int64_t j = k % g.kernel_w;
    const Tap t = tap_index(g, b, grp, i, j, y, x);
    const T m = g.use_mask ? mask[t.mask] : T(1);
    const T py = static_cast<T>(y * g.stride_h - g.pad_h + i * g.dilation_h) + offset[t.offset_h];
    const T px = static_cast<T>(x * g.stride_w - g.pad_w + j * g.dilation_w) + offset[t.offset_w];
    const bool want_mask = g.use_mask && is_y;
    T grad_off = 0, grad_m = 0;
    const int64_t col_pix = (b * g.out_h + y) * g.out_w + x;
    for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
      const T* plane = input + (b * g.channels + c) * g.height * g.width;
      const T col = columns[(c * taps + k) * ncols + col_pix];
      grad_off += m * deform_coordinate_weight(plane, g.height, g.width, py, px, is_y) * col;
      if (want_mask) grad_m += col * deform_bilinear(plane, g.height, g.width, py, px);
    }
    grad_offset[index] = grad_off;
    if (want_mask) grad_mask[t.mask] = grad_m;
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
