"""Mask heads of the ROI heads, their loss and inference (detectron2's ``mask_head.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detcore.heads._config import as_tuple
from detcore.ops import Conv2d, ConvTranspose2d, ShapeSpec, c2_msra_fill, cat, get_norm
from detcore.structures import Instances

__all__ = [
    "BaseMaskRCNNHead",
    "MaskRCNNConvUpsampleHead",
    "MaskRCNNConvUpsampleHeadConfig",
    "mask_rcnn_inference",
    "mask_rcnn_loss",
]


def mask_rcnn_loss(pred_mask_logits: Tensor, instances: list[Instances]) -> Tensor:
    """Mean per-pixel binary cross entropy between the predicted mask of each foreground proposal's gt class
    and its gt mask cropped to the proposal box and resized to the mask size (``crop_and_resize``).

    Args:
        pred_mask_logits (Tensor[R, C, M, M]): C = K classes or 1 (class agnostic).
        instances (list[Instances]): per image the foreground proposals (R in total) with
            ``proposal_boxes``, ``gt_masks`` (PolygonMasks or BitMasks) and ``gt_classes``.

    Returns:
        Tensor: a scalar (0 with a graph when there are no proposals).
    """
    if not isinstance(pred_mask_logits, Tensor) or pred_mask_logits.dim() != 4:
        raise ValueError(
            f"pred_mask_logits must be a Tensor[R, C, M, M], got {getattr(pred_mask_logits, 'shape', None)}"
        )
    cls_agnostic_mask = pred_mask_logits.size(1) == 1
    total_num_masks = pred_mask_logits.size(0)
    mask_side_len = pred_mask_logits.size(2)
    if pred_mask_logits.size(2) != pred_mask_logits.size(3):
        raise ValueError(f"pred_mask_logits must be square masks, got {list(pred_mask_logits.shape)}")

    gt_classes = []
    gt_masks = []
    for i, instances_per_image in enumerate(instances):
        if len(instances_per_image) == 0:
            continue
        if not instances_per_image.has("gt_masks"):
            raise ValueError(
                f"instances[{i}] has no field 'gt_masks', which the mask head needs for its loss "
                f"(fields: {sorted(instances_per_image.get_fields())})"
            )
        if not cls_agnostic_mask:
            gt_classes.append(instances_per_image.gt_classes.to(dtype=torch.int64))
        gt_masks_per_image = instances_per_image.gt_masks.crop_and_resize(
            instances_per_image.proposal_boxes.tensor, mask_side_len
        ).to(device=pred_mask_logits.device)
        gt_masks.append(gt_masks_per_image)

    if len(gt_masks) == 0:
        return pred_mask_logits.sum() * 0

    gt_masks_t = cat(gt_masks, dim=0)
    if gt_masks_t.shape[0] != total_num_masks:
        raise ValueError(
            f"pred_mask_logits has {total_num_masks} masks but instances have {gt_masks_t.shape[0]}"
        )
    if cls_agnostic_mask:
        pred_mask_logits = pred_mask_logits[:, 0]
    else:
        indices = torch.arange(total_num_masks, device=pred_mask_logits.device)
        gt_classes_t = cat(gt_classes, dim=0).to(pred_mask_logits.device)
        pred_mask_logits = pred_mask_logits[indices, gt_classes_t]
    gt_masks_t = gt_masks_t.to(dtype=pred_mask_logits.dtype)
    return F.binary_cross_entropy_with_logits(pred_mask_logits, gt_masks_t, reduction="mean")


def mask_rcnn_inference(pred_mask_logits: Tensor, pred_instances: list[Instances]) -> None:
    """Set ``pred_masks`` (Tensor[Di, 1, M, M], sigmoid probabilities of the predicted class) on each image's
    instances, in place.

    Args:
        pred_mask_logits (Tensor[D, C, M, M]): C = K classes or 1 (class agnostic).
        pred_instances (list[Instances]): per image the detections (D in total) with ``pred_classes``.
    """
    cls_agnostic_mask = pred_mask_logits.size(1) == 1
    if cls_agnostic_mask:
        mask_probs_pred = pred_mask_logits.sigmoid()
    else:
        num_masks = pred_mask_logits.shape[0]
        class_pred = cat([i.pred_classes for i in pred_instances])
        indices = torch.arange(num_masks, device=class_pred.device)
        mask_probs_pred = pred_mask_logits[indices, class_pred][:, None].sigmoid()
    num_boxes_per_image = [i.__len__() for i in pred_instances]
    for prob, instances in zip(mask_probs_pred.split(num_boxes_per_image, dim=0), pred_instances):
        instances.pred_masks = prob


class BaseMaskRCNNHead(nn.Module):
    """Mask head base: ``layers(x)`` gives mask logits; training returns ``{"loss_mask": ...}``, inference
    sets ``pred_masks``.

    Args:
        loss_weight (float): multiplier of the mask loss.
        vis_period (int): kept for detectron2 compatibility (visualisation is not implemented; must be 0).
    """

    def __init__(self, *, loss_weight: float = 1.0, vis_period: int = 0) -> None:
        super().__init__()
        if vis_period != 0:
            raise ValueError(
                f"vis_period must be 0 (mask visualisation is not supported), got {vis_period!r}"
            )
        self.vis_period = vis_period
        self.loss_weight = float(loss_weight)

    def forward(self, x: Tensor, instances: list[Instances]) -> dict[str, Tensor] | list[Instances]:
        """Args: x (Tensor[R, C, H, W]): pooled mask features; instances: foreground proposals (training) or
        detections (inference). Returns: ``{"loss_mask": Tensor}`` in training, else ``instances``."""
        x = self.layers(x)
        if self.training:
            return {"loss_mask": mask_rcnn_loss(x, instances) * self.loss_weight}
        mask_rcnn_inference(x, instances)
        return instances

    def layers(self, x: Tensor) -> Tensor:
        """Mask logits from the pooled features."""
        raise NotImplementedError


@dataclass(frozen=True)
class MaskRCNNConvUpsampleHeadConfig:
    """Config of :class:`MaskRCNNConvUpsampleHead` (detectron2's ``MODEL.ROI_MASK_HEAD.*`` defaults).

    Attributes:
        num_classes: foreground classes (``MODEL.ROI_HEADS.NUM_CLASSES``).
        num_conv / conv_dim: 3x3 convs before the deconv, and their (and the deconv's) width.
        norm: normalisation of the convs.
        cls_agnostic_mask: predict one mask per region.
        loss_weight: mask loss weight.
    """

    num_classes: int = 80
    num_conv: int = 0
    conv_dim: int = 256
    norm: str = ""
    cls_agnostic_mask: bool = False
    loss_weight: float = 1.0

    @classmethod
    def base_rcnn_fpn(cls) -> MaskRCNNConvUpsampleHeadConfig:
        """Base-RCNN-FPN's mask head: 4 convs."""
        return cls(num_conv=4)


class MaskRCNNConvUpsampleHead(BaseMaskRCNNHead, nn.Sequential):
    """3x3 convs (``mask_fcn{k}``) + ReLU, a 2x2 stride-2 deconv (``deconv``) + ReLU and a 1x1 predictor
    (``predictor``), detectron2's state-dict names.

    Args:
        input_shape (ShapeSpec): pooled feature channels.
        num_classes (int): foreground classes K (predicts 1 mask when ``cls_agnostic``).
        conv_dims (list[int]): widths of the convs, the last one is the deconv's (so ``len - 1`` convs).
        conv_norm (str): normalisation of the convs.
        cls_agnostic (bool): one mask per region.
        loss_weight (float): mask loss weight.
    """

    config_class: ClassVar[type] = MaskRCNNConvUpsampleHeadConfig

    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dims: Sequence[int],
        conv_norm: Any = "",
        cls_agnostic: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(input_shape, ShapeSpec) or input_shape.channels is None:
            raise TypeError(f"input_shape must be a ShapeSpec with channels, got {input_shape!r}")
        conv_dims = [int(c) for c in as_tuple(conv_dims, "conv_dims")]
        if len(conv_dims) < 1 or any(c <= 0 for c in conv_dims):
            raise ValueError(f"conv_dims must be a non-empty list of positive ints, got {conv_dims}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        num_out = 1 if cls_agnostic else num_classes
        self.conv_norm_relus: list[nn.Module] = []
        cur_channels = input_shape.channels
        for k, conv_dim in enumerate(conv_dims[:-1]):
            conv = Conv2d(
                cur_channels,
                conv_dim,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=not conv_norm,
                norm=get_norm(conv_norm, conv_dim),
                activation=nn.ReLU(),
            )
            self.add_module(f"mask_fcn{k + 1}", conv)
            self.conv_norm_relus.append(conv)
            cur_channels = conv_dim
        self.deconv = ConvTranspose2d(cur_channels, conv_dims[-1], kernel_size=2, stride=2, padding=0)
        self.add_module("deconv_relu", nn.ReLU())
        cur_channels = conv_dims[-1]
        self.predictor = Conv2d(cur_channels, num_out, kernel_size=1, stride=1, padding=0)
        for layer in [*self.conv_norm_relus, self.deconv]:
            c2_msra_fill(layer)
        nn.init.normal_(self.predictor.weight, std=0.001)
        if self.predictor.bias is not None:
            nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(
        cls, cfg: MaskRCNNConvUpsampleHeadConfig | None, input_shape: ShapeSpec
    ) -> dict[str, Any]:
        """Constructor kwargs: ``num_conv`` convs and a deconv, all ``conv_dim`` wide."""
        cfg = cfg if cfg is not None else MaskRCNNConvUpsampleHeadConfig()
        return {
            "input_shape": input_shape,
            "num_classes": cfg.num_classes,
            "conv_dims": [cfg.conv_dim] * (cfg.num_conv + 1),
            "conv_norm": cfg.norm,
            "cls_agnostic": cfg.cls_agnostic_mask,
            "loss_weight": cfg.loss_weight,
        }

    def layers(self, x: Tensor) -> Tensor:
        for layer in self:
            x = layer(x)
        return x
