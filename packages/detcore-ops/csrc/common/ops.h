// One registration function per op family; each lives in its family's *_cpu.cpp.
#pragma once
#include <pybind11/pybind11.h>

namespace detcore {
void register_nms(pybind11::module_& m);
void register_box_iou(pybind11::module_& m);
void register_rotated(pybind11::module_& m);
void register_roi_align(pybind11::module_& m);
void register_roi_pool(pybind11::module_& m);
void register_roi_align_rotated(pybind11::module_& m);
void register_deform_conv(pybind11::module_& m);
void register_paste_masks(pybind11::module_& m);
void register_winograd(pybind11::module_& m);
}  // namespace detcore
