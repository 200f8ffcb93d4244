// Host entry points of the CUDA kernels (defined in the *.cu files, bound in bindings.cpp).
// Every pointer is a device address passed as an integer; `stream` is a cudaStream_t as an integer;
// `dtype` is 0 (float32) or 1 (float64). Inputs are contiguous; outputs are preallocated by the caller
// (zero-filled where a kernel accumulates). Each function launches asynchronously on `stream` and throws
// std::runtime_error if the launch failed.
#pragma once
#include <cstdint>

namespace detcore_cuda {

using uptr = std::uintptr_t;

// --- nms_cuda.cu --------------------------------------------------------------------------------------
// Upper-triangular 64-wide IoU bitmask of boxes [n, 4] already in decreasing-score order: bit k of
// mask[i, b] is set when box j = 64 * b + k (j > i) has IoU > iou_threshold with box i (and, when idxs is
// not 0, the same category idxs[j] == idxs[i]). mask is int64 [n, ceil(n / 64)].
void nms_mask(uptr boxes, uptr idxs, int64_t n, double iou_threshold, int dtype, uptr mask, uptr stream);
// Greedy reduction of a mask from nms_mask / nms_rotated_mask: keep (uint8 [n], zero-filled) gets 1 for
// each kept position. scratch is int64 [ceil(n / 64)], zero-filled (used when shared memory is too small).
void nms_reduce(uptr mask, int64_t n, uptr keep, uptr scratch, uptr stream);

// --- box_iou_cuda.cu ----------------------------------------------------------------------------------
void box_iou(uptr boxes1, uptr boxes2, int64_t n, int64_t m, int dtype, uptr out, uptr stream);

// --- rotated_cuda.cu ----------------------------------------------------------------------------------
void box_iou_rotated(uptr boxes1, uptr boxes2, int64_t n, int64_t m, int dtype, uptr out, uptr stream);
// Like nms_mask for rotated boxes [n, 5]; the suppression test is IoU >= iou_threshold.
void nms_rotated_mask(uptr boxes, uptr idxs, int64_t n, double iou_threshold, int dtype, uptr mask,
                      uptr stream);

// --- roi_align_cuda.cu, roi_pool_cuda.cu, roi_align_rotated_cuda.cu ---------------------------------
// input [batch_size, channels, height, width]; rois [num_rois, 5] (image index, x1, y1, x2, y2) or
// [num_rois, 6] (image index, cx, cy, w, h, angle). A RoI whose image index is outside [0, batch_size) pools
// zeros and gets no gradient (a kernel cannot raise). Outputs [num_rois, channels, pooled_h, pooled_w].
void roi_align_forward(uptr input, uptr rois, int64_t num_rois, int64_t batch_size, int64_t channels,
                       int64_t height, int64_t width, double spatial_scale, int64_t pooled_height,
                       int64_t pooled_width, int64_t sampling_ratio, bool aligned, int dtype, uptr output,
                       uptr stream);
void roi_align_backward(uptr grad, uptr rois, int64_t num_rois, int64_t batch_size, int64_t channels,
                        int64_t height, int64_t width, double spatial_scale, int64_t pooled_height,
                        int64_t pooled_width, int64_t sampling_ratio, bool aligned, int dtype, uptr grad_input,
                        uptr stream);
// argmax is int64: the flat h * width + w index of the maximum in its channel plane, -1 for an empty bin.
void roi_pool_forward(uptr input, uptr rois, int64_t num_rois, int64_t batch_size, int64_t channels,
                      int64_t height, int64_t width, double spatial_scale, int64_t pooled_height,
                      int64_t pooled_width, int dtype, uptr output, uptr argmax, uptr stream);
void roi_pool_backward(uptr grad, uptr rois, uptr argmax, int64_t num_rois, int64_t batch_size, int64_t channels,
                       int64_t height, int64_t width, int64_t pooled_height, int64_t pooled_width, int dtype,
                       uptr grad_input, uptr stream);
void roi_align_rotated_forward(uptr input, uptr rois, int64_t num_rois, int64_t batch_size, int64_t channels,
                               int64_t height, int64_t width, double spatial_scale, int64_t pooled_height,
                               int64_t pooled_width, int64_t sampling_ratio, int dtype, uptr output,
                               uptr stream);
void roi_align_rotated_backward(uptr grad, uptr rois, int64_t num_rois, int64_t batch_size, int64_t channels,
                                int64_t height, int64_t width, double spatial_scale, int64_t pooled_height,
                                int64_t pooled_width, int64_t sampling_ratio, int dtype, uptr grad_input,
                                uptr stream);

// --- deform_conv_cuda.cu ------------------------------------------------------------------------------
// Geometry shared by the three deformable-convolution kernels (torchvision's layout).
struct DeformGeometry {
  int64_t batch, channels, height, width;      // input chunk [batch, channels, height, width]
  int64_t kernel_h, kernel_w;                  // weight spatial size
  int64_t pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w;
  int64_t out_h, out_w;
  int64_t offset_groups;
  bool use_mask;
};
// columns [channels * kernel_h * kernel_w, batch * out_h * out_w] of mask-weighted bilinear samples.
void deform_im2col(uptr input, uptr offset, uptr mask, const DeformGeometry& g, int dtype, uptr columns,
                   uptr stream);
// Scatters columns (same layout) back into grad_input [batch, channels, height, width] (zero-filled).
void deform_col2im(uptr columns, uptr offset, uptr mask, const DeformGeometry& g, int dtype, uptr grad_input,
                   uptr stream);
// grad_offset [batch, 2 * offset_groups * kh * kw, out_h, out_w] and, if use_mask, grad_mask
// [batch, offset_groups * kh * kw, out_h, out_w] from the column gradient.
void deform_col2im_coord(uptr columns, uptr input, uptr offset, uptr mask, const DeformGeometry& g, int dtype,
                         uptr grad_offset, uptr grad_mask, uptr stream);

// --- paste_masks_cuda.cu ------------------------------------------------------------------------------
// masks [n, mask_height, mask_width] (mask_dtype), boxes [n, 4] (box_dtype); out is uint8
// [n, image_height, image_width]: (value >= threshold) when threshold >= 0, else the soft value * 255
// truncated.
void paste_masks(uptr masks, int mask_dtype, uptr boxes, int box_dtype, int64_t n, int64_t mask_height,
                 int64_t mask_width, int64_t image_height, int64_t image_width, double threshold, uptr out,
                 uptr stream);

}  // namespace detcore_cuda
