// pybind11 module detcore.ops._C: thin functions over raw buffers, no torch headers.
#include "common/ops.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "detcore native CPU kernels over raw buffers (see detcore/ops/_native.py)";
  m.attr("ABI_VERSION") = 1;
  detcore::register_nms(m);
  detcore::register_box_iou(m);
  detcore::register_rotated(m);
  detcore::register_roi_align(m);
  detcore::register_roi_pool(m);
  detcore::register_roi_align_rotated(m);
  detcore::register_deform_conv(m);
  detcore::register_paste_masks(m);
  detcore::register_winograd(m);
}
