"""A minimal ROI-heads component: classifies each box from the feature at its centre."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detcore.ops import ShapeSpec

__all__ = ["CenterROIHeads"]


class CenterROIHeads(nn.Module):
    """Scores each box by bilinearly sampling one feature map at the box centre and applying a linear layer.

    Args:
        input_shape: the feature map's ShapeSpec (channels and stride).
        num_classes: number of foreground classes; one background logit is added.
    """

    def __init__(self, input_shape: ShapeSpec, num_classes: int) -> None:
        super().__init__()
        self.stride = input_shape.stride
        self.cls_score = nn.Linear(input_shape.channels, num_classes + 1)

    def forward(self, feature: torch.Tensor, boxes: list[torch.Tensor]) -> list[torch.Tensor]:
        """feature: [N, C, H, W]; boxes: N tensors [Ki, 4] XYXY in image pixels -> N tensors [Ki, num_classes + 1]."""
        _, _, h, w = feature.shape
        out = []
        for i, b in enumerate(boxes):
            centre = (b[:, :2] + b[:, 2:]) / 2 / self.stride  # feature-map pixels
            grid = torch.stack([centre[:, 0] / w * 2 - 1, centre[:, 1] / h * 2 - 1], dim=-1)
            sampled = F.grid_sample(feature[i : i + 1], grid.view(1, -1, 1, 2), align_corners=False)
            out.append(self.cls_score(sampled[0, :, :, 0].t()))
        return out
