"""``ShapeSpec``: the shape of a feature map, passed between modules for shape inference."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ShapeSpec"]


@dataclass(frozen=True, kw_only=True)
class ShapeSpec:
    """Shape specification of an NCHW feature map (detectron2's ``ShapeSpec``).

    Backbones report one per output feature (``output_shape() -> dict[str, ShapeSpec]``) and heads read
    channels and strides from them. Any field may be None when unknown. Construction is keyword-only,
    as in detectron2: ``ShapeSpec(channels=256, stride=4)``.

    Attributes:
        channels (int | None): number of channels C.
        height (int | None): feature height H.
        width (int | None): feature width W.
        stride (int | None): downsampling factor relative to the input image.
    """

    channels: int | None = None
    height: int | None = None
    width: int | None = None
    stride: int | None = None
