// pybind11 module detcore.ops_cuda._C: thin functions over raw device buffers; no torch headers, no
// libtorch. Importing it needs no GPU (nothing touches the driver until a kernel is launched).
#include <cuda_runtime_api.h>
#include <pybind11/pybind11.h>

#include "ops_cuda.h"

namespace py = pybind11;
namespace dc = detcore_cuda;

namespace {

using uptr = dc::uptr;

dc::DeformGeometry geometry(int64_t batch, int64_t channels, int64_t height, int64_t width, int64_t kernel_h,
                            int64_t kernel_w, int64_t pad_h, int64_t pad_w, int64_t stride_h, int64_t stride_w,
                            int64_t dilation_h, int64_t dilation_w, int64_t out_h, int64_t out_w,
                            int64_t offset_groups, bool use_mask) {
  if (offset_groups <= 0 || channels % offset_groups != 0)
    throw std::invalid_argument("deform_conv2d: channels must be divisible by offset_groups");
  return {batch,    channels, height,     width,      kernel_h, kernel_w,      pad_h,   pad_w,
          stride_h, stride_w, dilation_h, dilation_w, out_h,    out_w, offset_groups, use_mask};
}

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the error: no driver or no device means zero devices
    return 0;
  }
  return count;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "detcore CUDA kernels over raw device buffers (see detcore/ops_cuda/_native.py)";
  m.attr("ABI_VERSION") = 1;
  m.attr("CUDART_VERSION") = CUDART_VERSION;
  m.def("device_count", &device_count, "Number of CUDA devices visible to the CUDA runtime (0 without a driver).");

  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("nms_mask", &dc::nms_mask, py::arg("boxes"), py::arg("idxs"), py::arg("n"), py::arg("iou_threshold"),
        py::arg("dtype"), py::arg("mask"), py::arg("stream"), nogil);
  m.def("nms_rotated_mask", &dc::nms_rotated_mask, py::arg("boxes"), py::arg("idxs"), py::arg("n"),
        py::arg("iou_threshold"), py::arg("dtype"), py::arg("mask"), py::arg("stream"), nogil);
  m.def("nms_reduce", &dc::nms_reduce, py::arg("mask"), py::arg("n"), py::arg("keep"), py::arg("scratch"),
        py::arg("stream"), nogil);
  m.def("box_iou", &dc::box_iou, py::arg("boxes1"), py::arg("boxes2"), py::arg("n"), py::arg("m"),
        py::arg("dtype"), py::arg("out"), py::arg("stream"), nogil);
  m.def("box_iou_rotated", &dc::box_iou_rotated, py::arg("boxes1"), py::arg("boxes2"), py::arg("n"), py::arg("m"),
        py::arg("dtype"), py::arg("out"), py::arg("stream"), nogil);
  m.def("roi_align_forward", &dc::roi_align_forward, py::arg("input"), py::arg("rois"), py::arg("num_rois"),
        py::arg("batch_size"), py::arg("channels"), py::arg("height"), py::arg("width"), py::arg("spatial_scale"),
        py::arg("pooled_height"), py::arg("pooled_width"), py::arg("sampling_ratio"), py::arg("aligned"),
        py::arg("dtype"), py::arg("output"), py::arg("stream"), nogil);
  m.def("roi_align_backward", &dc::roi_align_backward, py::arg("grad"), py::arg("rois"), py::arg("num_rois"),
        py::arg("batch_size"), py::arg("channels"), py::arg("height"), py::arg("width"), py::arg("spatial_scale"),
        py::arg("pooled_height"), py::arg("pooled_width"), py::arg("sampling_ratio"), py::arg("aligned"),
        py::arg("dtype"), py::arg("grad_input"), py::arg("stream"), nogil);
  m.def("roi_pool_forward", &dc::roi_pool_forward, py::arg("input"), py::arg("rois"), py::arg("num_rois"),
        py::arg("batch_size"), py::arg("channels"), py::arg("height"), py::arg("width"), py::arg("spatial_scale"),
        py::arg("pooled_height"), py::arg("pooled_width"), py::arg("dtype"), py::arg("output"), py::arg("argmax"),
        py::arg("stream"), nogil);
  m.def("roi_pool_backward", &dc::roi_pool_backward, py::arg("grad"), py::arg("rois"), py::arg("argmax"),
        py::arg("num_rois"), py::arg("batch_size"), py::arg("channels"), py::arg("height"), py::arg("width"),
        py::arg("pooled_height"), py::arg("pooled_width"), py::arg("dtype"), py::arg("grad_input"),
        py::arg("stream"), nogil);
  m.def("roi_align_rotated_forward", &dc::roi_align_rotated_forward, py::arg("input"), py::arg("rois"),
        py::arg("num_rois"), py::arg("batch_size"), py::arg("channels"), py::arg("height"), py::arg("width"),
        py::arg("spatial_scale"), py::arg("pooled_height"), py::arg("pooled_width"), py::arg("sampling_ratio"),
        py::arg("dtype"), py::arg("output"), py::arg("stream"), nogil);
  m.def("roi_align_rotated_backward", &dc::roi_align_rotated_backward, py::arg("grad"), py::arg("rois"),
        py::arg("num_rois"), py::arg("batch_size"), py::arg("channels"), py::arg("height"), py::arg("width"),
        py::arg("spatial_scale"), py::arg("pooled_height"), py::arg("pooled_width"), py::arg("sampling_ratio"),
        py::arg("dtype"), py::arg("grad_input"), py::arg("stream"), nogil);

  // Deformable convolution: the geometry is passed flat.
  m.def(
      "deform_im2col",
      [](uptr input, uptr offset, uptr mask, int64_t batch, int64_t channels, int64_t height, int64_t width,
         int64_t kernel_h, int64_t kernel_w, int64_t pad_h, int64_t pad_w, int64_t stride_h, int64_t stride_w,
         int64_t dilation_h, int64_t dilation_w, int64_t out_h, int64_t out_w, int64_t offset_groups, bool use_mask,
         int dtype, uptr columns, uptr stream) {
        const auto g = geometry(batch, channels, height, width, kernel_h, kernel_w, pad_h, pad_w, stride_h,
                                stride_w, dilation_h, dilation_w, out_h, out_w, offset_groups, use_mask);
        dc::deform_im2col(input, offset, mask, g, dtype, columns, stream);
      },
      py::arg("input"), py::arg("offset"), py::arg("mask"), py::arg("batch"), py::arg("channels"), py::arg("height"),
      py::arg("width"), py::arg("kernel_h"), py::arg("kernel_w"), py::arg("pad_h"), py::arg("pad_w"),
      py::arg("stride_h"), py::arg("stride_w"), py::arg("dilation_h"), py::arg("dilation_w"), py::arg("out_h"),
      py::arg("out_w"), py::arg("offset_groups"), py::arg("use_mask"), py::arg("dtype"), py::arg("columns"),
      py::arg("stream"), nogil);
  m.def(
      "deform_col2im",
      [](uptr columns, uptr offset, uptr mask, int64_t batch, int64_t channels, int64_t height, int64_t width,
         int64_t kernel_h, int64_t kernel_w, int64_t pad_h, int64_t pad_w, int64_t stride_h, int64_t stride_w,
         int64_t dilation_h, int64_t dilation_w, int64_t out_h, int64_t out_w, int64_t offset_groups, bool use_mask,
         int dtype, uptr grad_input, uptr stream) {
        const auto g = geometry(batch, channels, height, width, kernel_h, kernel_w, pad_h, pad_w, stride_h,
                                stride_w, dilation_h, dilation_w, out_h, out_w, offset_groups, use_mask);
        dc::deform_col2im(columns, offset, mask, g, dtype, grad_input, stream);
      },
      py::arg("columns"), py::arg("offset"), py::arg("mask"), py::arg("batch"), py::arg("channels"),
      py::arg("height"), py::arg("width"), py::arg("kernel_h"), py::arg("kernel_w"), py::arg("pad_h"),
      py::arg("pad_w"), py::arg("stride_h"), py::arg("stride_w"), py::arg("dilation_h"), py::arg("dilation_w"),
      py::arg("out_h"), py::arg("out_w"), py::arg("offset_groups"), py::arg("use_mask"), py::arg("dtype"),
      py::arg("grad_input"), py::arg("stream"), nogil);
  m.def(
      "deform_col2im_coord",
      [](uptr columns, uptr input, uptr offset, uptr mask, int64_t batch, int64_t channels, int64_t height,
         int64_t width, int64_t kernel_h, int64_t kernel_w, int64_t pad_h, int64_t pad_w, int64_t stride_h,
         int64_t stride_w, int64_t dilation_h, int64_t dilation_w, int64_t out_h, int64_t out_w,
         int64_t offset_groups, bool use_mask, int dtype, uptr grad_offset, uptr grad_mask, uptr stream) {
        const auto g = geometry(batch, channels, height, width, kernel_h, kernel_w, pad_h, pad_w, stride_h,
                                stride_w, dilation_h, dilation_w, out_h, out_w, offset_groups, use_mask);
        dc::deform_col2im_coord(columns, input, offset, mask, g, dtype, grad_offset, grad_mask, stream);
      },
      py::arg("columns"), py::arg("input"), py::arg("offset"), py::arg("mask"), py::arg("batch"),
      py::arg("channels"), py::arg("height"), py::arg("width"), py::arg("kernel_h"), py::arg("kernel_w"),
      py::arg("pad_h"), py::arg("pad_w"), py::arg("stride_h"), py::arg("stride_w"), py::arg("dilation_h"),
      py::arg("dilation_w"), py::arg("out_h"), py::arg("out_w"), py::arg("offset_groups"), py::arg("use_mask"),
      py::arg("dtype"), py::arg("grad_offset"), py::arg("grad_mask"), py::arg("stream"), nogil);

  m.def("paste_masks", &dc::paste_masks, py::arg("masks"), py::arg("mask_dtype"), py::arg("boxes"),
        py::arg("box_dtype"), py::arg("n"), py::arg("mask_height"), py::arg("mask_width"), py::arg("image_height"),
        py::arg("image_width"), py::arg("threshold"), py::arg("out"), py::arg("stream"), nogil);
}
