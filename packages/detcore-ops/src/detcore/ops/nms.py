"""Non-maximum suppression of axis-aligned boxes: ``detcore::nms`` and ``detcore::batched_nms``."""

from __future__ import annotations

import torch
from torch import Tensor

from detcore.ops._checks import check_floating, check_same_device, check_shape, check_tensor
from detcore.ops._dispatch import CPU_KERNELS, kernel_for
from detcore.ops._native import dtype_code, native, num_threads

__all__ = ["batched_nms", "nms"]


def _check_nms_args(boxes: Tensor, scores: Tensor, iou_threshold: float, box_dim: int = 4) -> None:
    check_tensor("boxes", boxes)
    check_tensor("scores", scores)
    check_floating("boxes", boxes)
    check_floating("scores", scores)
    desc = "[N, 4] (x1, y1, x2, y2)" if box_dim == 4 else "[N, 5] (x_ctr, y_ctr, w, h, angle_degrees)"
    check_shape("boxes", boxes, (None, box_dim), desc)
    check_shape("scores", scores, (None,), "[N]")
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"scores must have one entry per box: boxes has {boxes.shape[0]}, scores has {scores.shape[0]}"
        )
    check_same_device(boxes=boxes, scores=scores)
    if not isinstance(iou_threshold, (int, float)) or isinstance(iou_threshold, bool):
        raise TypeError(f"iou_threshold must be a float, got {type(iou_threshold).__name__}")


def _check_idxs(idxs: Tensor, boxes: Tensor) -> None:
    check_tensor("idxs", idxs)
    if idxs.dtype.is_floating_point or idxs.dtype.is_complex or idxs.dtype == torch.bool:
        raise TypeError(f"idxs must be an integer tensor of category indices, got {idxs.dtype}")
    check_shape("idxs", idxs, (None,), "[N]")
    if idxs.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"idxs must have one entry per box: boxes has {boxes.shape[0]}, idxs has {idxs.shape[0]}"
        )
    check_same_device(boxes=boxes, idxs=idxs)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Iteratively removes lower-scoring boxes whose IoU with a kept higher-scoring box is greater than
    ``iou_threshold`` (torchvision's and detectron2's semantics; equal scores keep index order).

    Args:
        boxes (Tensor[N, 4]): XYXY boxes, absolute coordinates; float16/bfloat16 are computed in float32.
        scores (Tensor[N]): one score per box.
        iou_threshold (float): boxes with IoU > iou_threshold are suppressed.

    Returns:
        Tensor[K] int64: indices of kept boxes in decreasing order of score.
    """
    _check_nms_args(boxes, scores, iou_threshold)
    return torch.ops.detcore.nms(boxes, scores, float(iou_threshold))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS applied independently within each category of ``idxs``.

    Same result as ``torchvision.ops.batched_nms``, computed per category (in parallel on CPU) rather than
    by offsetting coordinates, so it is exact for any coordinate range (detectron2's "safer" variant).

    Args:
        boxes (Tensor[N, 4]): XYXY boxes.
        scores (Tensor[N]): scores.
        idxs (Tensor[N]): integer category of each box.
        iou_threshold (float): IoU above which a lower-scoring box of the same category is suppressed.

    Returns:
        Tensor[K] int64: kept indices in decreasing order of score.
    """
    _check_nms_args(boxes, scores, iou_threshold)
    _check_idxs(idxs, boxes)
    return torch.ops.detcore.batched_nms(boxes, scores, idxs, float(iou_threshold))


@torch.library.custom_op("detcore::nms", mutates_args=())
def _nms_op(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    return kernel_for("nms", boxes.device)(boxes, scores, iou_threshold)


@torch.library.custom_op("detcore::batched_nms", mutates_args=())
def _batched_nms_op(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    return kernel_for("batched_nms", boxes.device)(boxes, scores, idxs, iou_threshold)


def _fake_keep(boxes: Tensor, scores: Tensor) -> Tensor:
    torch._check(boxes.dim() == 2, lambda: f"boxes must be 2-D, got {boxes.dim()}-D")
    torch._check(scores.dim() == 1, lambda: f"scores must be 1-D, got {scores.dim()}-D")
    torch._check(boxes.shape[0] == scores.shape[0], lambda: "boxes and scores must have the same length")
    count = torch.library.get_ctx().new_dynamic_size()
    # NMS keeps a subset of the boxes: the bound lets export/compile reason about the kept count
    torch._check(count <= boxes.shape[0], lambda: "NMS cannot keep more boxes than it is given")
    return boxes.new_empty((count,), dtype=torch.int64)


@_nms_op.register_fake
def _(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    return _fake_keep(boxes, scores)


@_batched_nms_op.register_fake
def _(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    torch._check(idxs.shape[0] == boxes.shape[0], lambda: "idxs and boxes must have the same length")
    return _fake_keep(boxes, scores)


def _as_compute(boxes: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """Contiguous float32/float64 copies (half and bfloat16 compute in float32).

    The kernel reads scores in the boxes' dtype. float64 scores with float32 boxes would be rounded, which
    can tie or swap close scores, so they are replaced by their descending rank (ties in index order, NaN
    first, as the kernel orders them), which float32 holds exactly below 2**24 boxes.
    """
    dtype = boxes.dtype if boxes.dtype in (torch.float32, torch.float64) else torch.float32
    if torch.finfo(scores.dtype).bits > torch.finfo(dtype).bits:
        n = scores.shape[0]
        if n >= 2**24:
            dtype = scores.dtype
        else:
            order = torch.sort(scores, descending=True, stable=True).indices
            ranks = torch.empty(n, dtype=dtype)
            ranks[order] = torch.arange(n, 0, -1, dtype=dtype)
            scores = ranks
    return boxes.to(dtype).contiguous(), scores.to(dtype).contiguous()


def _finish(keep: Tensor, count: int) -> Tensor:
    return keep if count == keep.shape[0] else keep[:count].clone()


@CPU_KERNELS.register("nms")
def _nms_cpu(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    boxes, scores = _as_compute(boxes, scores)
    n = boxes.shape[0]
    keep = torch.empty(n, dtype=torch.int64)
    if n == 0:
        return keep
    count = native().nms(
        boxes.data_ptr(),
        scores.data_ptr(),
        n,
        iou_threshold,
        dtype_code(boxes),
        keep.data_ptr(),
        num_threads(),
    )
    return _finish(keep, count)


@CPU_KERNELS.register("batched_nms")
def _batched_nms_cpu(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    boxes, scores = _as_compute(boxes, scores)
    idxs = idxs.to(torch.int64).contiguous()
    n = boxes.shape[0]
    keep = torch.empty(n, dtype=torch.int64)
    if n == 0:
        return keep
    count = native().batched_nms(
        boxes.data_ptr(),
        scores.data_ptr(),
        idxs.data_ptr(),
        n,
        iou_threshold,
        dtype_code(boxes),
        keep.data_ptr(),
        num_threads(),
    )
    return _finish(keep, count)
