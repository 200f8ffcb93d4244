"""Detection losses with detectron2's (fvcore's) formulas: smooth L1, GIoU/DIoU/CIoU, sigmoid focal loss.

Every loss takes ``reduction`` in {"none", "mean", "sum"}; "mean" of an empty input is ``0 * sum``
(a zero connected to the graph) instead of NaN, as detectron2's ``smooth_l1_loss`` and ``giou_loss`` do.
Box losses take XYXY boxes ``[..., 4]`` with ``x2 >= x1`` and ``y2 >= y1``; this is not checked (it
would need a device synchronization), and zero-width/height boxes are allowed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from detcore.ops._checks import check_same_device, check_tensor

__all__ = [
    "ciou_loss",
    "diou_loss",
    "giou_loss",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_jit",
    "sigmoid_focal_loss_star",
    "sigmoid_focal_loss_star_jit",
    "smooth_l1_loss",
]

_REDUCTIONS = ("none", "mean", "sum")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f'reduction must be one of "none", "mean", "sum", got {reduction!r}')


def _check_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")


def _check_pair(name1: str, t1: object, name2: str, t2: object) -> None:
    check_tensor(name1, t1)
    check_tensor(name2, t2)
    if t1.shape != t2.shape:
        raise ValueError(
            f"{name1} and {name2} must have the same shape, got {list(t1.shape)} and {list(t2.shape)}"
        )
    check_same_device(**{name1: t1, name2: t2})


def _check_floating(name: str, t: Tensor) -> None:
    if not t.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    if reduction == "sum":
        return loss.sum()
    return loss


# ---------------------------------------------------------------------------------------------------------
# Smooth L1


def smooth_l1_loss(input: Tensor, target: Tensor, beta: float, reduction: str = "none") -> Tensor:
    """Smooth L1 loss (Huber loss divided by ``beta``), as defined in Fast R-CNN.

    With ``n = |input - target|``::

        loss = 0.5 * n ** 2 / beta   if n < beta
               n - 0.5 * beta        otherwise

    ``beta < 1e-5`` gives the plain L1 loss ``n`` (detectron2's convention; ``beta == 0`` would divide by
    zero). Unlike ``torch.nn.functional.smooth_l1_loss`` the loss is not multiplied by ``beta``, so it
    tends to L1 as ``beta -> 0``.

    Args:
        input (Tensor[*]): predictions, floating.
        target (Tensor[*]): targets, the same shape.
        beta (float): L1 to L2 transition point.
        reduction (str): "none" | "mean" | "sum".

    Returns:
        Tensor[*] for "none", else a scalar Tensor.
    """
    _check_pair("input", input, "target", target)
    _check_floating("input", input)
    _check_number("beta", beta)
    _check_reduction(reduction)
    n = torch.abs(input - target)
    if beta < 1e-5:
        loss = n
    else:
        loss = torch.where(n < beta, 0.5 * n * n / beta, n - 0.5 * beta)
    return _reduce(loss, reduction)


# ---------------------------------------------------------------------------------------------------------
# IoU-based box losses


def _check_boxes(boxes1: Tensor, boxes2: Tensor, eps: float, reduction: str) -> None:
    _check_pair("boxes1", boxes1, "boxes2", boxes2)
    _check_floating("boxes1", boxes1)
    _check_floating("boxes2", boxes2)
    if boxes1.dim() == 0 or boxes1.shape[-1] != 4:
        raise ValueError(
            f"boxes1 and boxes2 must have shape [..., 4] (x1, y1, x2, y2), got {list(boxes1.shape)}"
        )
    _check_number("eps", eps)
    _check_reduction(reduction)


def _iou_and_enclosing(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns (intersection, union, enclosing-box width, enclosing-box height), each [...]."""
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    inter_w = (torch.min(x2, x2g) - torch.max(x1, x1g)).clamp(min=0)
    inter_h = (torch.min(y2, y2g) - torch.max(y1, y1g)).clamp(min=0)
    inter = inter_w * inter_h
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    enc_w = torch.max(x2, x2g) - torch.min(x1, x1g)
    enc_h = torch.max(y2, y2g) - torch.min(y1, y1g)
    return inter, union, enc_w, enc_h


def giou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """Generalized IoU loss ``1 - GIoU`` (https://giou.stanford.edu/), fvcore's formula.

    ``iou = inter / (union + eps)``, ``giou = iou - (area_c - union) / (area_c + eps)`` with ``area_c`` the
    area of the smallest enclosing box. The loss is in [0, 2].

    Args:
        boxes1 (Tensor[..., 4]): XYXY boxes (predictions), floating.
        boxes2 (Tensor[..., 4]): XYXY boxes (targets), the same shape.
        reduction (str): "none" | "mean" | "sum".
        eps (float): small number that keeps the divisions finite.

    Returns:
        Tensor[...] for "none", else a scalar Tensor.
    """
    _check_boxes(boxes1, boxes2, eps, reduction)
    inter, union, enc_w, enc_h = _iou_and_enclosing(boxes1, boxes2)
    iou = inter / (union + eps)
    area_c = enc_w * enc_h
    giou = iou - (area_c - union) / (area_c + eps)
    return _reduce(1 - giou, reduction)


def _diou_terms(boxes1: Tensor, boxes2: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Returns (iou, normalized center distance) as in fvcore's diou_loss."""
    inter, union, enc_w, enc_h = _iou_and_enclosing(boxes1, boxes2)
    iou = inter / (union + eps)
    diag_sq = enc_w * enc_w + enc_h * enc_h + eps
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    dx = (x1 + x2) / 2 - (x1g + x2g) / 2
    dy = (y1 + y2) / 2 - (y1g + y2g) / 2
    return iou, (dx * dx + dy * dy) / diag_sq


def diou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """Distance IoU loss (https://arxiv.org/abs/1911.08287), fvcore's formula.

    ``loss = 1 - iou + d^2 / (c^2 + eps)`` with ``d`` the distance between the box centers and ``c`` the
    diagonal of the smallest enclosing box; ``iou = inter / (union + eps)``.

    Args:
        boxes1 (Tensor[..., 4]): XYXY boxes (predictions), floating.
        boxes2 (Tensor[..., 4]): XYXY boxes (targets), the same shape.
        reduction (str): "none" | "mean" | "sum".
        eps (float): small number that keeps the divisions finite.

    Returns:
        Tensor[...] for "none", else a scalar Tensor.
    """
    _check_boxes(boxes1, boxes2, eps, reduction)
    iou, dist = _diou_terms(boxes1, boxes2, eps)
    return _reduce(1 - iou + dist, reduction)


def ciou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """Complete IoU loss (https://arxiv.org/abs/1911.08287), fvcore's formula.

    ``loss = diou_loss + alpha * v`` with the aspect-ratio term
    ``v = 4 / pi^2 * (atan(w_gt / h_gt) - atan(w / h))^2`` and ``alpha = v / (1 - iou + v + eps)``
    treated as a constant (no gradient), as in the paper and fvcore.

    Note:
        ``atan(w / h)`` is computed as ``atan2(w, h)``: the same value for boxes with ``h > 0``, ``pi / 2``
        for ``h == 0 < w`` (as ``atan(inf)``), and 0 for a point box, with finite gradients in all these
        cases (fvcore and torchvision give NaN gradients for ``h == 0`` and a NaN loss for point boxes).

    Args:
        boxes1 (Tensor[..., 4]): XYXY boxes (predictions), floating.
        boxes2 (Tensor[..., 4]): XYXY boxes (targets), the same shape.
        reduction (str): "none" | "mean" | "sum".
        eps (float): small number that keeps the divisions finite.

    Returns:
        Tensor[...] for "none", else a scalar Tensor.
    """
    _check_boxes(boxes1, boxes2, eps, reduction)
    iou, dist = _diou_terms(boxes1, boxes2, eps)
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    angle_diff = torch.atan2(x2g - x1g, y2g - y1g) - torch.atan2(x2 - x1, y2 - y1)
    v = (4 / (math.pi**2)) * angle_diff * angle_diff
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return _reduce(1 - iou + dist + alpha * v, reduction)


# ---------------------------------------------------------------------------------------------------------
# Focal losses


def _focal_args(inputs: Tensor, targets: Tensor, reduction: str) -> tuple[Tensor, Tensor]:
    _check_pair("inputs", inputs, "targets", targets)
    _check_floating("inputs", inputs)
    if targets.dtype.is_complex:
        raise TypeError(f"targets must be a real tensor of 0/1 labels or probabilities, got {targets.dtype}")
    _check_reduction(reduction)
    # float16/bfloat16 are too coarse for the log terms: compute in float32 (fvcore always uses float32).
    dtype = torch.float64 if inputs.dtype == torch.float64 else torch.float32
    return inputs.to(dtype), targets.to(dtype)


def sigmoid_focal_loss(
    inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2, reduction: str = "none"
) -> Tensor:
    """Sigmoid focal loss (RetinaNet, https://arxiv.org/abs/1708.02002), fvcore's formula.

    With ``p = sigmoid(inputs)`` and ``p_t = p * t + (1 - p) * (1 - t)``::

        loss = alpha_t * BCE_with_logits(inputs, t) * (1 - p_t) ** gamma
        alpha_t = alpha * t + (1 - alpha) * (1 - t)     (omitted when alpha < 0)

    Args:
        inputs (Tensor[*]): logits, floating. float16/bfloat16 are computed in float32.
        targets (Tensor[*]): binary labels (0/1, any real dtype) or soft targets in [0, 1], same shape.
        alpha (float): weight of positives in [0, 1]; negative to disable the weighting.
        gamma (float): focusing exponent >= 0 (0 gives alpha-weighted BCE).
        reduction (str): "none" | "mean" | "sum".

    Returns:
        Tensor[*] for "none", else a scalar Tensor; float64 for float64 inputs, otherwise float32.
    """
    _check_number("alpha", alpha)
    _check_number("gamma", gamma)
    inputs, targets = _focal_args(inputs, targets, reduction)
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return _reduce(loss, reduction)


def sigmoid_focal_loss_star(
    inputs: Tensor, targets: Tensor, alpha: float = -1, gamma: float = 1, reduction: str = "none"
) -> Tensor:
    """FL* variant of the focal loss (appendix of the RetinaNet paper), fvcore's formula.

    ``loss = -log(sigmoid(gamma * inputs * (2 * t - 1))) / gamma``, times ``alpha_t`` when ``alpha >= 0``.

    Args:
        inputs (Tensor[*]): logits, floating. float16/bfloat16 are computed in float32.
        targets (Tensor[*]): binary labels (0/1), same shape.
        alpha (float): weight of positives in [0, 1]; negative (default) to disable the weighting.
        gamma (float): > 0.
        reduction (str): "none" | "mean" | "sum".

    Returns:
        Tensor[*] for "none", else a scalar Tensor; float64 for float64 inputs, otherwise float32.
    """
    _check_number("alpha", alpha)
    _check_number("gamma", gamma)
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0 for sigmoid_focal_loss_star, got {gamma}")
    inputs, targets = _focal_args(inputs, targets, reduction)
    shifted_inputs = gamma * (inputs * (2 * targets - 1))
    loss = -F.logsigmoid(shifted_inputs) / gamma
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return _reduce(loss, reduction)


# detectron2/fvcore export TorchScript-compiled copies under these names. ``torch.jit.script`` is
# deprecated on the torch versions detcore supports (torch 2.14 emits a FutureWarning when it is called),
# so these are aliases of the eager functions, which also run under ``torch.compile(fullgraph=True)``.
#: Alias of :func:`sigmoid_focal_loss` (detectron2 API parity; see the comment above).
sigmoid_focal_loss_jit = sigmoid_focal_loss
#: Alias of :func:`sigmoid_focal_loss_star` (detectron2 API parity).
sigmoid_focal_loss_star_jit = sigmoid_focal_loss_star
