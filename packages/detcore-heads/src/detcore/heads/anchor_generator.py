"""Anchor generators: reference boxes at every position of every feature map (detectron2's semantics).

``DefaultAnchorGenerator`` produces axis-aligned XYXY anchors, ``RotatedAnchorGenerator`` rotated
``(x_ctr, y_ctr, w, h, angle_degrees)`` anchors. Both place a set of *cell anchors* (centred at the origin)
at the grid positions ``(offset + j) * stride, (offset + i) * stride`` of each feature map, in the order
(row i, column j, cell anchor a), which is the order of ``logits.permute(0, 2, 3, 1).flatten(1)`` for a head
with one output channel per cell anchor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from detcore.heads._config import as_nested_tuple, broadcast_params
from detcore.ops import ShapeSpec
from detcore.structures import Boxes, RotatedBoxes

__all__ = [
    "BufferList",
    "DefaultAnchorGenerator",
    "DefaultAnchorGeneratorConfig",
    "RotatedAnchorGenerator",
    "RotatedAnchorGeneratorConfig",
]


class BufferList(nn.Module):
    """A list of tensors registered as non-persistent buffers named "0", "1", ...

    They move with ``.to()`` / ``.cuda()`` but are not saved in state dicts (detectron2 checkpoints contain no
    anchors).
    """

    def __init__(self, buffers: Sequence[Tensor]) -> None:
        super().__init__()
        for i, buffer in enumerate(buffers):
            self.register_buffer(str(i), buffer, persistent=False)

    def __len__(self) -> int:
        return len(self._buffers)

    def __iter__(self):
        return iter(self._buffers.values())

    def __getitem__(self, i: int) -> Tensor:
        return self._buffers[str(i)]


def _grid_offsets(size: Sequence[int], stride: float, offset: float, like: Tensor) -> tuple[Tensor, Tensor]:
    """x and y shifts [H*W] of every grid position, row-major (y outer, x inner)."""
    # sizes stay symbolic under torch.export (no int(), no float arange end); i * stride + offset * stride is
    # exact (multiples of half the stride), the same values as detectron2's float arange
    grid_height, grid_width = size[0], size[1]
    shifts_x = torch.arange(grid_width, dtype=torch.float32, device=like.device) * stride + offset * stride
    shifts_y = torch.arange(grid_height, dtype=torch.float32, device=like.device) * stride + offset * stride
    # detectron2 builds these with a float32 arange; the values are exact multiples of the stride.
    shifts_x = shifts_x.to(like.dtype)
    shifts_y = shifts_y.to(like.dtype)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    return shift_x.reshape(-1), shift_y.reshape(-1)


def _xyxy_grid(size: Sequence[int], stride: float, offset: float, base: Tensor) -> Tensor:
    """``shift + cell anchor`` for every (row, column, cell anchor): Tensor[H*W*A, 4].

    Bitwise equal to detectron2's ``(shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4)``, computed
    as one grid row ``x_shift + base`` (y shift 0) plus the row's y shift on the y coordinates, so that the
    large operation has a long contiguous inner dimension.
    """
    h, w = size[0], size[1]  # no int(): keeps symbolic sizes symbolic under torch.export
    num_cells = base.shape[0]
    shift_x, _ = _grid_offsets((1, w), stride, offset, base)
    _, shift_y = _grid_offsets((h, 1), stride, offset, base)
    zeros = torch.zeros_like(shift_x)
    row = (torch.stack((shift_x, zeros, shift_x, zeros), dim=1)[:, None, :] + base[None]).reshape(1, -1)
    y_mask = base.new_tensor([0.0, 1.0, 0.0, 1.0]).repeat(w * num_cells)[None, :]
    return torch.addcmul(row, shift_y[:, None], y_mask).reshape(-1, 4)


def _check_features(features: Any) -> list[Tensor]:
    if not isinstance(features, (list, tuple)):
        raise TypeError(f"features must be a list of Tensor[N, C, H, W], got {type(features).__name__}")
    for i, f in enumerate(features):
        if not isinstance(f, Tensor) or f.dim() < 2:
            got = list(f.shape) if isinstance(f, Tensor) else type(f).__name__
            raise ValueError(f"features[{i}] must be a Tensor[N, C, H, W], got {got}")
    return list(features)


def _check_strides(strides: Any) -> list[float]:
    if isinstance(strides, (str, bytes)) or not isinstance(strides, Sequence) or len(strides) == 0:
        raise TypeError(f"strides must be a non-empty list of numbers, got {strides!r}")
    for s in strides:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or s <= 0:
            raise ValueError(f"strides must be positive numbers, got {list(strides)}")
    return list(strides)


def _strides_from_shapes(input_shape: Sequence[ShapeSpec]) -> list[int]:
    strides = [s.stride for s in input_shape]
    if any(s is None for s in strides):
        raise ValueError(f"input_shape must give the stride of every feature map, got {list(input_shape)}")
    return strides  # type: ignore[return-value]


@dataclass(frozen=True)
class DefaultAnchorGeneratorConfig:
    """Config of :class:`DefaultAnchorGenerator` (detectron2's ``MODEL.ANCHOR_GENERATOR`` defaults).

    Attributes:
        sizes: anchor sizes (sqrt of the area, in pixels): one list for all levels or one list per level.
        aspect_ratios: height / width ratios: one list for all levels or one list per level.
        offset: relative offset of the first anchor centre from the top-left image corner, in ``[0, 1)``
            of the stride.
    """

    sizes: tuple = ((32.0, 64.0, 128.0, 256.0, 512.0),)
    aspect_ratios: tuple = ((0.5, 1.0, 2.0),)
    offset: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", as_nested_tuple(self.sizes, "sizes"))
        object.__setattr__(self, "aspect_ratios", as_nested_tuple(self.aspect_ratios, "aspect_ratios"))

    @classmethod
    def base_rcnn_fpn(cls) -> DefaultAnchorGeneratorConfig:
        """Base-RCNN-FPN's values: one size per level 32..512 on p2..p6, ratios 0.5/1/2, offset 0."""
        return cls(sizes=((32.0,), (64.0,), (128.0,), (256.0,), (512.0,)))


class DefaultAnchorGenerator(nn.Module):
    """Axis-aligned anchors for each feature map (detectron2's ``DefaultAnchorGenerator``).

    For each level, the cell anchors are every (size, aspect ratio) pair, size-major:
    ``w = sqrt(size**2 / ratio)``, ``h = ratio * w``, the box ``[-w/2, -h/2, w/2, h/2]``. They are stored as
    float32 non-persistent buffers ``cell_anchors.{i}``.

    Args:
        sizes (list[list[float]] | list[float]): anchor sizes per level (a single list is used for all).
        aspect_ratios (list[list[float]] | list[float]): aspect ratios (height / width) per level.
        strides (list[int]): stride of each feature map, in input pixels.
        offset (float): anchor centre offset in ``[0, 1)`` of the stride (0.0: top-left corner of a cell).

    Example:
        >>> gen = DefaultAnchorGenerator(sizes=[[32]], aspect_ratios=[0.5, 1.0, 2.0], strides=[4], offset=0.0)
        >>> [len(b) for b in gen([torch.zeros(1, 8, 2, 3)])]
        [18]
    """

    box_dim: ClassVar[int] = 4
    config_class: ClassVar[type] = DefaultAnchorGeneratorConfig

    def __init__(
        self,
        *,
        sizes: Sequence[Sequence[float]] | Sequence[float],
        aspect_ratios: Sequence[Sequence[float]] | Sequence[float],
        strides: Sequence[int],
        offset: float = 0.0,
    ) -> None:
        super().__init__()
        self.strides = _check_strides(strides)
        self.num_features = len(self.strides)
        sizes_l = broadcast_params(sizes, self.num_features, "sizes")
        ratios_l = broadcast_params(aspect_ratios, self.num_features, "aspect_ratios")
        if not (isinstance(offset, (int, float)) and 0.0 <= offset < 1.0):
            raise ValueError(f"offset must be a float in [0, 1), got {offset!r}")
        self.offset = float(offset)
        self.cell_anchors = BufferList(
            [self.generate_cell_anchors(s, a).float() for s, a in zip(sizes_l, ratios_l)]
        )

    @classmethod
    def from_config(
        cls, cfg: DefaultAnchorGeneratorConfig | None, input_shape: Sequence[ShapeSpec]
    ) -> dict[str, Any]:
        """Constructor kwargs from a config and the ShapeSpecs (strides) of the feature maps used."""
        cfg = cfg if cfg is not None else DefaultAnchorGeneratorConfig()
        return {
            "sizes": cfg.sizes,
            "aspect_ratios": cfg.aspect_ratios,
            "strides": _strides_from_shapes(input_shape),
            "offset": cfg.offset,
        }

    @classmethod
    def build(
        cls, cfg: DefaultAnchorGeneratorConfig | None, input_shape: Sequence[ShapeSpec]
    ) -> DefaultAnchorGenerator:
        """``cls(**cls.from_config(cfg, input_shape))``."""
        return cls(**cls.from_config(cfg, input_shape))

    @property
    def num_cell_anchors(self) -> list[int]:
        """Alias of :attr:`num_anchors`."""
        return self.num_anchors

    @property
    def num_anchors(self) -> list[int]:
        """Number of anchors per spatial position, for each level."""
        return [len(c) for c in self.cell_anchors]

    @staticmethod
    def generate_cell_anchors(
        sizes: Sequence[float] = (32, 64, 128, 256, 512), aspect_ratios: Sequence[float] = (0.5, 1, 2)
    ) -> Tensor:
        """Cell anchors ``[len(sizes) * len(aspect_ratios), 4]`` (XYXY, centred at 0), size-major."""
        anchors = []
        for size in sizes:
            area = float(size) ** 2.0
            for aspect_ratio in aspect_ratios:
                w = math.sqrt(area / aspect_ratio)
                h = aspect_ratio * w
                anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return torch.tensor(anchors, dtype=torch.float32).reshape(-1, 4)

    def _grid_anchors(self, grid_sizes: Sequence[Sequence[int]]) -> list[Tensor]:
        anchors = []
        for size, stride, base in zip(grid_sizes, self.strides, self.cell_anchors):
            anchors.append(_xyxy_grid(size, stride, self.offset, base))
        return anchors

    def forward(self, features: list[Tensor]) -> list[Boxes]:
        """Anchors of each feature map.

        Args:
            features (list[Tensor[N, C, Hi, Wi]]): one feature map per level (only the sizes are used).

        Returns:
            list[Boxes]: per level, ``Hi * Wi * A`` anchors in (row, column, cell anchor) order.
        """
        features = _check_features(features)
        if len(features) != self.num_features:
            raise ValueError(
                f"features must have one map per level of this anchor generator ({self.num_features}), "
                f"got {len(features)}"
            )
        return [Boxes._wrap(a) for a in self._grid_anchors([f.shape[-2:] for f in features])]

    def extra_repr(self) -> str:
        return f"strides={self.strides}, offset={self.offset}, num_anchors={self.num_anchors}"


@dataclass(frozen=True)
class RotatedAnchorGeneratorConfig:
    """Config of :class:`RotatedAnchorGenerator` (detectron2's ``MODEL.ANCHOR_GENERATOR`` defaults).

    Attributes:
        sizes: anchor sizes per level (or one list for all).
        aspect_ratios: height / width ratios per level (or one list for all).
        angles: anchor angles in degrees per level (or one list for all).
        offset: anchor centre offset in ``[0, 1)`` of the stride.
    """

    sizes: tuple = ((32.0, 64.0, 128.0, 256.0, 512.0),)
    aspect_ratios: tuple = ((0.5, 1.0, 2.0),)
    angles: tuple = ((-90.0, 0.0, 90.0),)
    offset: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", as_nested_tuple(self.sizes, "sizes"))
        object.__setattr__(self, "aspect_ratios", as_nested_tuple(self.aspect_ratios, "aspect_ratios"))
        object.__setattr__(self, "angles", as_nested_tuple(self.angles, "angles"))


class RotatedAnchorGenerator(nn.Module):
    """Rotated anchors ``(x_ctr, y_ctr, w, h, angle_degrees)`` (detectron2's ``RotatedAnchorGenerator``).

    Cell anchors are every (size, aspect ratio, angle) triple, in that nesting order, centred at 0.

    Args:
        sizes (list[list[float]] | list[float]): anchor sizes per level.
        aspect_ratios (list[list[float]] | list[float]): aspect ratios (height / width) per level.
        strides (list[int]): stride of each feature map.
        angles (list[list[float]] | list[float]): angles in degrees per level.
        offset (float): anchor centre offset in ``[0, 1)`` of the stride.
    """

    box_dim: ClassVar[int] = 5
    config_class: ClassVar[type] = RotatedAnchorGeneratorConfig

    def __init__(
        self,
        *,
        sizes: Sequence[Sequence[float]] | Sequence[float],
        aspect_ratios: Sequence[Sequence[float]] | Sequence[float],
        strides: Sequence[int],
        angles: Sequence[Sequence[float]] | Sequence[float],
        offset: float = 0.0,
    ) -> None:
        super().__init__()
        self.strides = _check_strides(strides)
        self.num_features = len(self.strides)
        sizes_l = broadcast_params(sizes, self.num_features, "sizes")
        ratios_l = broadcast_params(aspect_ratios, self.num_features, "aspect_ratios")
        angles_l = broadcast_params(angles, self.num_features, "angles")
        if not (isinstance(offset, (int, float)) and 0.0 <= offset < 1.0):
            raise ValueError(f"offset must be a float in [0, 1), got {offset!r}")
        self.offset = float(offset)
        self.cell_anchors = BufferList(
            [self.generate_cell_anchors(s, a, g).float() for s, a, g in zip(sizes_l, ratios_l, angles_l)]
        )

    @classmethod
    def from_config(
        cls, cfg: RotatedAnchorGeneratorConfig | None, input_shape: Sequence[ShapeSpec]
    ) -> dict[str, Any]:
        """Constructor kwargs from a config and the ShapeSpecs (strides) of the feature maps used."""
        cfg = cfg if cfg is not None else RotatedAnchorGeneratorConfig()
        return {
            "sizes": cfg.sizes,
            "aspect_ratios": cfg.aspect_ratios,
            "strides": _strides_from_shapes(input_shape),
            "angles": cfg.angles,
            "offset": cfg.offset,
        }

    @classmethod
    def build(
        cls, cfg: RotatedAnchorGeneratorConfig | None, input_shape: Sequence[ShapeSpec]
    ) -> RotatedAnchorGenerator:
        """``cls(**cls.from_config(cfg, input_shape))``."""
        return cls(**cls.from_config(cfg, input_shape))

    @property
    def num_cell_anchors(self) -> list[int]:
        """Alias of :attr:`num_anchors`."""
        return self.num_anchors

    @property
    def num_anchors(self) -> list[int]:
        """Number of anchors per spatial position, for each level."""
        return [len(c) for c in self.cell_anchors]

    @staticmethod
    def generate_cell_anchors(
        sizes: Sequence[float] = (32, 64, 128, 256, 512),
        aspect_ratios: Sequence[float] = (0.5, 1, 2),
        angles: Sequence[float] = (-90, -60, -30, 0, 30, 60, 90),
    ) -> Tensor:
        """Cell anchors ``[len(sizes) * len(aspect_ratios) * len(angles), 5]`` centred at 0."""
        anchors = []
        for size in sizes:
            area = float(size) ** 2.0
            for aspect_ratio in aspect_ratios:
                w = math.sqrt(area / aspect_ratio)
                h = aspect_ratio * w
                anchors.extend([0.0, 0.0, w, h, float(a)] for a in angles)
        return torch.tensor(anchors, dtype=torch.float32).reshape(-1, 5)

    def _grid_anchors(self, grid_sizes: Sequence[Sequence[int]]) -> list[Tensor]:
        anchors = []
        for size, stride, base in zip(grid_sizes, self.strides, self.cell_anchors):
            shift_x, shift_y = _grid_offsets(size, stride, self.offset, base)
            zeros = torch.zeros_like(shift_x)
            shifts = torch.stack((shift_x, shift_y, zeros, zeros, zeros), dim=1)
            anchors.append((shifts.view(-1, 1, 5) + base.view(1, -1, 5)).reshape(-1, 5))
        return anchors

    def forward(self, features: list[Tensor]) -> list[RotatedBoxes]:
        """Rotated anchors of each feature map.

        Args:
            features (list[Tensor[N, C, Hi, Wi]]): one feature map per level (only the sizes are used).

        Returns:
            list[RotatedBoxes]: per level, ``Hi * Wi * A`` anchors in (row, column, cell anchor) order.
        """
        features = _check_features(features)
        if len(features) != self.num_features:
            raise ValueError(
                f"features must have one map per level of this anchor generator ({self.num_features}), "
                f"got {len(features)}"
            )
        return [RotatedBoxes._wrap(a) for a in self._grid_anchors([f.shape[-2:] for f in features])]

    def extra_repr(self) -> str:
        return f"strides={self.strides}, offset={self.offset}, num_anchors={self.num_anchors}"
