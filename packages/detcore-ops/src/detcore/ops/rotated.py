"""Rotated boxes (x_ctr, y_ctr, w, h, angle in degrees counter-clockwise): ``detcore::box_iou_rotated``,
``detcore::nms_rotated`` and ``detcore::batched_nms_rotated`` with detectron2's semantics."""

from __future__ import annotations

import torch
from torch import Tensor

from detcore.ops._checks import check_floating, check_same_device, check_shape, check_tensor
from detcore.ops._dispatch import CPU_KERNELS, kernel_for
from detcore.ops._native import dtype_code, native, num_threads
from detcore.ops.nms import _check_idxs, _check_nms_args

__all__ = ["batched_nms_rotated", "box_iou_rotated", "nms_rotated"]

_BOX_DESC = "(x_ctr, y_ctr, w, h, angle_degrees)"


def box_iou_rotated(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair of rotated boxes.

    Same arithmetic as detectron2's ``pairwise_iou_rotated`` (polygon clipping with its epsilons), so values
    match detectron2's. Boxes with ``w * h < 1e-14`` have IoU 0 with every box, themselves included.
    detectron2's CPU kernel accepts float32 only; float64 is also computed natively here, float16/bfloat16
    in float32. Not differentiable.

    Args:
        boxes1 (Tensor[N, 5]): rotated boxes (x_ctr, y_ctr, w, h, angle_degrees), angle counter-clockwise.
        boxes2 (Tensor[M, 5]): rotated boxes on the same device.

    Returns:
        Tensor[N, M]: IoU in the promoted dtype of the inputs.
    """
    check_tensor("boxes1", boxes1)
    check_tensor("boxes2", boxes2)
    check_floating("boxes1", boxes1)
    check_floating("boxes2", boxes2)
    check_shape("boxes1", boxes1, (None, 5), f"[N, 5] {_BOX_DESC}")
    check_shape("boxes2", boxes2, (None, 5), f"[M, 5] {_BOX_DESC}")
    check_same_device(boxes1=boxes1, boxes2=boxes2)
    return torch.ops.detcore.box_iou_rotated(boxes1, boxes2)


def nms_rotated(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression of rotated boxes.

    Visits boxes in decreasing score order (equal scores in index order) and suppresses every later box
    whose rotated IoU with a kept box is ``>= iou_threshold`` (detectron2's rule; axis-aligned :func:`nms`
    uses ``>``). So ``iou_threshold <= 0`` keeps only the top-scoring box, and 1.0 only removes exact
    duplicates. The angle is not compared: a box and its 180-degree copy have IoU 1.

    Args:
        boxes (Tensor[N, 5]): (x_ctr, y_ctr, w, h, angle_degrees).
        scores (Tensor[N]): one score per box.
        iou_threshold (float): suppress boxes with IoU >= iou_threshold.

    Returns:
        Tensor[K] int64: indices of kept boxes in decreasing order of score.
    """
    _check_nms_args(boxes, scores, iou_threshold, box_dim=5)
    return torch.ops.detcore.nms_rotated(boxes, scores, float(iou_threshold))


def batched_nms_rotated(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Rotated NMS applied independently within each category of ``idxs``.

    Categories are processed separately (in parallel) instead of detectron2's coordinate-offset trick, so
    coordinates are not rounded by large offsets and float64 boxes stay float64 (detectron2 casts to
    float32). One detectron2 behaviour is kept on purpose: boxes of different categories have IoU 0 with
    each other, so with ``iou_threshold <= 0`` they suppress each other too and only the top-scoring box
    overall is kept.

    Args:
        boxes (Tensor[N, 5]): (x_ctr, y_ctr, w, h, angle_degrees).
        scores (Tensor[N]): scores.
        idxs (Tensor[N]): integer category of each box.
        iou_threshold (float): suppress boxes of the same category with IoU >= iou_threshold.

    Returns:
        Tensor[K] int64: kept indices in decreasing order of score.
    """
    _check_nms_args(boxes, scores, iou_threshold, box_dim=5)
    _check_idxs(idxs, boxes)
    return torch.ops.detcore.batched_nms_rotated(boxes, scores, idxs, float(iou_threshold))


@torch.library.custom_op("detcore::box_iou_rotated", mutates_args=())
def _box_iou_rotated_op(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return kernel_for("box_iou_rotated", boxes1.device)(boxes1, boxes2)


@torch.library.custom_op("detcore::nms_rotated", mutates_args=())
def _nms_rotated_op(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    return kernel_for("nms_rotated", boxes.device)(boxes, scores, iou_threshold)


@torch.library.custom_op("detcore::batched_nms_rotated", mutates_args=())
def _batched_nms_rotated_op(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    return kernel_for("batched_nms_rotated", boxes.device)(boxes, scores, idxs, iou_threshold)


@_box_iou_rotated_op.register_fake
def _(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    torch._check(boxes1.dim() == 2 and boxes1.shape[1] == 5, lambda: "boxes1 must have shape [N, 5]")
    torch._check(boxes2.dim() == 2 and boxes2.shape[1] == 5, lambda: "boxes2 must have shape [M, 5]")
    dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]), dtype=dtype)


def _fake_keep(boxes: Tensor, scores: Tensor) -> Tensor:
    torch._check(boxes.dim() == 2 and boxes.shape[1] == 5, lambda: "boxes must have shape [N, 5]")
    torch._check(scores.dim() == 1, lambda: "scores must be 1-D")
    torch._check(boxes.shape[0] == scores.shape[0], lambda: "boxes and scores must have the same length")
    count = torch.library.get_ctx().new_dynamic_size()
    # NMS keeps a subset of the boxes: the bound lets export/compile reason about the kept count
    torch._check(count <= boxes.shape[0], lambda: "NMS cannot keep more boxes than it is given")
    return boxes.new_empty((count,), dtype=torch.int64)


@_nms_rotated_op.register_fake
def _(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    return _fake_keep(boxes, scores)


@_batched_nms_rotated_op.register_fake
def _(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    torch._check(idxs.shape[0] == boxes.shape[0], lambda: "idxs and boxes must have the same length")
    return _fake_keep(boxes, scores)


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


@CPU_KERNELS.register("box_iou_rotated")
def _box_iou_rotated_cpu(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    out_dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    compute = _compute_dtype(boxes1, boxes2)
    b1 = boxes1.to(compute).contiguous()
    b2 = boxes2.to(compute).contiguous()
    n, m = b1.shape[0], b2.shape[0]
    out = torch.empty((n, m), dtype=compute)
    if n and m:
        native().box_iou_rotated(
            b1.data_ptr(), b2.data_ptr(), n, m, dtype_code(b1), out.data_ptr(), num_threads()
        )
    return out if compute == out_dtype else out.to(out_dtype)


def _nms_rotated_impl(boxes: Tensor, scores: Tensor, idxs: Tensor | None, iou_threshold: float) -> Tensor:
    # Boxes keep their precision (half/bfloat16 -> float32); scores only order the boxes and go as float64,
    # which holds every floating dtype exactly (no ties are created).
    compute = _compute_dtype(boxes)
    b = boxes.to(compute).contiguous()
    s = scores.to(torch.float64).contiguous()
    n = b.shape[0]
    keep = torch.empty(n, dtype=torch.int64)
    if n == 0:
        return keep
    idx_ptr = 0
    if idxs is not None:
        idxs = idxs.to(torch.int64).contiguous()
        idx_ptr = idxs.data_ptr()
    count = native().nms_rotated(
        b.data_ptr(), s.data_ptr(), idx_ptr, n, iou_threshold, dtype_code(b), keep.data_ptr(), num_threads()
    )
    return keep if count == n else keep[:count].clone()


@CPU_KERNELS.register("nms_rotated")
def _nms_rotated_cpu(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    return _nms_rotated_impl(boxes, scores, None, iou_threshold)


@CPU_KERNELS.register("batched_nms_rotated")
def _batched_nms_rotated_cpu(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    return _nms_rotated_impl(boxes, scores, idxs, iou_threshold)
