"""Keypoint annotations and heatmap encoding/decoding, with the semantics of
``detectron2.structures.keypoints`` (Mask R-CNN keypoint head)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["Keypoints", "heatmaps_to_keypoints", "keypoints_to_heatmap"]


class Keypoints:
    """Keypoint annotations, ``tensor (Tensor[N, K, 3])`` of ``(x, y, visibility)`` per keypoint.

    Visibility follows COCO: 0 not labeled (x = y = 0), 1 labeled but not visible, 2 labeled and visible.
    The tensor is float32.
    """

    def __init__(self, keypoints: torch.Tensor | np.ndarray | Sequence[Any]):
        device = keypoints.device if isinstance(keypoints, torch.Tensor) else torch.device("cpu")
        if (
            isinstance(keypoints, (list, tuple))
            and len(keypoints) > 0
            and isinstance(keypoints[0], torch.Tensor)
        ):
            keypoints = torch.stack(list(keypoints))
        keypoints = torch.as_tensor(keypoints, dtype=torch.float32, device=device)
        if keypoints.numel() == 0 and keypoints.dim() < 3:
            keypoints = keypoints.reshape(0, 0, 3)
        if keypoints.dim() != 3 or keypoints.shape[2] != 3:
            raise ValueError(f"Keypoints: keypoints must have shape [N, K, 3], got {list(keypoints.shape)}")
        self.tensor = keypoints

    def __len__(self) -> int:
        return self.tensor.size(0)

    def to(self, *args: Any, **kwargs: Any) -> Keypoints:
        return type(self)(self.tensor.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to_heatmap(self, boxes: torch.Tensor, heatmap_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One-hot heatmap targets of the keypoints inside ``boxes`` (see :func:`keypoints_to_heatmap`).

        Args:
            boxes (Tensor[N, 4]): XYXY box of each instance.
            heatmap_size: side of the square heatmap.

        Returns:
            heatmaps (Tensor[N, K] int64): flat index ``y * heatmap_size + x`` (0 where not valid).
            valid (Tensor[N, K] int64): 1 where the keypoint is visible and inside its box.
        """
        if hasattr(boxes, "tensor") and not isinstance(boxes, torch.Tensor):
            boxes = boxes.tensor
        return keypoints_to_heatmap(self.tensor, boxes, heatmap_size)

    def __getitem__(self, item: int | slice | torch.Tensor) -> Keypoints:
        """``kpts[3]`` (one instance), ``kpts[2:10]``, ``kpts[bool_mask]``, ``kpts[index_tensor]``."""
        if isinstance(item, (int, np.integer)):
            return type(self)(self.tensor[int(item)].unsqueeze(0))
        t = self.tensor[item]
        if t.dim() != 3:
            raise IndexError(
                f"Keypoints: indexing with {item!r} did not give [M, K, 3] (got {list(t.shape)})"
            )
        return type(self)(t)

    def __repr__(self) -> str:
        return f"Keypoints(num_instances={len(self.tensor)})"

    @staticmethod
    def cat(keypoints_list: Sequence[Keypoints]) -> Keypoints:
        """Concatenate Keypoints with the same number of keypoints."""
        if not isinstance(keypoints_list, (list, tuple)) or len(keypoints_list) == 0:
            raise ValueError("Keypoints.cat: keypoints_list must be a non-empty list of Keypoints")
        if not all(isinstance(k, Keypoints) for k in keypoints_list):
            raise TypeError(
                f"Keypoints.cat: every element must be Keypoints, got {[type(k).__name__ for k in keypoints_list]}"
            )
        return type(keypoints_list[0])(torch.cat([k.tensor for k in keypoints_list], dim=0))


def keypoints_to_heatmap(
    keypoints: torch.Tensor, rois: torch.Tensor, heatmap_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode keypoints as flat heatmap labels for a spatial softmax loss (detectron2 conventions).

    A keypoint in ``[x0, x1)`` of its box maps to the discrete bin ``floor((x - x0) * heatmap_size / (x1 - x0))``
    (Heckbert: ``d = floor(c)``); a keypoint exactly on the right/bottom edge goes to the last bin.

    Args:
        keypoints (Tensor[N, K, 3]): ``(x, y, visibility)``.
        rois (Tensor[N, 4]): XYXY boxes.
        heatmap_size: side of the square heatmap.

    Returns:
        heatmaps (Tensor[N, K] int64): ``y * heatmap_size + x`` where valid, 0 elsewhere.
        valid (Tensor[N, K] int64): 1 where the keypoint is visible (v > 0) and falls inside the heatmap.
    """
    if not isinstance(rois, torch.Tensor) or rois.dim() != 2 or rois.shape[-1] != 4:
        raise ValueError(f"rois must be a Tensor[N, 4], got {getattr(rois, 'shape', type(rois))}")
    if not isinstance(keypoints, torch.Tensor) or keypoints.dim() != 3 or keypoints.shape[-1] != 3:
        raise ValueError(
            f"keypoints must be a Tensor[N, K, 3], got {getattr(keypoints, 'shape', type(keypoints))}"
        )
    if keypoints.shape[0] != rois.shape[0]:
        raise ValueError(
            f"keypoints ({keypoints.shape[0]}) and rois ({rois.shape[0]}) must have the same length"
        )
    if rois.numel() == 0:
        return rois.new_empty((0,), dtype=torch.long), rois.new_empty((0,), dtype=torch.long)
    offset_x = rois[:, 0:1]
    offset_y = rois[:, 1:2]
    scale_x = heatmap_size / (rois[:, 2:3] - rois[:, 0:1])
    scale_y = heatmap_size / (rois[:, 3:4] - rois[:, 1:2])

    x = keypoints[..., 0]
    y = keypoints[..., 1]
    x_boundary = x == rois[:, 2:3]
    y_boundary = y == rois[:, 3:4]

    x = ((x - offset_x) * scale_x).floor().long()
    y = ((y - offset_y) * scale_y).floor().long()
    x[x_boundary] = heatmap_size - 1
    y[y_boundary] = heatmap_size - 1

    valid_loc = (x >= 0) & (y >= 0) & (x < heatmap_size) & (y < heatmap_size)
    vis = keypoints[..., 2] > 0
    valid = (valid_loc & vis).long()
    heatmaps = (y * heatmap_size + x) * valid
    return heatmaps, valid


def heatmaps_to_keypoints(maps: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    """Decode predicted keypoint heatmaps (detectron2 conventions).

    For each ROI the logits are resized bicubically (``align_corners=False``) to
    ``(ceil(h), ceil(w))`` of the box (sides clamped to >= 1); the argmax pixel ``(xi, yi)`` gives
    ``x = x0 + (xi + 0.5) * w / ceil(w)`` (same for y). The score is the softmax probability of that pixel
    in the resized map, normalised by the sum over the pooled (unresized) map.

    Args:
        maps (Tensor[R, K, H, W]): heatmap logits.
        rois (Tensor[R, 4]): XYXY boxes.

    Returns:
        Tensor[R, K, 4]: ``(x, y, logit, score)`` per keypoint (no gradient).
    """
    if not isinstance(maps, torch.Tensor) or maps.dim() != 4:
        raise ValueError(f"maps must be a Tensor[R, K, H, W], got {getattr(maps, 'shape', type(maps))}")
    if not isinstance(rois, torch.Tensor) or rois.dim() != 2 or rois.shape[-1] != 4:
        raise ValueError(f"rois must be a Tensor[R, 4], got {getattr(rois, 'shape', type(rois))}")
    if maps.shape[0] != rois.shape[0]:
        raise ValueError(f"maps ({maps.shape[0]}) and rois ({rois.shape[0]}) must have the same length")
    maps = maps.detach()
    rois = rois.detach()
    offset_x = rois[:, 0]
    offset_y = rois[:, 1]
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    widths_ceil = widths.ceil()
    heights_ceil = heights.ceil()
    width_corrections = widths / widths_ceil
    height_corrections = heights / heights_ceil

    num_rois, num_keypoints = maps.shape[:2]
    xy_preds = maps.new_zeros(num_rois, num_keypoints, 4)
    keypoints_idx = torch.arange(num_keypoints, device=maps.device)
    sizes = torch.stack([heights_ceil, widths_ceil], dim=1).to("cpu", torch.int64).tolist()

    for i in range(num_rois):
        outsize = (int(sizes[i][0]), int(sizes[i][1]))
        roi_map = F.interpolate(maps[i : i + 1], size=outsize, mode="bicubic", align_corners=False).squeeze(0)
        flat = roi_map.reshape(num_keypoints, -1)
        max_score = flat.max(dim=1).values
        pos = flat.argmax(dim=1)
        max_score = max_score.view(num_keypoints, 1, 1)
        # spatial softmax over the resized map, normalised by the pooled map's partition function so that
        # scores of objects of different sizes are comparable
        denom = (maps[i] - max_score).exp().sum(dim=(1, 2))
        w = roi_map.shape[2]
        x_int = pos % w
        y_int = pos // w
        logit = roi_map[keypoints_idx, y_int, x_int]
        score = (logit - max_score.view(-1)).exp() / denom
        xy_preds[i, :, 0] = (x_int.to(maps.dtype) + 0.5) * width_corrections[i] + offset_x[i]
        xy_preds[i, :, 1] = (y_int.to(maps.dtype) + 0.5) * height_corrections[i] + offset_y[i]
        xy_preds[i, :, 2] = logit
        xy_preds[i, :, 3] = score
    return xy_preds
