"""``ROIPooler``: pools a fixed-size feature for each box from the FPN level that suits its size."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx.experimental.symbolic_shapes import guard_or_false

from detcore.ops import nonzero_tuple
from detcore.structures import Boxes, RotatedBoxes

__all__ = ["POOLER_TYPES", "ROIPooler", "assign_boxes_to_levels", "convert_boxes_to_pooler_format"]

#: Pooler types accepted by :class:`ROIPooler` (detectron2's names).
POOLER_TYPES = ("ROIAlign", "ROIAlignV2", "ROIPool", "ROIAlignRotated")


def assign_boxes_to_levels(
    box_lists: Sequence[Boxes] | Sequence[RotatedBoxes],
    min_level: int,
    max_level: int,
    canonical_box_size: float,
    canonical_level: int,
) -> Tensor:
    """FPN level index (0-based, relative to ``min_level``) for every box of every image.

    ``level = floor(canonical_level + log2(sqrt(area) / canonical_box_size + 1e-8))`` clamped to
    ``[min_level, max_level]`` (Eqn. 1 of the FPN paper): boxes too small or too large for the available
    levels go to the nearest one. Boxes with negative area (inverted) go to ``min_level``.

    Args:
        box_lists (list[Boxes] | list[RotatedBoxes]): boxes of each image.
        min_level (int): level of the finest feature map (e.g. 2 for p2).
        max_level (int): level of the coarsest feature map.
        canonical_box_size (float): box size (sqrt of area) mapped to ``canonical_level``.
        canonical_level (int): level of a canonically sized box.

    Returns:
        Tensor[M] int64: level index in ``[0, max_level - min_level]`` of each of the M boxes, image by image.
    """
    if len(box_lists) == 0:
        return torch.empty(0, dtype=torch.int64)
    areas = torch.cat([b.area() for b in box_lists])
    box_sizes = torch.sqrt(areas)
    levels = torch.floor(canonical_level + torch.log2(box_sizes / canonical_box_size + 1e-8))
    levels = torch.nan_to_num(levels, nan=float(min_level))
    levels = torch.clamp(levels, min=min_level, max=max_level)
    return levels.to(torch.int64) - min_level


def convert_boxes_to_pooler_format(box_lists: Sequence[Boxes] | Sequence[RotatedBoxes]) -> Tensor:
    """Concatenate the boxes of all images with their image index in front.

    Args:
        box_lists (list[Boxes] | list[RotatedBoxes]): N lists of boxes.

    Returns:
        Tensor[M, 5] (or [M, 6] for rotated boxes): ``(batch_index, x0, y0, x1, y1)`` rows
        (``(batch_index, x_ctr, y_ctr, w, h, angle)``), image by image.
    """
    if len(box_lists) == 0:
        raise ValueError("box_lists must contain one Boxes per image, got an empty list")
    boxes = torch.cat([b.tensor for b in box_lists], dim=0)
    # one column per image built from the shapes (no host list of sizes, so symbolic counts export)
    indices = torch.cat(
        [
            torch.full((b.tensor.shape[0], 1), i, dtype=boxes.dtype, device=boxes.device)
            for i, b in enumerate(box_lists)
        ]
    )
    return torch.cat([indices, boxes], dim=1)


def _level_pooler(
    pooler_type: str, output_size: tuple[int, int], scale: float, sampling_ratio: int
) -> nn.Module:
    from detcore import ops  # ROI ops live in detcore.ops

    if pooler_type in ("ROIAlign", "ROIAlignV2"):
        return ops.ROIAlign(
            output_size,
            spatial_scale=scale,
            sampling_ratio=sampling_ratio,
            aligned=pooler_type == "ROIAlignV2",
        )
    if pooler_type == "ROIPool":
        return ops.ROIPool(output_size, spatial_scale=scale)
    return ops.ROIAlignRotated(output_size, spatial_scale=scale, sampling_ratio=sampling_ratio)


class ROIPooler(nn.Module):
    """Pools ``output_size`` features for each box from one of several feature maps (detectron2's ``ROIPooler``).

    With one feature map every box is pooled from it; with a pyramid each box is pooled from the level given
    by :func:`assign_boxes_to_levels`.

    Args:
        output_size (int | tuple[int, int]): pooled height and width.
        scales (list[float]): ``1 / stride`` of each feature map, a decreasing geometric sequence with ratio
            1/2 (strides must be powers of 2).
        sampling_ratio (int): sampling points per bin for the ROIAlign ops (0: adaptive).
        pooler_type (str): "ROIAlign" (aligned=False), "ROIAlignV2" (aligned=True, half-pixel offset),
            "ROIPool" or "ROIAlignRotated".
        canonical_box_size (float): box size (sqrt of area) that maps to ``canonical_level``.
        canonical_level (int): feature level (log2 of the stride) of canonically sized boxes.
    """

    def __init__(
        self,
        output_size: int | Sequence[int],
        scales: Sequence[float],
        sampling_ratio: int,
        pooler_type: str,
        canonical_box_size: float = 224,
        canonical_level: int = 4,
    ) -> None:
        super().__init__()
        if isinstance(output_size, int) and not isinstance(output_size, bool):
            output_size = (output_size, output_size)
        if (
            not isinstance(output_size, Sequence)
            or len(output_size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in output_size)
        ):
            raise ValueError(
                f"output_size must be a positive int or a pair of positive ints, got {output_size!r}"
            )
        self.output_size = (int(output_size[0]), int(output_size[1]))
        if pooler_type not in POOLER_TYPES:
            raise ValueError(f"pooler_type must be one of {', '.join(POOLER_TYPES)}, got {pooler_type!r}")
        self.pooler_type = pooler_type
        if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or len(scales) == 0:
            raise ValueError(f"scales must be a non-empty list of 1 / stride values, got {scales!r}")
        if any(not isinstance(s, (int, float)) or s <= 0 for s in scales):
            raise ValueError(f"scales must be positive numbers, got {list(scales)}")
        self.scales = [float(s) for s in scales]

        min_level = -math.log2(self.scales[0])
        max_level = -math.log2(self.scales[-1])
        if not (math.isclose(min_level, round(min_level)) and math.isclose(max_level, round(max_level))):
            raise ValueError(f"scales must be 1 / stride with power-of-2 strides, got {list(scales)}")
        self.min_level = round(min_level)
        self.max_level = round(max_level)
        if len(self.scales) != self.max_level - self.min_level + 1 or any(
            not math.isclose(s, 2.0 ** -(self.min_level + i)) for i, s in enumerate(self.scales)
        ):
            raise ValueError(f"scales must form a pyramid (each half the previous), got {list(scales)}")
        if self.min_level < 0:
            raise ValueError(f"scales must be <= 1 (strides >= 1), got {list(scales)}")
        if not canonical_box_size > 0:
            raise ValueError(f"canonical_box_size must be > 0, got {canonical_box_size!r}")
        self.canonical_level = int(canonical_level)
        self.canonical_box_size = canonical_box_size
        self.sampling_ratio = int(sampling_ratio)
        self.level_poolers = nn.ModuleList(
            _level_pooler(pooler_type, self.output_size, s, self.sampling_ratio) for s in self.scales
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, scales={self.scales}, sampling_ratio={self.sampling_ratio}, "
            f"pooler_type={self.pooler_type!r}, canonical_box_size={self.canonical_box_size}, "
            f"canonical_level={self.canonical_level}"
        )

    def _check_inputs(self, x: Any, box_lists: Any) -> None:
        if not isinstance(x, list) or not isinstance(box_lists, list):
            raise TypeError(
                f"x and box_lists must be lists, got {type(x).__name__} and {type(box_lists).__name__}"
            )
        if len(x) != len(self.level_poolers):
            raise ValueError(
                f"x must have one feature map per pooler level ({len(self.level_poolers)}), got {len(x)}"
            )
        for i, f in enumerate(x):
            if not isinstance(f, Tensor) or f.dim() != 4:
                got = list(f.shape) if isinstance(f, Tensor) else type(f).__name__
                raise ValueError(f"x[{i}] must be a Tensor[N, C, H, W], got {got}")
        if len(box_lists) != x[0].size(0):
            raise ValueError(
                f"box_lists must have one entry per image: x[0] has batch size {x[0].size(0)}, "
                f"box_lists has length {len(box_lists)}"
            )
        box_type = RotatedBoxes if self.pooler_type == "ROIAlignRotated" else Boxes
        for i, b in enumerate(box_lists):
            if not isinstance(b, box_type):
                raise TypeError(
                    f"box_lists[{i}] must be {box_type.__name__} for pooler_type {self.pooler_type!r}, "
                    f"got {type(b).__name__}"
                )

    def forward(self, x: list[Tensor], box_lists: list[Boxes] | list[RotatedBoxes]) -> Tensor:
        """Pool a feature for every box.

        Args:
            x (list[Tensor[N, C, Hl, Wl]]): feature maps, one per scale.
            box_lists (list[Boxes] | list[RotatedBoxes]): N box lists in input-image coordinates.

        Returns:
            Tensor[M, C, out_h, out_w]: M = total number of boxes, image by image, in box order.
        """
        self._check_inputs(x, box_lists)
        out_h, out_w = self.output_size
        if len(box_lists) == 0:
            return x[0].new_zeros((0, x[0].shape[1], out_h, out_w))
        pooler_fmt_boxes = convert_boxes_to_pooler_format(box_lists)
        if len(self.level_poolers) == 1:
            return self.level_poolers[0](x[0], pooler_fmt_boxes)

        level_assignments = assign_boxes_to_levels(
            box_lists, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
        )
        num_channels = x[0].shape[1]
        output = x[0].new_zeros((pooler_fmt_boxes.shape[0], num_channels, out_h, out_w))
        for level, pooler in enumerate(self.level_poolers):
            inds = nonzero_tuple(level_assignments == level)[0]
            # skipping an empty level is only an optimisation: with a symbolic count (export) pool anyway
            if not x[level].requires_grad and guard_or_false(inds.numel() == 0):
                continue
            output.index_put_((inds,), pooler(x[level], pooler_fmt_boxes[inds]))
        return output
