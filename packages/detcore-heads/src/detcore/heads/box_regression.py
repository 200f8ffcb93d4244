"""Box-to-box transforms (box coders) and the dense box regression loss (detectron2's semantics).

``Box2BoxTransform`` is R-CNN's ``(dx, dy, dw, dh)`` parameterisation, ``Box2BoxTransformRotated`` adds an
angle delta ``da`` (radians, boxes in degrees), ``Box2BoxTransformLinear`` is FCOS's distances from the
anchor centre to the four sides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from detcore.ops import cat, ciou_loss, diou_loss, giou_loss, smooth_l1_loss
from detcore.structures import Boxes, RotatedBoxes

__all__ = [
    "Box2BoxTransform",
    "Box2BoxTransformLinear",
    "Box2BoxTransformRotated",
    "_dense_box_regression_loss",
]

#: Default clamp of ``dw``/``dh`` before ``exp``: boxes grow at most 1000/16 times.
_DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def _check_weights(weights: Any, n: int) -> tuple[float, ...]:
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != n:
        raise ValueError(f"weights must be a sequence of {n} numbers, got {weights!r}")
    out = tuple(float(w) for w in weights)
    if any(w == 0 for w in out):
        raise ValueError(f"weights must be non-zero, got {list(out)}")
    return out


def _check_boxes(name: str, t: Any, dim: int) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a Tensor[N, {dim}], got {type(t).__name__}")
    if t.dim() != 2 or t.shape[1] != dim:
        raise ValueError(f"{name} must have shape [N, {dim}], got {list(t.shape)}")
    if not t.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
    return t


def _check_deltas(deltas: Any, boxes: Tensor, dim: int) -> Tensor:
    if not isinstance(deltas, Tensor):
        raise TypeError(f"deltas must be a Tensor[N, k*{dim}], got {type(deltas).__name__}")
    if deltas.dim() != 2 or deltas.shape[1] % dim != 0 or deltas.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"deltas must have shape [N, k*{dim}] with N = len(boxes) = {boxes.shape[0]}, got {list(deltas.shape)}"
        )
    if not deltas.dtype.is_floating_point:
        raise TypeError(f"deltas must be a floating tensor, got {deltas.dtype}")
    return deltas


def _check_positive_sizes(widths: Tensor, heights: Tensor) -> None:
    # detectron2 asserts this too (a device sync); skipped while tracing or compiling.
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or widths.numel() == 0:
        return
    if not bool(((widths > 0) & (heights > 0)).all()):
        raise ValueError("src_boxes must have positive widths and heights (x2 > x1, y2 > y1)")


def _decode_dtype(deltas: Tensor) -> torch.dtype:
    # detectron2 decodes in float32 for precision; float64 stays float64 here.
    return deltas.dtype if deltas.dtype == torch.float64 else torch.float32


class Box2BoxTransform:
    """R-CNN's box transform: ``(dx, dy, dw, dh)`` shift the centre by ``(dx * w, dy * h)`` and scale the size
    by ``(exp(dw), exp(dh))``, each divided by its weight.

    Args:
        weights (tuple[float, float, float, float]): ``(wx, wy, ww, wh)`` applied to the deltas
            (RPN: ``(1, 1, 1, 1)``, Fast R-CNN head: ``(10, 10, 5, 5)``).
        scale_clamp (float): ``dw``/``dh`` are clamped to at most this before ``exp`` in ``apply_deltas``.
    """

    def __init__(self, weights: Sequence[float], scale_clamp: float = _DEFAULT_SCALE_CLAMP) -> None:
        self.weights = _check_weights(weights, 4)
        self.scale_clamp = float(scale_clamp)

    def __repr__(self) -> str:
        return f"Box2BoxTransform(weights={self.weights}, scale_clamp={self.scale_clamp})"

    def get_deltas(self, src_boxes: Tensor, target_boxes: Tensor) -> Tensor:
        """Deltas that turn ``src_boxes`` into ``target_boxes`` (``apply_deltas`` inverts it, unless clamped).

        Args:
            src_boxes (Tensor[N, 4]): XYXY source boxes (e.g. anchors, proposals) with positive width/height.
            target_boxes (Tensor[N, 4]): XYXY targets (e.g. ground truth).

        Returns:
            Tensor[N, 4]: ``(dx, dy, dw, dh)``.
        """
        _check_boxes("src_boxes", src_boxes, 4)
        _check_boxes("target_boxes", target_boxes, 4)
        if src_boxes.shape[0] != target_boxes.shape[0]:
            raise ValueError(
                f"src_boxes and target_boxes must have the same length, got {src_boxes.shape[0]} "
                f"and {target_boxes.shape[0]}"
            )
        src_widths = src_boxes[:, 2] - src_boxes[:, 0]
        src_heights = src_boxes[:, 3] - src_boxes[:, 1]
        src_ctr_x = src_boxes[:, 0] + 0.5 * src_widths
        src_ctr_y = src_boxes[:, 1] + 0.5 * src_heights

        target_widths = target_boxes[:, 2] - target_boxes[:, 0]
        target_heights = target_boxes[:, 3] - target_boxes[:, 1]
        target_ctr_x = target_boxes[:, 0] + 0.5 * target_widths
        target_ctr_y = target_boxes[:, 1] + 0.5 * target_heights

        wx, wy, ww, wh = self.weights
        dx = wx * (target_ctr_x - src_ctr_x) / src_widths
        dy = wy * (target_ctr_y - src_ctr_y) / src_heights
        dw = ww * torch.log(target_widths / src_widths)
        dh = wh * torch.log(target_heights / src_heights)
        _check_positive_sizes(src_widths, src_heights)
        return torch.stack((dx, dy, dw, dh), dim=1)

    def apply_deltas(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Apply deltas to boxes.

        Args:
            deltas (Tensor[N, k*4]): ``k >= 1`` class-specific transforms for each box (dx, dy, dw, dh).
            boxes (Tensor[N, 4]): XYXY boxes.

        Returns:
            Tensor[N, k*4]: decoded XYXY boxes, float32 (float64 for float64 deltas).
        """
        _check_boxes("boxes", boxes, 4)
        _check_deltas(deltas, boxes, 4)
        dtype = _decode_dtype(deltas)
        deltas = deltas.to(dtype)
        boxes = boxes.to(dtype)

        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights

        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.scale_clamp)

        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        pred_w = torch.exp(dw) * widths[:, None]
        pred_h = torch.exp(dh) * heights[:, None]

        x1 = pred_ctr_x - 0.5 * pred_w
        y1 = pred_ctr_y - 0.5 * pred_h
        x2 = pred_ctr_x + 0.5 * pred_w
        y2 = pred_ctr_y + 0.5 * pred_h
        return torch.stack((x1, y1, x2, y2), dim=-1).reshape(deltas.shape)


class Box2BoxTransformRotated:
    """Rotated R-CNN's box transform on ``(x_ctr, y_ctr, w, h, angle)`` boxes: ``(dx, dy, dw, dh, da)``.

    Box angles are in degrees, the angle delta ``da`` in radians (times its weight). Decoded and encoded
    angle differences are normalised to ``[-180, 180)`` degrees.

    Args:
        weights (tuple[float, float, float, float, float]): ``(wx, wy, ww, wh, wa)``.
        scale_clamp (float): ``dw``/``dh`` are clamped to at most this before ``exp``.
    """

    normalize_angle = True

    def __init__(self, weights: Sequence[float], scale_clamp: float = _DEFAULT_SCALE_CLAMP) -> None:
        self.weights = _check_weights(weights, 5)
        self.scale_clamp = float(scale_clamp)

    def __repr__(self) -> str:
        return f"Box2BoxTransformRotated(weights={self.weights}, scale_clamp={self.scale_clamp})"

    def get_deltas(self, src_boxes: Tensor, target_boxes: Tensor) -> Tensor:
        """Deltas ``(dx, dy, dw, dh, da)`` [N, 5] that turn ``src_boxes`` [N, 5] into ``target_boxes`` [N, 5]."""
        _check_boxes("src_boxes", src_boxes, 5)
        _check_boxes("target_boxes", target_boxes, 5)
        if src_boxes.shape[0] != target_boxes.shape[0]:
            raise ValueError(
                f"src_boxes and target_boxes must have the same length, got {src_boxes.shape[0]} "
                f"and {target_boxes.shape[0]}"
            )
        src_ctr_x, src_ctr_y, src_widths, src_heights, src_angles = torch.unbind(src_boxes, dim=1)
        tgt_ctr_x, tgt_ctr_y, tgt_widths, tgt_heights, tgt_angles = torch.unbind(target_boxes, dim=1)

        wx, wy, ww, wh, wa = self.weights
        dx = wx * (tgt_ctr_x - src_ctr_x) / src_widths
        dy = wy * (tgt_ctr_y - src_ctr_y) / src_heights
        dw = ww * torch.log(tgt_widths / src_widths)
        dh = wh * torch.log(tgt_heights / src_heights)
        da = tgt_angles - src_angles
        da = torch.remainder(da + 180.0, 360.0) - 180.0  # [-180, 180)
        da = da * (wa * math.pi / 180.0)
        _check_positive_sizes(src_widths, src_heights)
        return torch.stack((dx, dy, dw, dh, da), dim=1)

    def apply_deltas(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Apply deltas [N, k*5] to rotated boxes [N, 5]; returns [N, k*5] with angles in ``[-180, 180)``."""
        _check_boxes("boxes", boxes, 5)
        _check_deltas(deltas, boxes, 5)
        dtype = _decode_dtype(deltas)
        deltas = deltas.to(dtype)
        boxes = boxes.to(dtype).unsqueeze(2)

        ctr_x, ctr_y, widths, heights, angles = (boxes[:, i] for i in range(5))
        wx, wy, ww, wh, wa = self.weights
        dx = deltas[:, 0::5] / wx
        dy = deltas[:, 1::5] / wy
        dw = torch.clamp(deltas[:, 2::5] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[:, 3::5] / wh, max=self.scale_clamp)
        da = deltas[:, 4::5] / wa

        pred_angle = da * (180.0 / math.pi) + angles
        pred_angle = torch.remainder(pred_angle + 180.0, 360.0) - 180.0
        out = torch.stack(
            (
                dx * widths + ctr_x,
                dy * heights + ctr_y,
                torch.exp(dw) * widths,
                torch.exp(dh) * heights,
                pred_angle,
            ),
            dim=-1,
        )
        return out.reshape(deltas.shape)


class Box2BoxTransformLinear:
    """FCOS's linear transform: deltas are the distances ``(l, t, r, b)`` from the centre of a (square)
    source box to the four sides of the target, optionally divided by the source box's width/height.

    Args:
        normalize_by_size (bool): divide (encode) / multiply (decode) deltas by the source box size.
    """

    def __init__(self, normalize_by_size: bool = True) -> None:
        self.normalize_by_size = bool(normalize_by_size)

    def __repr__(self) -> str:
        return f"Box2BoxTransformLinear(normalize_by_size={self.normalize_by_size})"

    def get_deltas(self, src_boxes: Tensor, target_boxes: Tensor) -> Tensor:
        """Deltas ``(dx1, dy1, dx2, dy2)`` [N, 4]; the centre of each source box should lie inside its target."""
        _check_boxes("src_boxes", src_boxes, 4)
        _check_boxes("target_boxes", target_boxes, 4)
        if src_boxes.shape[0] != target_boxes.shape[0]:
            raise ValueError(
                f"src_boxes and target_boxes must have the same length, got {src_boxes.shape[0]} "
                f"and {target_boxes.shape[0]}"
            )
        src_ctr_x = 0.5 * (src_boxes[:, 0] + src_boxes[:, 2])
        src_ctr_y = 0.5 * (src_boxes[:, 1] + src_boxes[:, 3])
        target_l = src_ctr_x - target_boxes[:, 0]
        target_t = src_ctr_y - target_boxes[:, 1]
        target_r = target_boxes[:, 2] - src_ctr_x
        target_b = target_boxes[:, 3] - src_ctr_y
        deltas = torch.stack((target_l, target_t, target_r, target_b), dim=1)
        if self.normalize_by_size:
            stride_w = src_boxes[:, 2] - src_boxes[:, 0]
            stride_h = src_boxes[:, 3] - src_boxes[:, 1]
            deltas = deltas / torch.stack((stride_w, stride_h, stride_w, stride_h), dim=1)
        return deltas

    def apply_deltas(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Apply deltas [N, k*4] to boxes [N, 4]. Negative deltas are set to 0 (ReLU), so outputs are valid."""
        _check_boxes("boxes", boxes, 4)
        _check_deltas(deltas, boxes, 4)
        deltas = F.relu(deltas)
        boxes = boxes.to(deltas.dtype)
        ctr_x = 0.5 * (boxes[:, 0] + boxes[:, 2])
        ctr_y = 0.5 * (boxes[:, 1] + boxes[:, 3])
        k = deltas.shape[1] // 4
        d = deltas.reshape(deltas.shape[0], k, 4)
        if self.normalize_by_size:
            stride_w = boxes[:, 2] - boxes[:, 0]
            stride_h = boxes[:, 3] - boxes[:, 1]
            d = d * torch.stack((stride_w, stride_h, stride_w, stride_h), dim=1)[:, None, :]
        cx = ctr_x[:, None]
        cy = ctr_y[:, None]
        out = torch.stack((cx - d[..., 0], cy - d[..., 1], cx + d[..., 2], cy + d[..., 3]), dim=-1)
        return out.reshape(deltas.shape)


_LOSS_TYPES = ("smooth_l1", "giou", "diou", "ciou")


def _dense_box_regression_loss(
    anchors: list[Boxes] | list[RotatedBoxes] | list[Tensor],
    box2box_transform: Box2BoxTransform | Box2BoxTransformRotated | Box2BoxTransformLinear,
    pred_anchor_deltas: list[Tensor],
    gt_boxes: list[Tensor],
    fg_mask: Tensor,
    box_reg_loss_type: str = "smooth_l1",
    smooth_l1_beta: float = 0.0,
) -> Tensor:
    """Box regression loss of dense detectors (RPN, RetinaNet, FCOS), summed over foreground anchors.

    Args:
        anchors (list[Boxes] | list[Tensor[Ri, B]]): anchors of each level (R = sum(Ri) in total).
        box2box_transform: the transform that encodes/decodes deltas.
        pred_anchor_deltas (list[Tensor[N, Ri, B]]): predicted deltas of each level, for N images.
        gt_boxes (list[Tensor[R, B]]): per image, the ground-truth box matched to each anchor.
        fg_mask (Tensor[N, R] bool): foreground anchors (only these contribute).
        box_reg_loss_type (str): "smooth_l1" (on deltas), or "giou", "diou", "ciou" (on decoded boxes).
        smooth_l1_beta (float): beta of the smooth L1 loss (0 gives L1).

    Returns:
        Tensor: the summed loss (a scalar; not normalised).
    """
    if box_reg_loss_type not in _LOSS_TYPES:
        raise ValueError(
            f"box_reg_loss_type must be one of {', '.join(map(repr, _LOSS_TYPES))}, got {box_reg_loss_type!r}"
        )
    if not isinstance(anchors, (list, tuple)) or len(anchors) == 0:
        raise TypeError("anchors must be a non-empty list of Boxes or Tensor[Ri, B]")
    if isinstance(anchors[0], (Boxes, RotatedBoxes)):
        anchors_t = type(anchors[0]).cat(list(anchors)).tensor
    else:
        anchors_t = cat(list(anchors))
    pred = cat(list(pred_anchor_deltas), dim=1)  # [N, R, B]
    if box_reg_loss_type == "smooth_l1":
        gt_anchor_deltas = torch.stack([box2box_transform.get_deltas(anchors_t, k) for k in gt_boxes])
        return smooth_l1_loss(pred[fg_mask], gt_anchor_deltas[fg_mask], beta=smooth_l1_beta, reduction="sum")
    pred_boxes = torch.stack([box2box_transform.apply_deltas(k, anchors_t) for k in pred])
    target = torch.stack(list(gt_boxes))
    loss_fn = {"giou": giou_loss, "diou": diou_loss, "ciou": ciou_loss}[box_reg_loss_type]
    return loss_fn(pred_boxes[fg_mask], target[fg_mask], reduction="sum")
