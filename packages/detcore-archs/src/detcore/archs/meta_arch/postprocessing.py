"""Post-processing of detector outputs into the requested output resolution (detectron2's
``detector_postprocess`` and ``sem_seg_postprocess``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import SymInt, Tensor
from torch.nn import functional as F

from detcore.structures import Instances, ROIMasks

__all__ = ["detector_postprocess", "sem_seg_postprocess"]


def _check_size(name: str, value: Any) -> None:
    if isinstance(value, SymInt):  # a symbolic size under torch.export: asserted at run time
        torch._check(value > 0, lambda: f"{name} must be a positive int")
        return
    v = value.item() if isinstance(value, Tensor) and value.numel() == 1 else value
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _as_size(value: Any) -> Any:
    # symbolic sizes (torch.export) stay symbolic: int() would specialise them to the traced value
    if isinstance(value, SymInt):
        return value
    return int(value.item() if isinstance(value, Tensor) else value)


def detector_postprocess(
    results: Instances, output_height: int, output_width: int, mask_threshold: float = 0.5
) -> Instances:
    """Rescale a detector's raw output (in the frame of the resized input) to ``output_height x output_width``.

    Boxes (``pred_boxes`` or ``proposal_boxes``) are scaled per axis, clipped to the output size, and empty ones
    removed with their instances; ``pred_masks`` (``Tensor[N, 1, M, M]`` probabilities or :class:`ROIMasks`) are
    pasted into the image and thresholded (``prob >= mask_threshold``) into ``Tensor[N, H, W]`` bool masks;
    ``pred_keypoints`` (``Tensor[N, K, 3]``) x/y are scaled.

    Args:
        results (Instances): raw outputs; ``results.image_size`` is the input frame (h, w).
        output_height / output_width (int): the output resolution (usually the original image size).
        mask_threshold (float): threshold of the pasted mask probabilities.

    Returns:
        Instances: a new Instances of image size (output_height, output_width).
    """
    if not isinstance(results, Instances):
        raise TypeError(f"results must be Instances, got {type(results).__name__}")
    _check_size("output_height", output_height)
    _check_size("output_width", output_width)
    output_height = _as_size(output_height)
    output_width = _as_size(output_width)
    new_size = (output_height, output_width)
    scale_x = output_width / results.image_size[1]
    scale_y = output_height / results.image_size[0]
    results = Instances(new_size, **results.get_fields())

    if results.has("pred_boxes"):
        output_boxes = results.pred_boxes
    elif results.has("proposal_boxes"):
        output_boxes = results.proposal_boxes
    else:
        output_boxes = None
    if output_boxes is None:
        raise ValueError("results must have 'pred_boxes' or 'proposal_boxes'")
    output_boxes.scale(scale_x, scale_y)
    output_boxes.clip(results.image_size)
    results = results[output_boxes.nonempty()]

    if results.has("pred_masks"):
        if isinstance(results.pred_masks, ROIMasks):
            roi_masks = results.pred_masks
        else:
            masks = results.pred_masks
            if masks.dim() != 4 or masks.shape[1] != 1:
                raise ValueError(
                    f"pred_masks must be a Tensor[N, 1, M, M] or ROIMasks, got {list(masks.shape)}"
                )
            roi_masks = ROIMasks(masks[:, 0, :, :])
        h, w = (_as_size(v) for v in results.image_size)
        results.pred_masks = roi_masks.to_bitmasks(results.pred_boxes, h, w, mask_threshold).tensor

    if results.has("pred_keypoints"):
        results.pred_keypoints[:, :, 0] *= scale_x
        results.pred_keypoints[:, :, 1] *= scale_y
    return results


def sem_seg_postprocess(
    result: Tensor, img_size: tuple[int, int], output_height: int, output_width: int
) -> Tensor:
    """Crop a padded semantic segmentation prediction to the image and resize it (bilinear) to the output size.

    Args:
        result (Tensor[C, Hp, Wp]): per-class logits or probabilities of the padded input.
        img_size (tuple[int, int]): (h, w) of the image inside the padding.
        output_height / output_width (int): the output resolution.

    Returns:
        Tensor[C, output_height, output_width].
    """
    if not isinstance(result, Tensor) or result.dim() != 3:
        raise ValueError(
            f"result must be a Tensor[C, H, W], got {getattr(result, 'shape', type(result).__name__)}"
        )
    _check_size("output_height", output_height)
    _check_size("output_width", output_width)
    result = result[:, : img_size[0], : img_size[1]].expand(1, -1, -1, -1)
    return F.interpolate(result, size=(output_height, output_width), mode="bilinear", align_corners=False)[0]
