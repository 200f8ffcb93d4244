"""Pairwise IoU of axis-aligned boxes: ``detcore::box_iou``."""

from __future__ import annotations

import torch
from torch import Tensor

from detcore.ops._checks import check_floating, check_same_device, check_shape, check_tensor
from detcore.ops._dispatch import CPU_KERNELS, kernel_for
from detcore.ops._native import dtype_code, native, num_threads

__all__ = ["box_iou"]


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair of XYXY boxes.

    Follows detectron2's ``pairwise_iou``: ``IoU = inter / (area1 + area2 - inter)`` where the intersection
    is positive and exactly 0 otherwise. Where torchvision's ``box_iou`` is finite and nonzero the results are
    bit-identical; pairs of empty boxes (zero-area or negative-size), for which torchvision returns nan
    (0 / 0), give 0 here. Not differentiable.

    Args:
        boxes1 (Tensor[N, 4]): XYXY boxes, absolute coordinates.
        boxes2 (Tensor[M, 4]): XYXY boxes on the same device.

    Returns:
        Tensor[N, M]: IoU in the promoted dtype of the inputs (float16/bfloat16 are computed in float32 and
        rounded back).
    """
    check_tensor("boxes1", boxes1)
    check_tensor("boxes2", boxes2)
    check_floating("boxes1", boxes1)
    check_floating("boxes2", boxes2)
    check_shape("boxes1", boxes1, (None, 4), "[N, 4] (x1, y1, x2, y2)")
    check_shape("boxes2", boxes2, (None, 4), "[M, 4] (x1, y1, x2, y2)")
    check_same_device(boxes1=boxes1, boxes2=boxes2)
    return torch.ops.detcore.box_iou(boxes1, boxes2)


@torch.library.custom_op("detcore::box_iou", mutates_args=())
def _box_iou_op(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return kernel_for("box_iou", boxes1.device)(boxes1, boxes2)


@_box_iou_op.register_fake
def _(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    torch._check(boxes1.dim() == 2 and boxes1.shape[1] == 4, lambda: "boxes1 must have shape [N, 4]")
    torch._check(boxes2.dim() == 2 and boxes2.shape[1] == 4, lambda: "boxes2 must have shape [M, 4]")
    dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]), dtype=dtype)


@CPU_KERNELS.register("box_iou")
def _box_iou_cpu(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    out_dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    compute = out_dtype if out_dtype in (torch.float32, torch.float64) else torch.float32
    b1 = boxes1.to(compute).contiguous()
    b2 = boxes2.to(compute).contiguous()
    n, m = b1.shape[0], b2.shape[0]
    out = torch.empty((n, m), dtype=compute)
    if n and m:
        native().box_iou(b1.data_ptr(), b2.data_ptr(), n, m, dtype_code(b1), out.data_ptr(), num_threads())
    return out if compute == out_dtype else out.to(out_dtype)
