"""Rotated boxes ``(cx, cy, w, h, angle)``, with the semantics of ``detectron2.structures.rotated_boxes``.

The angle is in degrees, counter-clockwise in image space (y pointing down): a box of angle ``a`` is the
horizontal box ``(cx, cy, w, h)`` rotated by ``a`` degrees counter-clockwise about its center.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from detcore.structures.boxes import Boxes, _as_box_tensor

__all__ = ["RotatedBoxes", "pairwise_iou", "pairwise_iou_rotated"]


class RotatedBoxes:
    """A list of rotated boxes stored as ``tensor (Tensor[N, 5])``: ``(x_center, y_center, width, height,
    angle_degrees)``.

    Floating tensors keep their dtype; anything else becomes float32; empty input becomes ``(0, 5)``.
    Construction from a CPU tensor raises ``ValueError`` on non-finite values (see :class:`Boxes`).
    """

    def __init__(self, tensor: torch.Tensor | np.ndarray | Sequence[Sequence[float]]):
        self.tensor = _as_box_tensor(tensor, 5, "RotatedBoxes")

    @classmethod
    def _wrap(cls, tensor: torch.Tensor) -> RotatedBoxes:
        obj = cls.__new__(cls)
        obj.tensor = tensor
        return obj

    def clone(self) -> RotatedBoxes:
        return self._wrap(self.tensor.clone())

    def to(self, *args: Any, **kwargs: Any) -> RotatedBoxes:
        return self._wrap(self.tensor.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def area(self) -> torch.Tensor:
        """Returns: Tensor[N], ``w * h``."""
        return self.tensor[:, 2] * self.tensor[:, 3]

    def normalize_angles(self) -> None:
        """Bring every angle into ``[-180, 180)`` degrees (in place)."""
        self.tensor[:, 4] = (self.tensor[:, 4] + 180.0) % 360.0 - 180.0

    def clip(self, box_size: Boxes.BoxSizeType, clip_angle_threshold: float = 1.0) -> None:
        """Clip nearly horizontal boxes to the image (in place), as detectron2 does.

        Angles are normalized first. Only boxes with ``|angle| <= clip_angle_threshold`` are clipped, as
        horizontal boxes to ``[0, width] x [0, height]``; their width/height never grow. Other boxes are
        left as they are (a rotated box cannot be clipped to a rectangle and stay a rotated box).

        Args:
            box_size: ``(height, width)``.
            clip_angle_threshold: degrees.
        """
        h, w = box_size
        self.normalize_angles()
        idx = torch.where(torch.abs(self.tensor[:, 4]) <= clip_angle_threshold)[0]
        t = self.tensor
        x1 = (t[idx, 0] - t[idx, 2] / 2.0).clamp(min=0, max=w)
        y1 = (t[idx, 1] - t[idx, 3] / 2.0).clamp(min=0, max=h)
        x2 = (t[idx, 0] + t[idx, 2] / 2.0).clamp(min=0, max=w)
        y2 = (t[idx, 1] + t[idx, 3] / 2.0).clamp(min=0, max=h)
        t[idx, 0] = (x1 + x2) / 2.0
        t[idx, 1] = (y1 + y2) / 2.0
        t[idx, 2] = torch.min(t[idx, 2], x2 - x1)
        t[idx, 3] = torch.min(t[idx, 3], y2 - y1)

    def nonempty(self, threshold: float = 0.0) -> torch.Tensor:
        """Returns: Tensor[N] bool, True where both width and height are ``> threshold``."""
        return (self.tensor[:, 2] > threshold) & (self.tensor[:, 3] > threshold)

    def inside_box(self, box_size: Boxes.BoxSizeType, boundary_threshold: int = 0) -> torch.Tensor:
        """Returns: Tensor[N] bool, True where the axis-aligned hull of the box lies inside
        ``[0, width) x [0, height)`` up to ``boundary_threshold``; ``box_size`` is ``(height, width)``."""
        height, width = box_size
        t = self.tensor
        half_w = t[..., 2] / 2.0
        half_h = t[..., 3] / 2.0
        a = t[..., 4] * (math.pi / 180.0)
        c = torch.abs(torch.cos(a))
        s = torch.abs(torch.sin(a))
        dx = c * half_w + s * half_h
        dy = c * half_h + s * half_w
        return (
            (t[..., 0] - dx >= -boundary_threshold)
            & (t[..., 1] - dy >= -boundary_threshold)
            & (t[..., 0] + dx < width + boundary_threshold)
            & (t[..., 1] + dy < height + boundary_threshold)
        )

    def get_centers(self) -> torch.Tensor:
        """Returns: Tensor[N, 2], ``(x_center, y_center)``."""
        return self.tensor[:, :2]

    def scale(self, scale_x: float, scale_y: float) -> None:
        """Scale by ``scale_x`` horizontally and ``scale_y`` vertically (in place).

        With unequal factors a rotated rectangle becomes a parallelogram; like detectron2 we fit the
        rotated rectangle through the scaled midpoints of its left and top edges:
        ``w' = w * sqrt((sx cos a)^2 + (sy sin a)^2)``, ``h' = h * sqrt((sx sin a)^2 + (sy cos a)^2)``,
        ``a' = atan2(sx sin a, sy cos a)``.
        """
        t = self.tensor
        t[:, 0] *= scale_x
        t[:, 1] *= scale_y
        theta = t[:, 4] * (math.pi / 180.0)
        c = torch.cos(theta)
        s = torch.sin(theta)
        t[:, 2] *= torch.sqrt((scale_x * c) ** 2 + (scale_y * s) ** 2)
        t[:, 3] *= torch.sqrt((scale_x * s) ** 2 + (scale_y * c) ** 2)
        t[:, 4] = torch.atan2(scale_x * s, scale_y * c) * (180.0 / math.pi)

    @classmethod
    def cat(cls, boxes_list: Sequence[RotatedBoxes]) -> RotatedBoxes:
        """Concatenate a list of RotatedBoxes; an empty list gives an empty RotatedBoxes."""
        if not isinstance(boxes_list, (list, tuple)):
            raise TypeError(
                f"RotatedBoxes.cat: boxes_list must be a list or tuple, got {type(boxes_list).__name__}"
            )
        if len(boxes_list) == 0:
            return cls(torch.empty(0))
        bad = [type(b).__name__ for b in boxes_list if not isinstance(b, RotatedBoxes)]
        if bad:
            raise TypeError(f"RotatedBoxes.cat: every element of boxes_list must be RotatedBoxes, got {bad}")
        return type(boxes_list[0])._wrap(torch.cat([b.tensor for b in boxes_list], dim=0))

    def __getitem__(self, item: int | slice | torch.Tensor | Sequence[int]) -> RotatedBoxes:
        """``boxes[3]`` (one box), ``boxes[2:10]``, ``boxes[bool_mask]``, ``boxes[index_tensor]``."""
        if isinstance(item, (int, np.integer)):
            return self._wrap(self.tensor[int(item)].view(1, -1))
        b = self.tensor[item]
        if b.dim() != 2:
            raise IndexError(
                f"RotatedBoxes: indexing with {item!r} did not give a [K, 5] matrix (got {list(b.shape)})"
            )
        return self._wrap(b)

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __repr__(self) -> str:
        return "RotatedBoxes(" + str(self.tensor) + ")"

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Yield one box at a time as ``Tensor[5]``."""
        yield from self.tensor


def pairwise_iou_rotated(boxes1: RotatedBoxes, boxes2: RotatedBoxes) -> torch.Tensor:
    """IoU of every pair of rotated boxes, computed by ``detcore.ops.box_iou_rotated``.

    Args:
        boxes1 (RotatedBoxes | Tensor[N, 5]), boxes2 (RotatedBoxes | Tensor[M, 5]).

    Returns:
        Tensor[N, M]
    """
    t1 = boxes1.tensor if isinstance(boxes1, RotatedBoxes) else boxes1
    t2 = boxes2.tensor if isinstance(boxes2, RotatedBoxes) else boxes2
    for name, t in (("boxes1", t1), ("boxes2", t2)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[-1] != 5:
            raise TypeError(f"{name} must be RotatedBoxes or a Tensor[N, 5], got {type(t).__name__}")
    from detcore.ops import box_iou_rotated

    return box_iou_rotated(t1, t2)


#: detectron2's name inside ``detectron2.structures.rotated_boxes``.
pairwise_iou = pairwise_iou_rotated
