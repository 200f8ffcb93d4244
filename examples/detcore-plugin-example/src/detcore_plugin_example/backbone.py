"""A tiny two-stage convolutional backbone: features "c3" (stride 4) and "c4" (stride 8)."""

from __future__ import annotations

import torch
from torch import nn

from detcore.backbones import Backbone
from detcore.ops import ShapeSpec

__all__ = ["TinyConvNet"]


class TinyConvNet(Backbone):
    """Two stride-2 conv+ReLU pairs after a stride-2 stem.

    Args:
        in_channels: image channels.
        width: channels of "c3"; "c4" has twice as many.
    """

    def __init__(self, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.ReLU())
        self.c3 = nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
        self.c4 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self._shapes = {
            "c3": ShapeSpec(channels=width, stride=4),
            "c4": ShapeSpec(channels=2 * width, stride=8),
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c3 = self.c3(self.stem(x))
        return {"c3": c3, "c4": self.c4(c3)}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)
